"""Pieces the multi-task model families share: channel scaling, task slots, output conventions.

Task slots. A model built for ``n`` tasks keeps each task's own modules at a fixed position
(*slot*) of its per-task ``nn.ModuleList``s: task id ``k`` (1-based, as SceneNet's head ids)
lives at index ``k - 1``. A compact copy (``net.select(...)``) or a network built with a subset
of ``task_ids`` leaves ``None`` at the other indices, so every kept module keeps its
state-dict key (``decoders.2.…`` stays ``decoders.2.…``). :class:`TaskSlots` holds that
bookkeeping (``tasks``, ``tasks_num_class``, ``task_ids``) for the models in this package.

Outputs. Heads of surface-normal tasks (:data:`NORMAL_TASKS`) end in an L2 normalisation over
channels, as in the min-max / MTAN code; every other head returns raw scores (segmentation
logits, not log-probabilities).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# Task names whose outputs are unit vectors per pixel (the min-max code's "normal").
NORMAL_TASKS = ("normal", "sn")


def scaled(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded, at least 1 (``width_mult`` 1.0 is the reference)."""
    return max(1, int(round(channels * width_mult)))


def check_width(width_mult: float) -> float:
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return float(width_mult)


def unit_normals(output: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``output / ||output||_2`` over channels (``eps`` keeps an all-zero pixel finite)."""
    return F.normalize(output, p=2.0, dim=1, eps=eps)


def finish_output(task: str, output: torch.Tensor) -> torch.Tensor:
    """The head's last step for ``task``: unit normals for :data:`NORMAL_TASKS`, else as is."""
    return unit_normals(output) if task in NORMAL_TASKS else output


def attention_layer(cin: int, mid: int, cout: int) -> nn.Sequential:
    """MTAN's attention mask: 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> sigmoid, in (0, 1)."""
    return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid())


def slot_list(task_ids: Sequence[int], make: Callable[[int], nn.Module]) -> nn.ModuleList:
    """``ModuleList`` with ``make(k)`` at index ``k - 1`` for each id ``k``, ``None`` elsewhere."""
    present = set(task_ids)
    return nn.ModuleList([make(k) if k in present else None
                          for k in range(1, max(task_ids) + 1)])


class TaskSlots:
    """Task names, output channels and 1-based slot ids of a multi-task model (a mixin).

    ``_init_tasks`` validates and stores them (``_init_slots`` also the width multiplier);
    ``on_select`` (the contract's hook) keeps them aligned with a selection. The record
    ``architecture()`` and ``from_config(cfg)`` are the same for every model built this way:
    ``cls(tasks_num_class, tasks, width_mult, task_ids)``.
    """

    tasks: list[str]
    tasks_num_class: list[int]
    task_ids: list[int]

    def _init_tasks(self, tasks_num_class: Sequence[int], tasks: Sequence[str] | None,
                    task_ids: Sequence[int] | None) -> None:
        tasks_num_class = [int(c) for c in tasks_num_class]
        if not tasks_num_class or min(tasks_num_class) < 1:
            raise ValueError(f"tasks_num_class must be positive output channel counts, got "
                             f"{tasks_num_class}")
        ids = list(range(1, len(tasks_num_class) + 1)) if task_ids is None \
            else [int(k) for k in task_ids]
        if len(ids) != len(tasks_num_class) or len(set(ids)) != len(ids) or min(ids) < 1:
            raise ValueError(f"task_ids {ids} must be distinct ids >= 1, one per entry of "
                             f"tasks_num_class {tasks_num_class}")
        names = [f"task{k}" for k in ids] if tasks is None else [str(t) for t in tasks]
        if len(names) != len(ids) or len(set(names)) != len(names):
            raise ValueError(f"tasks {names} must be distinct names, one per entry of "
                             f"tasks_num_class {tasks_num_class}")
        self.tasks, self.tasks_num_class, self.task_ids = names, tasks_num_class, ids

    def _init_slots(self, tasks_num_class: Sequence[int], tasks: Sequence[str] | None,
                    task_ids: Sequence[int] | None, width_mult: float) -> None:
        self._init_tasks(tasks_num_class, tasks, task_ids)
        self.width_mult = check_width(width_mult)

    def architecture(self) -> dict:
        return {"model": type(self).__name__, **self._task_record(),
                "width_mult": self.width_mult}

    @classmethod
    def from_config(cls, cfg):
        """The network ``cfg`` describes: its ``TASKS_NUM_CLASS``, ``TASKS``, ``WIDTH_MULT``."""
        return cls(cfg.TASKS_NUM_CLASS, cfg.TASKS, getattr(cfg, "WIDTH_MULT", 1.0))

    def task_id(self, task: str) -> int:
        """The 1-based slot id of ``task``."""
        if task not in self.tasks:
            raise KeyError(f"this network has no task {task!r}; tasks: {self.tasks}")
        return self.task_ids[self.tasks.index(task)]

    def _task_record(self) -> dict:
        return {"tasks_num_class": list(self.tasks_num_class), "tasks": list(self.tasks),
                "task_ids": list(self.task_ids)}

    def on_select(self, tasks: list[str]) -> None:
        index = [self.tasks.index(t) for t in tasks]
        self.task_ids = [self.task_ids[i] for i in index]
        self.tasks_num_class = [self.tasks_num_class[i] for i in index]
