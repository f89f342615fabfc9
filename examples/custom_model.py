"""A new multi-task model in one file: the ``MultiTaskModel`` contract and one decorator.

    import examples.custom_model                   # registers "ExampleNet"
    cfg.MODEL = "ExampleNet"                        # a config naming it builds it
    net = lib.models.model_from_config(cfg)         # ... as every command and the study do

Nothing in ``lib`` is edited: ``register_model`` makes it buildable by name (configs) and
rebuildable from a checkpoint's or artifact's ``architecture()`` record, and the contract's
three methods (``shared_modules``, ``task_modules``, ``forward``) are all CUT, its baselines,
masks, fine-tuning and export need. ``tests/test_dataset_registry.py`` takes it through
``prune`` and a study (docs/ARCHITECTURE.md, "Adding a model").

From the command line (and the study's workers, which inherit the variable), name the file in
``CUT_PLUGINS`` and select the model on any config that has a ``MODEL``
(``tests/test_plugins.py`` runs these):

    export CUT_PLUGINS=examples/custom_model.py
    python -m lib synthetic --config nyuv2_mtan --profile tiny --out data/mtan
    python -m lib train --config nyuv2_mtan --profile tiny --set MODEL=ExampleNet \
        --data-root data/mtan --out runs/base
    python -m lib prune --checkpoint runs/base/base_model.pth --set MODEL=ExampleNet \
        --tasks seg depth --sparsity 50 --data-root data/mtan --out runs/pruned
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from lib.models import MultiTaskModel, register_model


@register_model
class ExampleNet(MultiTaskModel):
    """A two-convolution trunk shared by every task and one dense head per task
    (``num_classes[i]`` output channels for ``tasks[i]``), at the input's resolution."""

    def __init__(self, tasks=("mask", "height"), num_classes=(2, 1), width=8):
        super().__init__()
        if len(tasks) != len(num_classes):
            raise ValueError(f"ExampleNet needs one class count per task, got tasks "
                             f"{list(tasks)} and num_classes {list(num_classes)}")
        self.tasks = list(tasks)
        self.num_classes, self.width = [int(c) for c in num_classes], int(width)
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.heads = nn.ModuleDict({
            task: nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(width, classes, 1))
            for task, classes in zip(self.tasks, self.num_classes)})

    @classmethod
    def from_config(cls, cfg) -> "ExampleNet":
        """The network of ``cfg``: its ``TASKS``, ``TASKS_NUM_CLASS`` and ``WIDTH``."""
        return cls(cfg.TASKS, cfg.TASKS_NUM_CLASS, getattr(cfg, "WIDTH", 8))

    def shared_modules(self):
        return {"trunk": self.trunk}

    def task_modules(self, task):
        return {f"heads.{task}": self.heads[task]}

    def on_select(self, tasks):
        """Keep the class counts aligned with the kept tasks (for :meth:`architecture`)."""
        counts = dict(zip(self.tasks, self.num_classes))
        self.num_classes = [counts[t] for t in tasks]

    def forward(self, x):
        features = self.trunk(x)
        return [F.interpolate(self.heads[t](features), size=x.shape[-2:], mode="bilinear",
                              align_corners=False) for t in self.tasks]

    def architecture(self):
        return {"model": "ExampleNet", "tasks": list(self.tasks),
                "num_classes": list(self.num_classes), "width": self.width}
