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

The min-max framework's benchmarks keep their own conventions, so their losses live here as
plain functions, not in the task table (NYUv2 in MTAN's format: :func:`mtan_seg_loss`,
:func:`mtan_depth_loss`, :func:`mtan_normal_loss`; CIFAR-100's domains: :func:`domain_loss`).
:func:`losses_from_config` is the one place that picks a config's loss: ``SceneNetLoss`` for
the reference datasets, a :class:`TaskLosses` of those functions for the others.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.datasets import dataset_spec
from lib.tasks import (DEPTH_VALID_MIN, TASKS, check_dataset, check_tasks, load_seg_prior,
                       seg_prior_weighted, task_batch)

__all__ = ["TaskLosses", "SceneNetLoss", "losses_from_config", "load_seg_prior",
           "DEPTH_VALID_MIN", "TARGET_KEYS", "mtan_seg_loss", "mtan_depth_loss",
           "mtan_normal_loss", "domain_loss", "mtan_losses", "domain_losses"]

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
        """Task ``task``'s own loss, unweighted (the loss used for per-task pruning scores).
        For a ``lib.tasks.TaskBatches`` step the function sees ``task``'s own batch."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of this loss's tasks {self.tasks}")
        return self.losses[task](self._pred(preds, task), task_batch(batch, task))

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
        dataset: a dataset of the task table (``"nyuv2_3"``, ``"cityscapes"``, ``"taskonomy"``
            or a registered one); its spec decides ignore values and masks.
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
        if seg_prior_weighted(cfg.DATASET) and "seg" in cfg.TASKS:
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


# ----------------------------------------------------------------------------- the min-max benchmarks
# NYUv2 in MTAN's format (lib.data.NYUv2MTAN): targets under the task names, seg -1 = ignore,
# depth 0 = invalid, normals (0, 0, 0) = invalid. CIFAR-100 domains: batch["label"].
MTAN_SEG_IGNORE = -1
NORMAL_LOSSES = ("cosine", "l1")
NORMAL_MASKS = ("nonzero", "sum")   # which normal targets are valid (lib.metrics_minmax's too)


def _target(batch: Mapping[str, Any], key: str, pred: torch.Tensor) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"batch has no {key!r} target; keys: {sorted(batch)}")
    return batch[key].to(pred.device)


def mtan_seg_loss(pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """Cross-entropy of the N x C x H x W logits over the labelled pixels (label -1 ignored),
    as ``model_fit``'s NLL of the log-softmax in the min-max code."""
    labels = _target(batch, "seg", pred).long()
    return F.cross_entropy(pred, labels.reshape(labels.shape[0], *labels.shape[-2:]),
                           ignore_index=MTAN_SEG_IGNORE)


def mtan_depth_loss(pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean |p - g| over the pixels with depth (g != 0)."""
    gt = _target(batch, "depth", pred)
    valid = gt != 0
    return (pred - gt).abs()[valid].mean()


def mtan_normal_loss(pred: torch.Tensor, batch: Mapping[str, Any],
                     kind: str = "cosine", mask: str = "nonzero") -> torch.Tensor:
    """Surface-normal loss over the pixels whose target is valid.

    ``"cosine"`` (``prune_apgda``'s ``model_fit``, SegNet-MTAN): ``1 - mean(p . g)`` for unit
    predictions, i.e. 1 - the mean cosine. ``"l1"`` (``utils.compute_loss`` of the DeepLab
    trainer): the mean over those pixels of ``sum_c |p_c - g_c|``. ``mask="nonzero"``
    (default): only the (0, 0, 0) marker is invalid. ``mask="sum"`` (config ``NORMAL_MASK``):
    the reference's rule, valid where the components' *sum* is non-zero, which also drops
    valid normals such as (0.71, -0.71, 0) (docs/METRICS.md).
    """
    gt = _target(batch, "normal", pred)
    if mask not in NORMAL_MASKS:
        raise ValueError(f"normal mask {mask!r} is not one of {NORMAL_MASKS}")
    valid = (gt.sum(dim=1) != 0) if mask == "sum" else (gt != 0).any(dim=1)
    if kind == "cosine":
        return 1 - (pred * gt).sum(dim=1)[valid].mean()
    if kind == "l1":
        return (pred - gt).abs().sum(dim=1)[valid].mean()
    raise ValueError(f"normal loss {kind!r} is not one of {NORMAL_LOSSES}")


def domain_loss(pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """Cross-entropy of a domain's N x classes logits against ``batch["label"]``."""
    return F.cross_entropy(pred, _target(batch, "label", pred).long())


def mtan_losses(cfg) -> dict[str, TaskLossFn]:
    """MTAN's NYUv2 losses for ``cfg.TASKS`` (the normal loss by ``cfg.NORMAL_LOSS`` /
    ``NORMAL_MASK``): ``nyuv2_mtan``'s spec ``losses``."""
    kind = getattr(cfg, "NORMAL_LOSS", "cosine")
    if kind not in NORMAL_LOSSES:
        raise ValueError(f"config NORMAL_LOSS {kind!r} is not one of {NORMAL_LOSSES}")
    mask = getattr(cfg, "NORMAL_MASK", "nonzero")
    if mask not in NORMAL_MASKS:
        raise ValueError(f"config NORMAL_MASK {mask!r} is not one of {NORMAL_MASKS}")
    known = {"seg": mtan_seg_loss, "depth": mtan_depth_loss,
             "normal": functools.partial(mtan_normal_loss, kind=kind, mask=mask)}
    unknown = [t for t in cfg.TASKS if t not in known]
    if unknown:
        raise ValueError(f"config {cfg.DATASET!r} task(s) {unknown} have no loss; its tasks "
                         f"are {list(known)}")
    return {t: known[t] for t in cfg.TASKS}


def domain_losses(cfg) -> dict[str, TaskLossFn]:
    """Every domain's cross-entropy: ``cifar100_mtl``'s spec ``losses``."""
    return {t: domain_loss for t in cfg.TASKS}


def losses_from_config(cfg, tasks: Sequence[str] | None = None) -> TaskLosses:
    """The weighted multi-task loss of ``cfg`` (``LAMBDAS``), restricted to ``tasks`` if given:
    the functions of ``cfg.DATASET``'s spec (``losses``: ``cfg -> {task: fn(pred, batch)}``;
    the min-max benchmarks', NYUv2's normal loss by ``cfg.NORMAL_LOSS``), or
    :class:`SceneNetLoss` for a dataset of the task table (spec ``losses`` None)."""
    spec = dataset_spec(cfg.DATASET)
    if spec.losses is None:
        return SceneNetLoss.from_config(cfg, tasks)
    if len(cfg.LAMBDAS) != len(cfg.TASKS):
        raise ValueError(f"config LAMBDAS {list(cfg.LAMBDAS)} must have one weight per task "
                         f"{list(cfg.TASKS)}")
    loss = TaskLosses(spec.get("losses")(cfg), cfg.LAMBDAS)
    return loss if tasks is None else loss.restricted_to(tasks)
