"""The task table: what the workspace knows about each task of the reference datasets.

One :class:`TaskSpec` per task says where its ground truth sits in a batch, its loss, its
metrics (names, report order, which way is better, which enter the multi-task Δ), which target
pixels are valid, how :mod:`lib.metrics` accumulates it and how :mod:`lib.reports` draws it.
Losses (:class:`lib.losses.SceneNetLoss`), metrics (:class:`lib.metrics.SceneNetEval`, Δ) and
figures dispatch through :data:`TASKS`; nothing else names a task. A new task is one
:class:`TaskSpec` line in :data:`TASKS` (its loss function next to the others, if new).

Also the dataset conventions those rules depend on, read from each dataset's
:class:`lib.datasets.DatasetSpec` (ignore values, the depth validity rule, raw normals, the
class-prior file), and the image mean the loaders subtract. Tasks of other models need
no entry here: :class:`lib.losses.TaskLosses` and :class:`lib.metrics.TaskMetrics` take plain
functions.

And the two forms a batch takes. Usually one dict feeds every task (``batch[INPUT_KEY]`` and
each task's target). When every task has data of its own (the domains of a multi-domain
benchmark, one batch per domain and step), a step is a :class:`TaskBatches`,
``{task: batch dict}``. Whatever runs a network on a batch goes through :func:`network_input`,
:func:`task_batch` and :func:`batch_to`, so either form works everywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from lib.datasets import dataset_names, dataset_spec

# ----------------------------------------------------------------------------- conventions
INPUT_KEY = "img"                      # the batch key of the network's input
DEPTH_VALID_MIN = 3e-5                 # NYU-v2 / Cityscapes: depth at or below this is missing
TARGET_IGNORE_VALUE = 255              # Taskonomy depth, keypoint and edge: the ignore marker
NORMAL_INVALID_VALUE = 255             # normal maps: a channel at 255 marks an invalid pixel
# Caffe-style mean of the ImageNet-pretrained ResNet, BGR order, 0..255 scale (no std): what
# every loader subtracts from its images.
IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
SEG_PRIOR_FILE = "semseg_prior_factor.npy"   # Taskonomy: per-class CE weights at DATA_ROOT


class TaskBatches(dict):
    """One step's data when every task has its own: ``{task: batch dict}``, each with its
    ``INPUT_KEY`` input and that task's targets (see the module docstring)."""


def network_input(batch: Mapping[str, Any]) -> torch.Tensor | dict[str, torch.Tensor]:
    """What the network is fed: ``batch[INPUT_KEY]``, or for :class:`TaskBatches`
    ``{task: that task's input}`` (``lib.models.task_outputs`` runs either)."""
    if isinstance(batch, TaskBatches):
        return {task: network_input(part) for task, part in batch.items()}
    if INPUT_KEY not in batch:
        raise KeyError(f"batch has no input key {INPUT_KEY!r}; keys: {sorted(batch)}")
    return batch[INPUT_KEY]


