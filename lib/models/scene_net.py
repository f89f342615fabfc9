"""SceneNet: DeepLab dilated ResNet backbone with one 4-branch ASPP head per task.

Module names and therefore state-dict keys are the reference's (``backbone.blocks.{s}.{b}.conv1``,
``backbone.ds.{s}.0``, ``task{t}_fc1_c{k}.conv{1,2,3}``), so checkpoints of the original code load
strictly. ``width_mult`` < 1 narrows every layer for CPU runs; 1.0 is the reference network.

Backbones: ResNet-18/34 of :class:`BasicBlock` and ResNet-50/101/152 of :class:`Bottleneck`
(the reference's: stride on the first 1x1 conv, BatchNorm affine parameters frozen). The
bottleneck backbones end in 2048 channels, so their heads read 2048 instead of 512.

SceneNet is a :class:`~lib.models.contract.MultiTaskModel`: the backbone is shared, task ``t``'s
modules are its four ASPP branches. A compact network (``net.select(tasks)``) is a SceneNet whose
``task_ids`` is a subset of the original 1-based ids: head ``task3_*`` keeps its name, and
``forward`` returns the outputs in the order of ``task_ids`` (aligned with ``tasks``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import scaled as _scaled
from .contract import MultiTaskModel, register_model

BACKBONE_LAYOUTS = {"ResNet18": [2, 2, 2, 2], "ResNet34": [3, 4, 6, 3],
                    "ResNet50": [3, 4, 6, 3], "ResNet101": [3, 4, 23, 3],
                    "ResNet152": [3, 8, 36, 3]}
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)
ASPP_RATES = (6, 12, 18, 24)
HEAD_HIDDEN = 1024


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN. The residual sum and final ReLU live in the backbone."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(nn.Module):
    """1x1 conv (stride) -> BN -> ReLU -> dilated 3x3 -> BN -> ReLU -> 1x1 conv (4x) -> BN.

    As in the reference, the BatchNorm affine parameters do not train (``requires_grad`` off;
    running statistics still update in train mode). The residual sum and final ReLU live in
    the backbone.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        for bn in (self.bn1, self.bn2, self.bn3):
            bn.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


BACKBONE_BLOCKS: dict[str, type[nn.Module]] = {
    "ResNet18": BasicBlock, "ResNet34": BasicBlock,
    "ResNet50": Bottleneck, "ResNet101": Bottleneck, "ResNet152": Bottleneck}


class DeepLabResNetBackbone(nn.Module):
    """Dilated ResNet of ``block`` (BasicBlock or Bottleneck), output stride 8."""

    def __init__(self, layers: Sequence[int], width_mult: float = 1.0,
                 block: type[nn.Module] = BasicBlock):
        super().__init__()
        stem = _scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer_config = list(layers)

        inplanes = stem
        blocks, shortcuts = [], []
        for width, num_blocks, stride, dilation in zip(STAGE_WIDTHS, layers, STAGE_STRIDES,
                                                       STAGE_DILATIONS):
            planes = _scaled(width, width_mult)
            out = planes * block.expansion
            needs_shortcut = stride != 1 or inplanes != out or dilation in (2, 4)
            shortcuts.append(nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out)) if needs_shortcut else None)
            stage = [block(inplanes, planes, stride, dilation)]
            stage += [block(out, planes, 1, dilation) for _ in range(1, num_blocks)]
            blocks.append(nn.ModuleList(stage))
            inplanes = out
        self.blocks = nn.ModuleList(blocks)
        self.ds = nn.ModuleList(shortcuts)  # ds[0] is None for BasicBlocks, as in the reference

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        """Channels of the features the heads read (fewer after structured pruning): the last
        block's last BatchNorm's."""
        last = [m for m in self.blocks[-1][-1].modules() if isinstance(m, nn.BatchNorm2d)][-1]
        return last.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for segment, stage in enumerate(self.blocks):
            for b, block in enumerate(stage):
                shortcut = self.ds[segment](x) if b == 0 and self.ds[segment] is not None else x
                x = F.relu(shortcut + block(x))
        return x


class ClassificationModule(nn.Module):
    """One ASPP branch: dilated conv3x3 -> ReLU -> Dropout -> 1x1 -> ReLU -> Dropout -> 1x1."""

    def __init__(self, inplanes: int, num_classes: int, rate: int, hidden: int = HEAD_HIDDEN):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, hidden, kernel_size=3, stride=1, padding=rate,
                               dilation=rate, bias=True)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.conv3 = nn.Conv2d(hidden, num_classes, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.relu(self.conv1(x)))
        x = self.dropout(self.relu(self.conv2(x)))
        return self.conv3(x)


def head_branch_names(task_id: int) -> list[str]:
    """Attribute names of the four ASPP branches of 1-based task ``task_id``."""
    return [f"task{task_id}_fc1_c{k}" for k in range(len(ASPP_RATES))]


