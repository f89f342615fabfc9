"""DeepLabv3 multi-task networks on a dilated ResNet-50: the split and the MTAN variant.

The two networks of the min-max framework's ``create_network.py`` (after Auto-Lambda):

- :class:`SplitDeepLabv3` (the reference's ``MTLDeepLabv3``): a shared dilated ResNet-50 and
  one DeepLabv3 head (ASPP at rates 12/24/36) per task;
- :class:`MTANDeepLabv3`: the same trunk, where each task gates the last bottleneck of every
  stage with its own attention mask (MTAN), fed through shared bottleneck encoders.

The trunk is torchvision's ResNet-50 layout built from its ``Bottleneck`` (stride on the 3x3
conv) with layers 3 and 4 dilated (2 and 4) instead of strided: output stride 8. Weights are
initialised as torchvision initialises an untrained ResNet; nothing is downloaded. State-dict
keys are the reference's (``shared_conv.0``, ``shared_layer3.2.conv2``, ``decoders.1.0.convs.3``,
``encoder_att_2.0.3``, ...), so its checkpoints load strictly. Every head's output is
interpolated to the input size (bilinear, corners aligned); normals are unit-normalised.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from .common import (TaskSlots, attention_layer, check_width, finish_output, scaled,
                     slot_list)
from .contract import MultiTaskModel, register_model

RESNET50_LAYERS = (3, 4, 6, 3)
STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 1, 1)
# Dilation of each stage's first block and of its other blocks (output stride 8).
STAGE_DILATIONS = ((1, 1), (1, 1), (1, 2), (2, 4))
ASPP_RATES = (12, 24, 36)
ASPP_CHANNELS = 256
EXPANSION = TorchvisionBottleneck.expansion


def bottleneck(inplanes: int, planes: int, stride: int = 1, dilation: int = 1
               ) -> TorchvisionBottleneck:
    """A torchvision bottleneck with a projection shortcut when its shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * EXPANSION, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * EXPANSION))
    return TorchvisionBottleneck(inplanes, planes, stride, downsample, dilation=dilation)


