"""Per-task losses and the weighted multi-task loss, for any model.

:class:`TaskLosses` is the protocol every part of ``lib`` uses (pruning scores, training,
validation): ``task_loss(preds, batch, task)`` one task's loss unweighted, ``per_task``,
``weighted``, ``loss(preds, batch)`` the weighted total, ``restricted_to(tasks)``, ``.tasks``.
Build one from plain functions for your own model::

    criterion = TaskLosses({"cls": lambda pred, batch: F.cross_entropy(pred, batch["label"]),
                            "dense": lambda pred, batch: F.l1_loss(pred, batch["target"])},
                           weights={"cls": 1.0, "dense": 0.5})

:class:`SceneNetLoss` is the instance for the reference datasets' tasks: its per-task losses
come from the task table (:mod:`lib.tasks`), with the reference's definitions. ``preds`` may be
a list aligned with ``tasks`` (what a network's ``forward`` returns) or a ``{task: tensor}``
dict.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.tasks import (DEPTH_VALID_MIN, SEG_IGNORE_INDEX, TASKS, check_dataset, check_tasks,
                       load_seg_prior)

__all__ = ["TaskLosses", "SceneNetLoss", "load_seg_prior", "DEPTH_VALID_MIN",
           "SEG_IGNORE_INDEX", "TARGET_KEYS"]

# Which batch key holds the ground truth of each task of the table (``sn`` -> ``normal``).
TARGET_KEYS = {name: spec.target_key for name, spec in TASKS.items()}

TaskLossFn = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


class TaskLosses(nn.Module):
    """Weighted multi-task loss ``sum_t weights[t] * L_t`` over ``{task: fn(pred, batch)}``.

    Args:
        losses: ``{task: fn(pred, batch) -> scalar tensor}``, in the network's output order.
        weights: one weight per task (a sequence aligned with ``losses`` or a ``{task: w}``
            mapping); default 1 each. ``lambdas`` lists them in task order.
    """

    def __init__(self, losses: Mapping[str, TaskLossFn],
                 weights: Sequence[float] | Mapping[str, float] | None = None):
        super().__init__()
        self.tasks = list(losses)
        self.losses = dict(losses)
        if weights is None:
            weights = [1.0] * len(self.tasks)
        elif isinstance(weights, Mapping):
            missing = [t for t in self.tasks if t not in weights]
            if missing or len(weights) != len(self.tasks):
                raise ValueError(f"weights {dict(weights)} must have one weight per task "
                                 f"{self.tasks}")
            weights = [weights[t] for t in self.tasks]
        if len(weights) != len(self.tasks):
            raise ValueError(f"weights {list(weights)} must have one weight per task {self.tasks}")
        self.lambdas = [float(x) for x in weights]

    def _weights_for(self, tasks: Sequence[str]) -> list[float]:
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"task(s) {missing} not in this loss's tasks {self.tasks}")
        return [self.lambdas[self.tasks.index(t)] for t in tasks]

    def restricted_to(self, tasks: Sequence[str]) -> "TaskLosses":
        """The same loss over a subset of tasks (e.g. the selected tasks of a compact network)."""
        weights = self._weights_for(tasks)
        return TaskLosses({t: self.losses[t] for t in tasks}, weights)

    def _pred(self, preds, task: str) -> torch.Tensor:
        if isinstance(preds, Mapping):
            if task not in preds:
                raise KeyError(f"predictions have no task {task!r}; got {sorted(preds)}")
            return preds[task]
        if len(preds) != len(self.tasks):
            raise ValueError(f"got {len(preds)} predictions for tasks {self.tasks}")
        return preds[self.tasks.index(task)]

    def task_loss(self, preds, batch: Mapping[str, Any], task: str) -> torch.Tensor:
        """Task ``task``'s own loss, unweighted (the loss used for per-task pruning scores)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of this loss's tasks {self.tasks}")
        return self.losses[task](self._pred(preds, task), batch)

    def per_task(self, preds, batch) -> dict[str, torch.Tensor]:
        """``{task: unweighted loss}`` for every task."""
        return {t: self.task_loss(preds, batch, t) for t in self.tasks}

    def weighted(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_t weights[t] * losses[t]``."""
        return sum(lam * losses[t] for t, lam in zip(self.tasks, self.lambdas))

    def forward(self, preds, batch) -> torch.Tensor:
        return self.weighted(self.per_task(preds, batch))


class SceneNetLoss(TaskLosses):
    """The reference's weighted multi-task loss over the task table's losses.

    Args:
        dataset: ``"nyuv2_3"``, ``"cityscapes"`` or ``"taskonomy"`` (decides ignore values/masks).
        tasks: task names of :data:`lib.tasks.TASKS`, in the order of the network's outputs.
        lambdas: one weight per task.
        seg_class_weight: optional per-class CE weights (Taskonomy's ``semseg_prior_factor``).
    """

    def __init__(self, dataset: str, tasks: Sequence[str], lambdas: Sequence[float],
                 seg_class_weight: torch.Tensor | np.ndarray | None = None):
        check_dataset(dataset)
        check_tasks(tasks)
        if len(lambdas) != len(tasks):
            raise ValueError(f"lambdas {list(lambdas)} must have one weight per task {list(tasks)}")
        super().__init__({t: functools.partial(self._table_loss, t) for t in tasks}, lambdas)
        self.dataset = dataset
        weight = None if seg_class_weight is None else torch.as_tensor(
            seg_class_weight, dtype=torch.float32).detach().clone()
        self.register_buffer("seg_class_weight", weight, persistent=False)

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str] | None = None) -> "SceneNetLoss":
        """Loss for ``cfg`` (restricted to ``tasks`` if given); reads Taskonomy's class prior."""
        weight = None
        if cfg.DATASET == "taskonomy" and "seg" in cfg.TASKS:
            weight = load_seg_prior(cfg.DATA_ROOT)
        loss = cls(cfg.DATASET, cfg.TASKS, cfg.LAMBDAS, weight)
        return loss if tasks is None else loss.restricted_to(tasks)

    def restricted_to(self, tasks: Sequence[str]) -> "SceneNetLoss":
        return SceneNetLoss(self.dataset, tasks, self._weights_for(tasks), self.seg_class_weight)

    def _table_loss(self, task: str, pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        spec = TASKS[task]
        if spec.target_key not in batch:
            raise KeyError(f"batch has no key {spec.target_key!r} for task {task!r}; keys: "
                           f"{sorted(batch)}")
        gt = batch[spec.target_key].to(pred.device)
        return spec.loss(pred, gt, batch, self.dataset, self.seg_class_weight)