def task_batch(batch: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    """The batch dict holding ``task``'s targets: ``batch`` itself, or its own one in a
    :class:`TaskBatches`."""
    if not isinstance(batch, TaskBatches):
        return batch
    if task not in batch:
        raise KeyError(f"the step has no batch for task {task!r}; it has {sorted(batch)}")
    return batch[task]


def batch_to(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """``batch`` (either form) with every tensor on ``device`` (non-blocking to CUDA); other
    values as they are."""
    device = torch.device(device)
    if isinstance(batch, TaskBatches):
        return TaskBatches({task: batch_to(part, device) for task, part in batch.items()})
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def batch_items(batch: Mapping[str, Any]) -> int:
    """How many items ``batch`` holds (a :class:`TaskBatches`: over all its tasks)."""
    if isinstance(batch, TaskBatches):
        return sum(batch_items(part) for part in batch.values())
    return int(network_input(batch).shape[0])


def table_datasets() -> list[str]:
    """The registered datasets whose tasks are this table's (their spec names no losses of
    their own), sorted."""
    return sorted(name for name in dataset_names() if dataset_spec(name).losses is None)


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is registered and its tasks are this table's; one-line error if not."""
    if dataset_spec(dataset).losses is not None:
        raise ValueError(f"dataset {dataset!r} has losses of its own, not the task table's; "
                         f"the task table's datasets: {table_datasets()}")
    return dataset


def seg_ignore_index(dataset: str) -> int:
    """The segmentation label ``dataset`` marks as ignored (its spec's ``seg_ignore_index``)."""
    value = dataset_spec(dataset).seg_ignore_index
    if value is None:
        raise ValueError(f"dataset {dataset!r} declares no seg_ignore_index")
    return value


def raw_normals(dataset: str) -> bool:
    """Whether ``dataset``'s normal targets are the raw PNG encoding ``(n + 1) * 127.5``."""
    return dataset_spec(dataset).raw_normals


def seg_prior_weighted(dataset: str) -> bool:
    """Whether ``dataset``'s segmentation is class-weighted by ``DATA_ROOT``'s prior file."""
    return dataset_spec(dataset).seg_prior


def load_seg_prior(data_root: str | os.PathLike) -> np.ndarray:
    """Taskonomy's per-class CE weights from ``DATA_ROOT/semseg_prior_factor.npy``."""
    path = Path(data_root) / SEG_PRIOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: Taskonomy's DATA_ROOT must hold "
                                f"{SEG_PRIOR_FILE} (one float weight per seg class)")
    return np.load(path).astype(np.float32)


# ----------------------------------------------------------------------------- validity
def depth_valid(gt: torch.Tensor, dataset: str, depth_mask: torch.Tensor | None) -> torch.Tensor:
    """Valid pixels of a ``B x 1 x H x W`` depth target: Taskonomy's ``depth_mask`` (nearest-
    resized to the target) and not 255; elsewhere depth above :data:`DEPTH_VALID_MIN`."""
    if dataset_spec(dataset).depth_mask:
        if depth_mask is None:
            raise KeyError(f"{dataset} depth needs the batch key 'depth_mask'")
        mask = F.interpolate(depth_mask.float(), size=gt.shape[-2:], mode="nearest")
        return (gt != TARGET_IGNORE_VALUE) & (mask.int() == 1)
    return gt.sum(dim=1, keepdim=True) > DEPTH_VALID_MIN


def marked_valid(gt: torch.Tensor, dataset: str, depth_mask: torch.Tensor | None) -> torch.Tensor:
    """Valid pixels of a keypoint / edge target: every pixel not at 255."""
    return gt != TARGET_IGNORE_VALUE


# ----------------------------------------------------------------------------- losses
def resize_target(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Nearest-resize a ``B x C x H x W`` target to the prediction's spatial size, as float."""
    return F.interpolate(target.float(), size=pred.shape[-2:], mode="nearest")


def seg_loss(pred: torch.Tensor, gt: torch.Tensor, batch: Mapping[str, Any], dataset: str,
             class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over pixels not at the dataset's ignore index (optionally class-weighted)."""
    num_class = pred.shape[1]
    logits = pred.permute(0, 2, 3, 1).reshape(-1, num_class)
    labels = resize_target(gt, pred).permute(0, 2, 3, 1).reshape(-1).long()
    weight = None if class_weight is None else class_weight.to(pred.device)
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=seg_ignore_index(dataset))


def normal_loss(pred: torch.Tensor, gt: torch.Tensor, batch: Mapping[str, Any], dataset: str,
                class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean cosine between normalised prediction and ground truth, on valid pixels.

    A pixel is valid when its max channel < 255 (NYU's invalid marker is (255, 255, 255)).
    """
    p = pred.permute(0, 2, 3, 1).reshape(-1, 3)
    g = resize_target(gt, pred).permute(0, 2, 3, 1).reshape(-1, 3)
    valid = g.max(dim=1).values < NORMAL_INVALID_VALUE
    p, g = F.normalize(p[valid]), F.normalize(g[valid])
    return 1 - F.cosine_similarity(p, g).mean()


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, batch: Mapping[str, Any], dataset: str,
               class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 over valid depth pixels (:func:`depth_valid`)."""
    g = resize_target(gt, pred)
    mask = batch.get("depth_mask")
    return _l1_where(pred, g, depth_valid(g, dataset, None if mask is None else mask.to(pred.device)))


def masked_l1_loss(pred: torch.Tensor, gt: torch.Tensor, batch: Mapping[str, Any], dataset: str,
                   class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 over pixels whose target is not 255 (keypoint and edge)."""
    g = resize_target(gt, pred)
    return _l1_where(pred, g, marked_valid(g, dataset, None))


def _l1_where(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred.masked_select(valid), gt.masked_select(valid))


# ----------------------------------------------------------------------------- the table
LossFn = Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any], str, Any], torch.Tensor]
ValidFn = Callable[[torch.Tensor, str, Any], torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific about one task.

    ``loss(pred, gt, batch, dataset, class_weight)`` is the task's unweighted loss (``gt`` is
    ``batch[target_key]`` on the prediction's device); ``metrics`` the metric names in report
    order, ``lower_is_better`` their directions, ``delta_metrics`` those the multi-task Δ
    averages; ``valid(gt, dataset, depth_mask)`` the valid target pixels (``None``: the loss
    and the evaluator decide, as for seg's ignore index). ``evaluator`` names the accumulator
    :class:`lib.metrics.SceneNetEval` uses, ``panel`` how :func:`lib.reports.plot_prediction_grid`
    draws prediction and target; ``channels`` the output channels of the task's head (``None``:
    the dataset's class count), checked when a network is read from a file.
    """
    name: str
    target_key: str
    loss: LossFn
    metrics: tuple[str, ...]
    lower_is_better: Mapping[str, bool]
    delta_metrics: tuple[str, ...]
    evaluator: str
    panel: str
    valid: ValidFn | None = None
    channels: int | None = None


def _spec(name, target_key, loss, metrics: Mapping[str, bool], delta, evaluator, panel,
          valid=None, channels=None) -> TaskSpec:
    return TaskSpec(name, target_key, loss, tuple(metrics), dict(metrics), tuple(delta),
                    evaluator, panel, valid, channels)


# The seg cross-entropy ("err") is a loss, not a reported metric: the literature's Δ (DiSparse /
# Auto-Lambda tables) leaves it out; depth's Δ uses abs/rel only.
_ANGLES = {"Angle Mean": True, "Angle Median": True, "Angle 11.25": False, "Angle 22.5": False,
           "Angle 30": False, "Angle 45": False}
_SIGMAS = {"sigma_1.25": False, "sigma_1.25^2": False, "sigma_1.25^3": False}
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    _spec("seg", "seg", seg_loss, {"mIoU": False, "Pixel Acc": False, "err": True},
          ("mIoU", "Pixel Acc"), "segmentation", "labels"),
    _spec("sn", "normal", normal_loss, _ANGLES, tuple(_ANGLES)[:5], "normals", "normals",
          channels=3),
    _spec("depth", "depth", depth_loss, {"abs_err": True, "rel_err": True, **_SIGMAS},
          ("abs_err", "rel_err"), "depth", "depth", depth_valid, channels=1),
    _spec("keypoint", "keypoint", masked_l1_loss, {"err": True}, ("err",), "masked_l1", "signed",
          marked_valid, channels=1),
    _spec("edge", "edge", masked_l1_loss, {"err": True}, ("err",), "masked_l1", "signed",
          marked_valid, channels=1),
)}


def task_spec(task: str) -> TaskSpec:
    """The table entry of ``task``; a one-line ValueError for a task the table does not know."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    return TASKS[task]


def check_tasks(tasks) -> list[str]:
    """``tasks`` as a list, after a one-line ValueError naming those the table does not know."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(TASKS)}")
    return list(tasks)


def check_task_selection(selected, available, what: str = "--tasks") -> list[str]:
    """``selected`` as a list, after a one-line ValueError for an empty list, a task listed
    twice (``"task 'seg' listed twice"``) or a task not in ``available`` (a config's or a
    network's tasks); called on a command's task list before anything is built or written."""
    selected, available = list(selected), list(available)
    if not selected:
        raise ValueError(f"{what}: no task given; available tasks: {available}")
    for task in dict.fromkeys(selected):
        times = selected.count(task)
        if times > 1:
            count = "twice" if times == 2 else f"{times} times"
            raise ValueError(f"{what}: task {task!r} listed {count}; available tasks: "
                             f"{available}")
    unknown = [t for t in selected if t not in available]
    if unknown:
        raise ValueError(f"{what}: unknown task(s) {unknown}; available tasks: {available}")
    return selected


def lower_is_better(metric: str) -> bool | None:
    """Direction of a metric name of the table (``None`` for a name it does not know)."""
    for spec in TASKS.values():
        if metric in spec.lower_is_better:
            return spec.lower_is_better[metric]
    return None