def dilated_resnet(width_mult: float = 1.0, layers: Sequence[int] = RESNET50_LAYERS
                   ) -> tuple[nn.Sequential, list[nn.Sequential]]:
    """The stem (conv 7x7/2, BN, ReLU, max pool 3x3/2) and the four stages of a dilated ResNet,
    initialised as torchvision's (Kaiming normal fan-out convs, BN weight 1 bias 0)."""
    stem_width = scaled(64, width_mult)
    stem = nn.Sequential(nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    stages, inplanes = [], stem_width
    for planes, num_blocks, stride, (first, rest) in zip(STAGE_PLANES, layers, STAGE_STRIDES,
                                                         STAGE_DILATIONS):
        planes = scaled(planes, width_mult)
        blocks = [bottleneck(inplanes, planes, stride, first)]
        inplanes = planes * EXPANSION
        blocks += [bottleneck(inplanes, planes, 1, rest) for _ in range(1, num_blocks)]
        stages.append(nn.Sequential(*blocks))
    for module in [stem, *stages]:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return stem, stages


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel_size // 2)
    return [nn.Conv2d(cin, cout, kernel_size, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool -> 1x1 conv -> BN -> ReLU -> upsample."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-level branch,
    concatenated and projected (no dropout, as the reference)."""

    def __init__(self, cin: int, rates: Sequence[int] = ASPP_RATES, cout: int = ASPP_CHANNELS):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Sequential(*conv_bn_relu(cin, cout))]
            + [nn.Sequential(*conv_bn_relu(cin, cout, 3, rate)) for rate in rates]
            + [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(*conv_bn_relu(len(self.convs) * cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv to ``num_class`` channels."""

    def __init__(self, cin: int, num_class: int, width: int = ASPP_CHANNELS):
        super().__init__(ASPP(cin, ASPP_RATES, width), *conv_bn_relu(width, width, 3),
                         nn.Conv2d(width, num_class, 1))


class _DeepLabTasks(TaskSlots, MultiTaskModel):
    """What both variants share: task slots, heads, output resizing, the record."""

    def _init_heads(self, width_mult: float, out_channels: int) -> None:
        num_class = dict(zip(self.task_ids, self.tasks_num_class))
        width = scaled(ASPP_CHANNELS, width_mult)
        self.decoders = slot_list(self.task_ids,
                                  lambda k: DeepLabHead(out_channels, num_class[k], width))

    def architecture(self) -> dict:
        return {"model": type(self).__name__, **self._task_record(),
                "width_mult": self.width_mult}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.TASKS_NUM_CLASS, cfg.TASKS, getattr(cfg, "WIDTH_MULT", 1.0))

    def _head(self, task: str, k: int, feats: torch.Tensor, size) -> torch.Tensor:
        out = F.interpolate(self.decoders[k - 1](feats), size=size, mode="bilinear",
                            align_corners=True)
        return finish_output(task, out)


@register_model
class SplitDeepLabv3(_DeepLabTasks):
    """Shared dilated ResNet-50 + one DeepLabv3 head per task (the reference's MTLDeepLabv3).

    Args:
        tasks_num_class: output channels per task (reference NYUv2: 13, 1, 3).
        tasks: task names aligned with ``tasks_num_class``.
        width_mult: channel multiplier for trunk and heads (1.0 = ResNet-50, 256-wide ASPP).
        task_ids: 1-based slot ids of the tasks present; task ``k``'s head is ``decoders.{k-1}``.
    """

    def __init__(self, tasks_num_class: Sequence[int] = (13, 1, 3),
                 tasks: Sequence[str] | None = ("seg", "depth", "normal"),
                 width_mult: float = 1.0, task_ids: Sequence[int] | None = None):
        super().__init__()
        self._init_tasks(tasks_num_class, tasks, task_ids)
        self.width_mult = check_width(width_mult)
        stem, stages = dilated_resnet(self.width_mult)
        self.shared_conv = stem
        self.shared_layer1, self.shared_layer2, self.shared_layer3, self.shared_layer4 = stages
        self._init_heads(self.width_mult, scaled(STAGE_PLANES[-1], self.width_mult) * EXPANSION)

    def shared_modules(self) -> dict[str, nn.Module]:
        names = ("shared_conv", "shared_layer1", "shared_layer2", "shared_layer3",
                 "shared_layer4")
        return {name: getattr(self, name) for name in names}

    def task_modules(self, task: str) -> dict[str, nn.Module]:
        k = self.task_id(task)
        return {f"decoders.{k - 1}": self.decoders[k - 1]}

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        size = img.shape[-2:]
        x = self.shared_conv(img)
        for stage in (self.shared_layer1, self.shared_layer2, self.shared_layer3,
                      self.shared_layer4):
            x = stage(x)
        return [self._head(task, k, x, size) for task, k in zip(self.tasks, self.task_ids)]


@register_model
class MTANDeepLabv3(_DeepLabTasks):
    """Dilated ResNet-50 whose stages' last bottlenecks each task gates with its own attention
    mask; shared bottleneck encoders carry the gated features from stage to stage.

    Task ``k`` owns ``encoder_att_{1..4}.{k-1}`` and ``decoders.{k-1}``; everything else is
    shared (``encoder_block_att_{1,2,3}`` included). Arguments as :class:`SplitDeepLabv3`.
    The pooling between the first and second attention stage rounds up (``ceil_mode``), so any
    input size works; for the sizes the reference accepts (stride-4 features of even size, e.g.
    288x384) it is the reference's floor pooling.
    """

    def __init__(self, tasks_num_class: Sequence[int] = (13, 1, 3),
                 tasks: Sequence[str] | None = ("seg", "depth", "normal"),
                 width_mult: float = 1.0, task_ids: Sequence[int] | None = None):
        super().__init__()
        self._init_tasks(tasks_num_class, tasks, task_ids)
        self.width_mult = check_width(width_mult)
        stem, stages = dilated_resnet(self.width_mult)
        self.shared_conv = stem
        for i, stage in enumerate(stages, start=1):
            setattr(self, f"shared_layer{i}_b", stage[:-1])
            setattr(self, f"shared_layer{i}_t", stage[-1])
        ch = [scaled(p, self.width_mult) * EXPANSION for p in STAGE_PLANES]

        # Stage 1's mask sees the stage's features; later masks also see the previous gated ones.
        self.encoder_att_1 = slot_list(self.task_ids,
                                       lambda k: attention_layer(ch[0], ch[0] // 4, ch[0]))
        for i in (2, 3, 4):
            c = ch[i - 1]
            setattr(self, f"encoder_att_{i}",
                    slot_list(self.task_ids, lambda k, c=c: attention_layer(2 * c, c // 4, c)))
        for i in (1, 2, 3):
            setattr(self, f"encoder_block_att_{i}", bottleneck(ch[i - 1], ch[i] // EXPANSION))
        self.down_sampling = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self._init_heads(self.width_mult, ch[-1])

    def shared_modules(self) -> dict[str, nn.Module]:
        names = ["shared_conv"] + [f"shared_layer{i}_{p}" for i in (1, 2, 3, 4) for p in "bt"] \
            + [f"encoder_block_att_{i}" for i in (1, 2, 3)]
        return {name: getattr(self, name) for name in names}

    def task_modules(self, task: str) -> dict[str, nn.Module]:
        k = self.task_id(task)
        out = {f"encoder_att_{i}.{k - 1}": getattr(self, f"encoder_att_{i}")[k - 1]
               for i in (1, 2, 3, 4)}
        out[f"decoders.{k - 1}"] = self.decoders[k - 1]
        return out

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        size = img.shape[-2:]
        x = self.shared_conv(img)
        body, last = [], []   # each stage's input to its last block, and that block's output
        for i in (1, 2, 3, 4):
            x = getattr(self, f"shared_layer{i}_b")(x)
            body.append(x)
            x = getattr(self, f"shared_layer{i}_t")(x)
            last.append(x)
        outputs = []
        for task, k in zip(self.tasks, self.task_ids):
            gated = None
            for i in (1, 2, 3, 4):
                gate = getattr(self, f"encoder_att_{i}")[k - 1]
                gate_in = body[0] if i == 1 else torch.cat((body[i - 1], gated), dim=1)
                gated = gate(gate_in) * last[i - 1]
                if i == 1:
                    gated = self.down_sampling(self.encoder_block_att_1(gated))
                elif i < 4:
                    gated = getattr(self, f"encoder_block_att_{i}")(gated)
            outputs.append(self._head(task, k, gated, size))
        return outputs
