"""VGG-16 for multi-domain classification: shared convolutions, per-domain BatchNorm and head.

The min-max framework's CIFAR-100 network (``create_network.py``'s ``MTLVGG16``): the 13
convolutions of VGG-16 are shared by all domains; every convolution is followed by a
*task-conditional* BatchNorm (one ``BatchNorm2d`` per domain) and each domain has its own
5-way linear classifier on globally average-pooled features. Domain ``k`` (slot ``k - 1``)
owns ``network_block.{i}.bn_list.{k-1}`` for every conditional BN ``i`` and
``classifier.{k-1}``. State-dict keys are the reference's.

The reference's ``forward(x, task_id)`` is :meth:`MultiDomainVGG16.forward_task`; ``forward(x)``
runs ``x`` through every domain's path (the contract's list of outputs; what exports use).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import TaskSlots, check_width, scaled
from .contract import MultiTaskModel, register_model

# VGG-16's convolution widths; "M" is a 2x2 max pool. The reference drops the last pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512)
NUM_DOMAINS = 20
CLASSES_PER_DOMAIN = 5


class ConditionalBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per domain slot (``None`` for slots this network does not hold)."""

    def __init__(self, num_features: int, task_ids: Sequence[int]):
        super().__init__()
        self.num_features = num_features
        present = set(task_ids)
        self.bn_list = nn.ModuleList([nn.BatchNorm2d(num_features) if k in present else None
                                      for k in range(1, max(task_ids) + 1)])

    def forward(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        return self.bn_list[slot](x)


@register_model
class MultiDomainVGG16(TaskSlots, MultiTaskModel):
    """VGG-16 trunk with task-conditional BatchNorm and one linear head per domain.

    Args:
        tasks_num_class: classes per domain (reference: 20 domains of 5 classes).
        tasks: domain names (default ``class_0 .. class_{n-1}``, the reference's task names).
        width_mult: channel multiplier (1.0 = VGG-16's 64 ... 512).
        task_ids: 1-based slot ids of the domains present (default ``1..n``).
    """

    def __init__(self, tasks_num_class: Sequence[int] = (CLASSES_PER_DOMAIN,) * NUM_DOMAINS,
                 tasks: Sequence[str] | None = None, width_mult: float = 1.0,
                 task_ids: Sequence[int] | None = None):
        super().__init__()
        if tasks is None:
            ids = range(1, len(tasks_num_class) + 1) if task_ids is None else task_ids
            tasks = [f"class_{k - 1}" for k in ids]
        self._init_tasks(tasks_num_class, tasks, task_ids)
        self.width_mult = check_width(width_mult)
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = scaled(item, self.width_mult)
            layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1),
                       ConditionalBatchNorm2d(cout, self.task_ids), nn.ReLU(inplace=True)]
            cin = cout
        self.network_block = nn.Sequential(*layers)
        num_class = dict(zip(self.task_ids, self.tasks_num_class))
        self.classifier = nn.ModuleList(
            [nn.Sequential(nn.Linear(cin, num_class[k])) if k in num_class else None
             for k in range(1, max(self.task_ids) + 1)])

    # -- contract -----------------------------------------------------------------------------
    def _conditional_bns(self) -> list[tuple[str, ConditionalBatchNorm2d]]:
        return [(f"network_block.{i}", m) for i, m in enumerate(self.network_block)
                if isinstance(m, ConditionalBatchNorm2d)]

    def shared_modules(self) -> dict[str, nn.Module]:
        return {f"network_block.{i}": m for i, m in enumerate(self.network_block)
                if isinstance(m, nn.Conv2d)}

    def task_modules(self, task: str) -> dict[str, nn.Module]:
        slot = self.task_id(task) - 1
        out: dict[str, nn.Module] = {f"{name}.bn_list.{slot}": cbn.bn_list[slot]
                                     for name, cbn in self._conditional_bns()}
        out[f"classifier.{slot}"] = self.classifier[slot]
        return out

    def architecture(self) -> dict:
        return {"model": "MultiDomainVGG16", **self._task_record(),
                "width_mult": self.width_mult}

    @classmethod
    def from_config(cls, cfg) -> "MultiDomainVGG16":
        return cls(cfg.TASKS_NUM_CLASS, cfg.TASKS, getattr(cfg, "WIDTH_MULT", 1.0))

    # -- forward ------------------------------------------------------------------------------
    def forward_task(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Logits of domain ``task`` for images ``x`` (N, 3, H, W) -> (N, classes)."""
        slot = self.task_id(task) - 1
        for layer in self.network_block:
            x = layer(x, slot) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return self.classifier[slot](F.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_task(x, task) for task in self.tasks]
