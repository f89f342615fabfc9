"""Streaming AdaShare-style evaluation of a SceneNet (REFERENCE.md section 4) and the Δ summary.

:class:`SceneNetEval` accumulates per-task statistics batch by batch (``update``) and returns
``{task: {metric: float}}`` with the reference's metric names and units (``compute``):

- ``seg``: ``mIoU`` and ``Pixel Acc`` as fractions in [0, 1], ``err`` = cross-entropy;
- ``sn``: ``Angle Mean`` / ``Angle Median`` in degrees, ``Angle 11.25/22.5/30/45`` in percent;
- ``depth``: ``abs_err``, ``rel_err``, ``sigma_1.25``, ``sigma_1.25^2``, ``sigma_1.25^3`` (percent);
- ``keypoint`` / ``edge``: ``err`` = mean absolute error.

The defaults reproduce the reference's numbers, quirks included; the corrected variants are
selected with keyword options (see ``docs/METRICS.md`` for what each one changes and why).
Memory does not grow with the test set except for the exact angle median, which keeps one
float32 per valid normal pixel (as the reference does); ``angle_median="histogram"`` bounds it.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib.losses import DEPTH_VALID_MIN, SEG_IGNORE_INDEX, TARGET_KEYS, load_seg_prior

METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "seg": ("mIoU", "Pixel Acc", "err"),
    "sn": ("Angle Mean", "Angle Median", "Angle 11.25", "Angle 22.5", "Angle 30", "Angle 45"),
    "depth": ("abs_err", "rel_err", "sigma_1.25", "sigma_1.25^2", "sigma_1.25^3"),
    "keypoint": ("err",),
    "edge": ("err",),
}
TASK_ORDER: tuple[str, ...] = tuple(METRIC_NAMES)

LOWER_IS_BETTER: dict[str, bool] = {
    "mIoU": False, "Pixel Acc": False, "err": True,
    "Angle Mean": True, "Angle Median": True,
    "Angle 11.25": False, "Angle 22.5": False, "Angle 30": False, "Angle 45": False,
    "abs_err": True, "rel_err": True,
    "sigma_1.25": False, "sigma_1.25^2": False, "sigma_1.25^3": False,
}

# The metrics the literature's Δ uses (the columns of the DiSparse / Auto-Lambda tables): the
# seg cross-entropy is a loss, not a reported metric; depth uses abs/rel only.
DELTA_METRICS: dict[str, tuple[str, ...]] = {
    "seg": ("mIoU", "Pixel Acc"),
    "sn": ("Angle Mean", "Angle Median", "Angle 11.25", "Angle 22.5", "Angle 30"),
    "depth": ("abs_err", "rel_err"),
    "keypoint": ("err",),
    "edge": ("err",),
}

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0, 45.0)
DEPTH_SIGMA_BASE = 1.25
# Datasets whose normal targets are the raw PNG encoding (n + 1) * 127.5 rather than unit vectors.
RAW_NORMAL_DATASETS = ("nyuv2_3",)
NORMAL_INVALID_VALUE = 255
TARGET_IGNORE_VALUE = 255  # depth (Taskonomy), keypoint and edge ignore marker

OPTIONS: dict[str, tuple[str, ...]] = {
    "miou": ("reference", "present"),
    "pixel_acc": ("reference", "valid"),
    "normals": ("reference", "decoded"),
    "depth_sigma": ("reference", "positive"),
    "angle_median": ("exact", "histogram"),
}
# Bin width of the bounded-memory angle median; the estimate is within half a bin of the truth.
ANGLE_HIST_BIN_DEG = 1e-3


def _check_option(name: str, value: str) -> str:
    if value not in OPTIONS[name]:
        raise ValueError(f"{name}={value!r} is not a metric option; expected one of {OPTIONS[name]}")
    return value


def _require_full_size(target: torch.Tensor, key: str, image_shape: tuple[int, int]) -> None:
    if target.dim() != 4 or tuple(target.shape[-2:]) != image_shape:
        raise ValueError(f"batch[{key!r}] has shape {tuple(target.shape)}; the evaluator expects "
                         f"B x C x {image_shape[0]} x {image_shape[1]} (full-size IMAGE_SHAPE targets)")


class _BatchMean:
    """Mean of per-batch values weighted by batch size (how the reference averages over batches)."""

    def __init__(self) -> None:
        self.weighted_sum = 0.0
        self.weight = 0

    def add(self, value: torch.Tensor | float, batch_size: int) -> None:
        self.weighted_sum += float(value) * batch_size
        self.weight += batch_size

    def value(self) -> float:
        return self.weighted_sum / self.weight if self.weight else math.nan


class _SegStats:
    """Confusion matrix over pixels with 0 <= gt < C, per-batch pixel accuracy and CE."""

    def __init__(self, num_class: int, ignore_index: int, class_weight: torch.Tensor | None,
                 miou: str, pixel_acc: str) -> None:
        self.num_class, self.ignore_index, self.class_weight = num_class, ignore_index, class_weight
        self.miou, self.pixel_acc = miou, pixel_acc
        self.conf_mat: torch.Tensor | None = None
        self.batch_pixel_acc, self.batch_err = _BatchMean(), _BatchMean()

    def update(self, logits: torch.Tensor, gt: torch.Tensor) -> bool:
        c = self.num_class
        gt = gt.reshape(-1).long()
        # The reference keeps `gt < C`: Cityscapes' void (-1) passes and counts as a miss below.
        kept = gt < c
        if not bool(((gt >= 0) & kept).any()):
            return False
        gt_kept = gt[kept]
        logits_kept = logits.permute(0, 2, 3, 1).reshape(-1, c)[kept]
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        err = F.cross_entropy(logits_kept.float(), gt_kept, weight=weight,
                              ignore_index=self.ignore_index)
        pred = logits_kept.argmax(dim=1)
        batch_size = logits.shape[0]
        self.batch_pixel_acc.add((pred == gt_kept).float().mean(), batch_size)
        self.batch_err.add(err, batch_size)
        labelled = gt_kept >= 0
        counts = torch.bincount(gt_kept[labelled] * c + pred[labelled], minlength=c * c)
        counts = counts.reshape(c, c)
        self.conf_mat = counts if self.conf_mat is None else self.conf_mat + counts
        return True

    def compute(self) -> dict[str, float]:
        cm = (self.conf_mat.double().cpu().numpy() if self.conf_mat is not None
              else np.zeros((self.num_class, self.num_class)))
        tp = np.diag(cm)
        union = cm.sum(axis=1) + cm.sum(axis=0) - tp
        # reference: average over classes with TP > 0; present: over classes seen in gt or pred
        counted = tp > 0 if self.miou == "reference" else union > 0
        miou = float(np.mean(tp[counted] / union[counted])) if counted.any() else math.nan
        if self.pixel_acc == "reference":
            pixel_acc = self.batch_pixel_acc.value()
        else:
            pixel_acc = float(tp.sum() / cm.sum()) if cm.sum() > 0 else math.nan
        return {"mIoU": miou, "Pixel Acc": pixel_acc, "err": self.batch_err.value()}


class _NormalStats:
    """Angles between normalised prediction and target on valid pixels, pooled over the set."""

    def __init__(self, decode_raw_targets: bool, angle_median: str) -> None:
        self.decode_raw_targets, self.angle_median = decode_raw_targets, angle_median
        self.angle_sum = 0.0
        self.count = 0
        self.within = torch.zeros(len(ANGLE_THRESHOLDS), dtype=torch.long)
        self.angle_chunks: list[np.ndarray] = []
        self.histogram: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> bool:
        p = pred.permute(0, 2, 3, 1).reshape(-1, 3).float()
        g = gt.permute(0, 2, 3, 1).reshape(-1, 3).float()
        if self.decode_raw_targets:
            # only the (255, 255, 255) marker is invalid; (0, 0, 1) encodes to (127.5, 127.5, 255)
            valid = (g != NORMAL_INVALID_VALUE).any(dim=1)
        else:
            valid = g.max(dim=1).values != NORMAL_INVALID_VALUE  # reference: any channel at 255
        if not bool(valid.any()):
            return False
        p, g = p[valid], g[valid]
        if self.decode_raw_targets:
            g = g / 127.5 - 1.0
        cos = F.cosine_similarity(F.normalize(g, dim=1), F.normalize(p, dim=1), dim=1)
        angles = torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi * 180.0  # float32, as the reference
        self.angle_sum += float(angles.double().sum())
        self.count += angles.numel()
        thresholds = torch.tensor(ANGLE_THRESHOLDS, device=angles.device)
        self.within += (angles[:, None] <= thresholds).sum(dim=0).cpu()
        if self.angle_median == "exact":
            self.angle_chunks.append(angles.cpu().numpy())
        else:
            nbins = int(round(180.0 / ANGLE_HIST_BIN_DEG))
            idx = (angles.double() / ANGLE_HIST_BIN_DEG).long().clamp_(0, nbins - 1)
            hist = torch.bincount(idx, minlength=nbins)
            self.histogram = hist if self.histogram is None else self.histogram + hist
        return True

    def _median(self) -> float:
        if self.count == 0:
            return math.nan
        if self.angle_median == "exact":
            return float(np.median(np.concatenate(self.angle_chunks)))
        cumulative = torch.cumsum(self.histogram.cpu(), dim=0)
        # np.median's two middle ranks (equal for odd counts), located by their bins' centres.
        ranks = torch.tensor([(self.count - 1) // 2, self.count // 2])
        bins = torch.searchsorted(cumulative, ranks, right=True)
        return float(((bins.double() + 0.5) * ANGLE_HIST_BIN_DEG).mean())

    def compute(self) -> dict[str, float]:
        n = self.count
        out = {"Angle Mean": self.angle_sum / n if n else math.nan, "Angle Median": self._median()}
        for name, within in zip(METRIC_NAMES["sn"][2:], self.within.tolist()):
            out[name] = 100.0 * within / n if n else math.nan
        return out


class _DepthStats:
    """Batch-weighted abs/rel error over valid pixels and pooled threshold accuracies."""

    def __init__(self, require_positive_pred: bool) -> None:
        self.require_positive_pred = require_positive_pred
        self.abs_err, self.rel_err = _BatchMean(), _BatchMean()
        self.within = torch.zeros(3, dtype=torch.long)
        self.count = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> bool:
        n = int(valid.sum())
        if n == 0:
            return False
        p, g = pred.float().masked_select(valid), gt.float().masked_select(valid)
        diff = (p - g).abs()
        batch_size = pred.shape[0]
        self.abs_err.add(diff.double().sum() / n, batch_size)
        self.rel_err.add((diff / g).double().sum() / n, batch_size)
        ratio = torch.maximum(p / g, g / p)
        thresholds = DEPTH_SIGMA_BASE ** torch.arange(1, 4, device=p.device, dtype=torch.float64)
        within = ratio.double()[:, None] <= thresholds
        if self.require_positive_pred:
            # the reference's ratio of two negatives is negative, so p < 0 counted as accurate
            within &= (p > 0)[:, None]
        self.within += within.sum(dim=0).cpu()
        self.count += n
        return True

    def compute(self) -> dict[str, float]:
        out = {"abs_err": self.abs_err.value(), "rel_err": self.rel_err.value()}
        for name, within in zip(METRIC_NAMES["depth"][2:], self.within.tolist()):
            out[name] = 100.0 * within / self.count if self.count else math.nan
        return out


class _MaskedL1Stats:
    """Batch-weighted mean |p - g| over pixels whose target is not 255 (keypoint, edge)."""

    def __init__(self) -> None:
        self.err = _BatchMean()

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> bool:
        valid = gt != TARGET_IGNORE_VALUE
        if not bool(valid.any()):
            return False
        diff = (pred.float().masked_select(valid) - gt.float().masked_select(valid)).abs()
        self.err.add(diff.double().mean(), pred.shape[0])
        return True

    def compute(self) -> dict[str, float]:
        return {"err": self.err.value()}


class SceneNetEval:
    """Streaming evaluator with the reference's metric definitions.

    Args:
        dataset: ``"nyuv2_3"``, ``"cityscapes"`` or ``"taskonomy"``.
        tasks: task names in the order of the network's outputs.
        tasks_num_class: output channels per task (seg: number of classes).
        image_shape: ``(H, W)`` of the test targets; predictions are nearest-upsampled to it.
        seg_class_weight: per-class CE weights for ``err`` (Taskonomy's prior factor).
        miou: ``"reference"`` averages IoU over classes with TP > 0; ``"present"`` over every
            class that occurs in the ground truth or the prediction.
        pixel_acc: ``"reference"`` = per-batch accuracy over pixels with gt < C (Cityscapes void
            counted as wrong), batch-size weighted; ``"valid"`` = pooled over labelled pixels.
        normals: ``"reference"`` compares against raw-encoded 0..255 vectors and drops every
            pixel with a channel at 255; ``"decoded"`` reads NYU targets as the PNG encoding they
            are: invalid only at (255, 255, 255), decoded with n / 127.5 - 1 (for networks
            trained on decoded normals). Taskonomy targets are already decoded: no change.
        depth_sigma: ``"reference"`` or ``"positive"`` (a prediction <= 0 is never within a
            threshold; the reference counts negative predictions as accurate).
        angle_median: ``"exact"`` keeps one float32 per valid normal pixel; ``"histogram"`` keeps
            a fixed 1e-3 degree histogram (median within 5e-4 degrees, bounded memory).

    A batch in which a task has no valid pixel makes the reference's value NaN; here it is left
    out of that task's averages with a warning naming the batch.
    """

    def __init__(self, dataset: str, tasks: Sequence[str], tasks_num_class: Sequence[int],
                 image_shape: Sequence[int], seg_class_weight: Any = None, *,
                 miou: str = "reference", pixel_acc: str = "reference",
                 normals: str = "reference", depth_sigma: str = "reference",
                 angle_median: str = "exact") -> None:
        if dataset not in SEG_IGNORE_INDEX:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SEG_IGNORE_INDEX)}")
        unknown = [t for t in tasks if t not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {list(METRIC_NAMES)}")
        if len(tasks_num_class) != len(tasks):
            raise ValueError(f"tasks_num_class {list(tasks_num_class)} must have one entry per "
                             f"task {list(tasks)}")
        if len(image_shape) != 2:
            raise ValueError(f"image_shape {tuple(image_shape)} must be (H, W)")
        self.dataset = dataset
        self.tasks = list(tasks)
        self.tasks_num_class = [int(c) for c in tasks_num_class]
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.options = {"miou": _check_option("miou", miou),
                        "pixel_acc": _check_option("pixel_acc", pixel_acc),
                        "normals": _check_option("normals", normals),
                        "depth_sigma": _check_option("depth_sigma", depth_sigma),
                        "angle_median": _check_option("angle_median", angle_median)}
        self.seg_class_weight = (None if seg_class_weight is None else
                                 torch.as_tensor(np.asarray(seg_class_weight, dtype=np.float32)))
        if self.seg_class_weight is not None and "seg" in self.tasks:
            expected = self.tasks_num_class[self.tasks.index("seg")]
            if self.seg_class_weight.shape != (expected,):
                raise ValueError(f"seg_class_weight has shape {tuple(self.seg_class_weight.shape)}; "
                                 f"expected one weight per seg class ({expected},)")
        self.reset()

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str] | None = None, **options: str) -> "SceneNetEval":
        """Evaluator for ``cfg`` (restricted to ``tasks`` if given); reads Taskonomy's class prior."""
        tasks = list(cfg.TASKS) if tasks is None else list(tasks)
        missing = [t for t in tasks if t not in cfg.TASKS]
        if missing:
            raise ValueError(f"task(s) {missing} not in the config's TASKS {list(cfg.TASKS)}")
        num_class = [cfg.TASKS_NUM_CLASS[list(cfg.TASKS).index(t)] for t in tasks]
        weight = None
        if cfg.DATASET == "taskonomy" and "seg" in tasks:
            weight = load_seg_prior(cfg.DATA_ROOT)
        return cls(cfg.DATASET, tasks, num_class, cfg.IMAGE_SHAPE, weight, **options)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.num_images = 0
        self._stats: dict[str, Any] = {}
        for task, num_class in zip(self.tasks, self.tasks_num_class):
            if task == "seg":
                self._stats[task] = _SegStats(num_class, SEG_IGNORE_INDEX[self.dataset],
                                              self.seg_class_weight, self.options["miou"],
                                              self.options["pixel_acc"])
            elif task == "sn":
                decode = (self.options["normals"] == "decoded"
                          and self.dataset in RAW_NORMAL_DATASETS)
                self._stats[task] = _NormalStats(decode, self.options["angle_median"])
            elif task == "depth":
                self._stats[task] = _DepthStats(self.options["depth_sigma"] == "positive")
            else:
                self._stats[task] = _MaskedL1Stats()

    def _pred(self, preds, task: str) -> torch.Tensor:
        if isinstance(preds, Mapping):
            if task not in preds:
                raise KeyError(f"predictions have no task {task!r}; got {sorted(preds)}")
            pred = preds[task]
        else:
            if len(preds) != len(self.tasks):
                raise ValueError(f"got {len(preds)} predictions for tasks {self.tasks}")
            pred = preds[self.tasks.index(task)]
        expected = self.tasks_num_class[self.tasks.index(task)]
        if pred.dim() != 4 or pred.shape[1] != expected:
            raise ValueError(f"prediction for task {task!r} has shape {tuple(pred.shape)}; "
                             f"expected B x {expected} x h x w")
        return pred

    def _target(self, batch: Mapping[str, Any], key: str, task: str,
                device: torch.device) -> torch.Tensor:
        if key not in batch:
            raise KeyError(f"batch has no key {key!r} for task {task!r}; keys: {sorted(batch)}")
        target = torch.as_tensor(batch[key]).to(device)
        _require_full_size(target, key, self.image_shape)
        return target

    def _depth_valid(self, gt: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.dataset == "taskonomy":
            if "depth_mask" not in batch:
                raise KeyError("taskonomy depth evaluation needs the batch key 'depth_mask'; "
                               f"keys: {sorted(batch)}")
            mask = torch.as_tensor(batch["depth_mask"]).to(gt.device).float()
            mask = F.interpolate(mask, size=self.image_shape, mode="nearest")
            return (gt != TARGET_IGNORE_VALUE) & (mask.int() == 1)
        return gt.sum(dim=1, keepdim=True) > DEPTH_VALID_MIN

    @torch.no_grad()
    def update(self, preds, batch: Mapping[str, Any]) -> None:
        """Add one batch: ``preds`` as the network returns them (list aligned with ``tasks``, or
        ``{task: tensor}``), ``batch`` the loader's dict with full-size targets.

        Work happens on the predictions' device; targets are moved there.
        """
        batch_size = None
        for task in self.tasks:
            pred = self._pred(preds, task)
            if batch_size is None:
                batch_size = pred.shape[0]
            elif pred.shape[0] != batch_size:
                raise ValueError(f"prediction for task {task!r} has batch size {pred.shape[0]}, "
                                 f"other tasks have {batch_size}")
            key = TARGET_KEYS[task]
            gt = self._target(batch, key, task, pred.device)
            if gt.shape[0] != batch_size:
                raise ValueError(f"batch[{key!r}] has {gt.shape[0]} items but the predictions "
                                 f"have {batch_size}")
            pred = F.interpolate(pred.float(), size=self.image_shape, mode="nearest")
            stats = self._stats[task]
            if task == "depth":
                used = stats.update(pred, gt.float(), self._depth_valid(gt.float(), batch))
            else:
                used = stats.update(pred, gt)
            if not used:
                names = batch.get("name", "?")
                warnings.warn(f"task {task!r}: no valid target pixel in batch {names}; the "
                              f"batch is left out of that task's metrics", RuntimeWarning)
        self.num_images += batch_size or 0

    def compute(self) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` over everything added since the last ``reset``."""
        if self.num_images == 0:
            raise RuntimeError("SceneNetEval.compute() called before any update()")
        return {task: self._stats[task].compute() for task in self.tasks}


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable[Mapping[str, Any]], evaluator: SceneNetEval,
             device: torch.device | str | None = None, max_batches: int | None = None,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """Run ``net`` over ``loader`` in eval mode and return ``evaluator``'s metrics.

    ``device`` defaults to the device of the network's parameters; the network's train/eval
    mode is restored afterwards. A network with task names (``SceneNet(..., tasks=...)``) may
    have more tasks than the evaluator: its outputs are matched by name.
    """
    if device is None:
        device = next(net.parameters()).device
    device = torch.device(device)
    evaluator.reset()
    was_training = net.training
    net.eval()
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)
        disable = not progress or os.environ.get("CUT_FAST_MODE") == "1"
        for i, batch in enumerate(tqdm(loader, total=total, desc="evaluate", disable=disable)):
            if max_batches is not None and i >= max_batches:
                break
            preds = net(batch["img"].to(device))
            if getattr(net, "tasks", None) is not None:
                preds = dict(zip(net.tasks, preds))  # lets the evaluator cover a subset of tasks
            evaluator.update(preds, batch)
    finally:
        net.train(was_training)
    return evaluator.compute()


def _delta_terms(metrics: Mapping[str, Mapping[str, float]],
                 dense_metrics: Mapping[str, Mapping[str, float]], task: str,
                 metric_names: Mapping[str, Sequence[str]] | None) -> list[float]:
    names = (metric_names or DELTA_METRICS).get(task)
    if names is None:
        raise ValueError(f"no delta metrics defined for task {task!r}")
    if task not in metrics or task not in dense_metrics:
        side = "metrics" if task not in metrics else "dense_metrics"
        raise KeyError(f"task {task!r} missing from {side}")
    terms = []
    for name in names:
        if name not in LOWER_IS_BETTER:
            raise ValueError(f"metric {name!r} of task {task!r} has no entry in LOWER_IS_BETTER")
        for side, values in (("metrics", metrics), ("dense_metrics", dense_metrics)):
            if name not in values[task]:
                raise KeyError(f"{side}[{task!r}] has no metric {name!r}; "
                               f"got {sorted(values[task])}")
        value, dense = float(metrics[task][name]), float(dense_metrics[task][name])
        if dense == 0:
            raise ZeroDivisionError(f"dense {task} {name} is 0: the relative change is undefined")
        sign = -1.0 if LOWER_IS_BETTER[name] else 1.0
        terms.append(sign * (value - dense) / dense)
    return terms


def per_task_delta(metrics: Mapping[str, Mapping[str, float]],
                   dense_metrics: Mapping[str, Mapping[str, float]],
                   tasks: Sequence[str] | None = None,
                   metric_names: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Per-task Δ_t = 100 / |M_t| Σ_m (-1)^{l_m} (M - M_dense) / M_dense, in percent.

    Positive means better than dense. ``tasks`` defaults to the tasks of ``metrics``;
    ``metric_names`` ({task: names}) defaults to :data:`DELTA_METRICS`.
    """
    if tasks is None:
        tasks = [t for t in TASK_ORDER if t in metrics] + [t for t in metrics if t not in TASK_ORDER]
    out = {}
    for task in tasks:
        terms = _delta_terms(metrics, dense_metrics, task, metric_names)
        out[task] = 100.0 * sum(terms) / len(terms)
    return out


def delta_mtl(metrics: Mapping[str, Mapping[str, float]],
              dense_metrics: Mapping[str, Mapping[str, float]],
              tasks: Sequence[str] | None = None,
              metric_names: Mapping[str, Sequence[str]] | None = None) -> float:
    """Multi-task Δ (Maninis et al.; Auto-Lambda's ΔMTL) in percent: the mean of
    :func:`per_task_delta` over ``tasks``. Positive means better than the dense model."""
    per_task = per_task_delta(metrics, dense_metrics, tasks, metric_names)
    if not per_task:
        raise ValueError("delta_mtl needs at least one task")
    return sum(per_task.values()) / len(per_task)