@register_model
class SceneNet(MultiTaskModel):
    """Shared dilated-ResNet backbone + one ASPP head per task; ``forward`` returns a list.

    Args:
        tasks_num_class: output channels per head, in the order of ``task_ids``.
        backbone_name: a key of :data:`BACKBONE_LAYOUTS` (``"ResNet18"`` ... ``"ResNet152"``).
        width_mult: channel multiplier for backbone and heads (1.0 = reference).
        task_ids: 1-based ids of the heads present (default ``1..len(tasks_num_class)``).
        tasks: task names aligned with ``task_ids`` (e.g. ``["seg", "sn", "depth"]``); default
            ``task{id}``.
    """

    def __init__(self, tasks_num_class: Sequence[int], backbone_name: str = "ResNet34",
                 width_mult: float = 1.0, task_ids: Sequence[int] | None = None,
                 tasks: Sequence[str] | None = None):
        super().__init__()
        if backbone_name not in BACKBONE_LAYOUTS:
            raise ValueError(f"unknown backbone {backbone_name!r}; expected one of "
                             f"{sorted(BACKBONE_LAYOUTS)}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        task_ids = list(range(1, len(tasks_num_class) + 1)) if task_ids is None else list(task_ids)
        if len(task_ids) != len(tasks_num_class) or len(set(task_ids)) != len(task_ids):
            raise ValueError(f"task_ids {task_ids} must be distinct and match tasks_num_class "
                             f"{list(tasks_num_class)}")
        if tasks is not None and len(tasks) != len(task_ids):
            raise ValueError(f"tasks {list(tasks)} must align with tasks_num_class "
                             f"{list(tasks_num_class)}")
        self.backbone_name = backbone_name
        self.width_mult = float(width_mult)
        self.tasks_num_class = list(tasks_num_class)
        self.task_ids = task_ids
        self.tasks = list(tasks) if tasks is not None else [f"task{t}" for t in task_ids]
        self.backbone = DeepLabResNetBackbone(BACKBONE_LAYOUTS[backbone_name], width_mult,
                                              BACKBONE_BLOCKS[backbone_name])
        hidden = _scaled(HEAD_HIDDEN, width_mult)
        for task_id, num_class in zip(task_ids, tasks_num_class):
            for name, rate in zip(head_branch_names(task_id), ASPP_RATES):
                setattr(self, name, ClassificationModule(self.backbone.out_channels, num_class,
                                                         rate, hidden))

    @classmethod
    def from_config(cls, cfg) -> "SceneNet":
        """Build the full multi-task network a config describes (a SceneNet config: one
        without ``MODEL`` or with ``MODEL = "SceneNet"``)."""
        model = getattr(cfg, "MODEL", "SceneNet")
        if model != "SceneNet":
            raise ValueError(f"config {getattr(cfg, 'CONFIG_NAME', '?')!r} describes a {model}, "
                             f"not a SceneNet; build it with "
                             f"lib.models.MODEL_REGISTRY[{model!r}].from_config(cfg)")
        return cls(cfg.TASKS_NUM_CLASS, cfg.BACKBONE_NAME, getattr(cfg, "WIDTH_MULT", 1.0),
                   tasks=cfg.TASKS)

    @property
    def num_tasks(self) -> int:
        return len(self.task_ids)

    def architecture(self) -> dict:
        """Everything needed to rebuild an identical (unweighted) network."""
        return {"model": "SceneNet", "tasks_num_class": list(self.tasks_num_class),
                "backbone_name": self.backbone_name, "width_mult": self.width_mult,
                "task_ids": list(self.task_ids), "tasks": list(self.tasks)}

    def shared_modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}

    def task_modules(self, task: str) -> dict[str, nn.Module]:
        task_id = self.task_id(task)
        return {name: getattr(self, name) for name in head_branch_names(task_id)}

    def task_id(self, task: str) -> int:
        """The 1-based head id of task ``task``."""
        if task not in self.tasks:
            raise KeyError(f"this network has no task {task!r}; tasks: {self.tasks}")
        return self.task_ids[self.tasks.index(task)]

    def on_select(self, tasks: list[str]) -> None:
        index = [self.tasks.index(t) for t in tasks]
        self.task_ids = [self.task_ids[i] for i in index]
        self.tasks_num_class = [self.tasks_num_class[i] for i in index]
        # Register the kept heads in the selected order, as a freshly built compact net would.
        heads = [name for t in self.task_ids for name in head_branch_names(t)]
        order = [n for n in self._modules if n not in heads] + heads
        self._modules = type(self._modules)((n, self._modules[n]) for n in order)

    def head(self, task_id: int) -> list[nn.Module]:
        """The four ASPP branches of 1-based task ``task_id``."""
        if task_id not in self.task_ids:
            raise KeyError(f"this network has no head task{task_id}; heads: {self.task_ids}")
        return [getattr(self, name) for name in head_branch_names(task_id)]

    def forward_heads(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Apply every head to shared backbone features."""
        return [sum(branch(feats) for branch in self.head(t)) for t in self.task_ids]

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_heads(self.backbone(img))

    def forward_dict(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs keyed by task name."""
        return dict(zip(self.tasks, self(img)))
