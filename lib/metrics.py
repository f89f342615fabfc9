"""Streaming evaluation (AdaShare-style for the reference tasks, user functions for any other)
and the multi-task Δ summary.

:class:`SceneNetEval` accumulates per-task statistics batch by batch (``update``) and returns
``{task: {metric: float}}`` with the reference's metric names and units (``compute``):

- ``seg``: ``mIoU`` and ``Pixel Acc`` as fractions in [0, 1], ``err`` = cross-entropy;
- ``sn``: ``Angle Mean`` / ``Angle Median`` in degrees, ``Angle 11.25/22.5/30/45`` in percent;
- ``depth``: ``abs_err``, ``rel_err``, ``sigma_1.25``, ``sigma_1.25^2``, ``sigma_1.25^3`` (percent);
- ``keypoint`` / ``edge``: ``err`` = mean absolute error.

The defaults reproduce the reference's numbers, quirks included; the corrected variants are
selected with keyword options (see ``docs/METRICS.md`` for what each one changes and why).

No result is ever NaN. A metric with nothing to average (the reference's mIoU when no class
has a true positive, depth errors when no pixel was valid) is *undefined*: its value is
``None`` and :class:`MetricResults` ``.undefined`` says why; metrics files write it as
``null`` with the reason beside it (:func:`write_metrics`). A non-finite prediction or metric
value is an error (:class:`lib.utils.NonFiniteError`) naming the task and batch, never a
number passed on.

Memory does not grow with the test set except for the exact angle median, which keeps one
float32 per valid normal pixel (as the reference does); ``angle_median="histogram"`` bounds it.
The per-task rules (target keys, metric names and directions, Δ metrics, validity) come from the
task table :mod:`lib.tasks`.

:class:`TaskMetrics` is the same streaming protocol (``reset`` / ``update`` / ``compute``) over
user-supplied ``{task: fn(pred, batch) -> {metric: value}}`` functions, for tasks outside the
table; :func:`evaluate` runs either over a loader. :func:`metrics_from_config` is the one place
that picks a config's evaluator: ``SceneNetEval`` for the reference datasets, the min-max
benchmarks' (:mod:`lib.metrics_minmax`) for the others.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib.datasets import dataset_spec
from lib.models import task_outputs
from lib.tasks import (NORMAL_INVALID_VALUE, TASKS, batch_to, check_dataset, load_seg_prior,
                       network_input, raw_normals, seg_ignore_index, seg_prior_weighted,
                       task_batch)
from lib.utils import NonFiniteError, atomic_write_json, check_finite_tensors, read_json

# Derived from the task table (lib.tasks.TASKS): metric names in report order, their
# directions, and the metrics the literature's Δ uses (the DiSparse / Auto-Lambda table columns).
METRIC_NAMES: dict[str, tuple[str, ...]] = {t: spec.metrics for t, spec in TASKS.items()}
TASK_ORDER: tuple[str, ...] = tuple(TASKS)
LOWER_IS_BETTER: dict[str, bool] = {m: low for spec in TASKS.values()
                                    for m, low in spec.lower_is_better.items()}
DELTA_METRICS: dict[str, tuple[str, ...]] = {t: spec.delta_metrics for t, spec in TASKS.items()}

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0, 45.0)
DEPTH_SIGMA_BASE = 1.25

OPTIONS: dict[str, tuple[str, ...]] = {
    "miou": ("reference", "present"),
    "pixel_acc": ("reference", "valid"),
    "normals": ("reference", "decoded"),
    "depth_sigma": ("reference", "positive"),
    "angle_median": ("exact", "histogram"),
}
# Bin width of the bounded-memory angle median; the estimate is within half a bin of the truth.
ANGLE_HIST_BIN_DEG = 1e-3


# ----------------------------------------------------------------------------- results
class Undefined:
    """What an accumulator returns for a metric with nothing to average, and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Undefined({self.reason!r})"


class UndefinedMetricError(ValueError):
    """A computation needs a metric that is undefined (``None``), e.g. the Δ against it."""


class MetricResults(dict):
    """``{task: {metric: float | None}}``: ``None`` marks an undefined metric and
    :attr:`undefined` (``{task: {metric: reason}}``) says why. Every float is finite."""

    def __init__(self, values: Mapping[str, Mapping[str, Any]] = (),
                 undefined: Mapping[str, Mapping[str, str]] | None = None) -> None:
        super().__init__({t: dict(v) for t, v in dict(values).items()})
        self.undefined = {t: dict(r) for t, r in dict(undefined or {}).items() if r}


UNDEFINED_KEY = "undefined"   # in a metrics file: {task: {..., "undefined": {metric: reason}}}


def finite_results(values: Mapping[str, Mapping[str, Any]], source: str) -> MetricResults:
    """``values`` (an evaluator's ``compute()``) as :class:`MetricResults`: floats checked
    finite (:class:`NonFiniteError` naming the task and metric otherwise), ``None`` and
    :class:`Undefined` kept as undefined metrics with their reasons."""
    reasons = {t: dict(r) for t, r in getattr(values, "undefined", {}).items()}
    clean: dict[str, dict[str, float | None]] = {}
    for task, metrics in values.items():
        clean[task] = {}
        for name, value in metrics.items():
            if isinstance(value, Undefined):
                reasons.setdefault(task, {})[name] = value.reason
                value = None
            elif value is None:
                reasons.setdefault(task, {}).setdefault(name, "undefined (no reason given)")
            else:
                value = float(value)
                if not math.isfinite(value):
                    raise NonFiniteError(f"{source}: metric {name!r} of task {task!r} is "
                                         f"{value}; a result must be finite (an undefined metric "
                                         f"is None with a reason)")
            clean[task][name] = value
    return MetricResults(clean, reasons)


def write_metrics(results: Mapping[str, Mapping[str, Any]], path) -> None:
    """Write ``{task: {metric: value}}`` as strict JSON, atomically: an undefined metric is
    ``null`` and its task's ``"undefined"`` entry gives the reason (``{"mIoU": "no class has a
    true positive ..."}``); :func:`read_metrics` reads it back."""
    results = finite_results(results, f"metrics for {path}")
    out = {}
    for task, metrics in results.items():
        out[task] = dict(metrics)
        if results.undefined.get(task):
            out[task][UNDEFINED_KEY] = dict(results.undefined[task])
    atomic_write_json(out, path)


def read_metrics(path, recover: str | None = None) -> MetricResults:
    """A metrics file written by :func:`write_metrics` (one-line errors naming the file)."""
    data = read_json(path, "metrics file", recover)
    if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
        raise ValueError(f"metrics file {path} is not {{task: {{metric: value}}}}"
                         + (f"; {recover}" if recover else ""))
    values = {t: {m: v for m, v in metrics.items() if m != UNDEFINED_KEY}
              for t, metrics in data.items()}
    undefined = {t: metrics.get(UNDEFINED_KEY) or {} for t, metrics in data.items()}
    return finite_results(MetricResults(values, undefined), f"metrics file {path}")


def format_metrics(results: Mapping[str, Mapping[str, Any]], digits: int = 4) -> str:
    """One line per task, ``"    seg: mIoU 0.2731, Pixel Acc 0.5812, err 1.402"``; an
    undefined metric reads ``"mIoU undefined (<reason>)"``."""
    reasons = getattr(results, "undefined", {})
    lines = []
    for task, metrics in results.items():
        cells = [f"{name} {value:.{digits}g}" if value is not None else
                 f"{name} undefined ({reasons.get(task, {}).get(name, 'no reason given')})"
                 for name, value in metrics.items()]
        lines.append(f"{task:>8}: " + ", ".join(cells))
    return "\n".join(lines)


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

    def value(self, reason: str = "no batch contributed a value") -> float | Undefined:
        return self.weighted_sum / self.weight if self.weight else Undefined(reason)


class _SegStats:
    """Confusion matrix over pixels with 0 <= gt < C, per-batch pixel accuracy and CE."""

    def __init__(self, num_class: int, ignore_index: int, class_weight: torch.Tensor | None,
                 miou: str, pixel_acc: str) -> None:
        self.num_class, self.ignore_index, self.class_weight = num_class, ignore_index, class_weight
        self.miou, self.pixel_acc = miou, pixel_acc
        self.conf_mat: torch.Tensor | None = None
        self.batch_pixel_acc, self.batch_err = _BatchMean(), _BatchMean()

    @classmethod
    def create(cls, ev: "SceneNetEval", num_class: int) -> "_SegStats":
        return cls(num_class, seg_ignore_index(ev.dataset), ev.seg_class_weight,
                   ev.options["miou"], ev.options["pixel_acc"])

    def update(self, logits: torch.Tensor, gt: torch.Tensor, valid: None = None) -> bool:
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

    def compute(self) -> dict[str, float | Undefined]:
        cm = (self.conf_mat.double().cpu().numpy() if self.conf_mat is not None
              else np.zeros((self.num_class, self.num_class)))
        tp = np.diag(cm)
        union = cm.sum(axis=1) + cm.sum(axis=0) - tp
        # reference: average over classes with TP > 0; present: over classes seen in gt or pred
        counted = tp > 0 if self.miou == "reference" else union > 0
        if counted.any():
            miou = float(np.mean(tp[counted] / union[counted]))
        elif self.miou == "reference" and cm.sum() > 0:
            miou = Undefined("no class has a true positive: the reference's mIoU averages over "
                             "classes with TP > 0 (miou='present' averages over the classes seen)")
        else:
            miou = Undefined("no labelled seg pixel in any batch")
        no_pixel = "no labelled seg pixel in any batch"
        if self.pixel_acc == "reference":
            pixel_acc = self.batch_pixel_acc.value(no_pixel)
        else:
            pixel_acc = float(tp.sum() / cm.sum()) if cm.sum() > 0 else Undefined(no_pixel)
        return {"mIoU": miou, "Pixel Acc": pixel_acc, "err": self.batch_err.value(no_pixel)}


_NO_NORMAL = "no valid normal pixel in any batch"
_NO_DEPTH = "no valid depth pixel in any batch"


class _NormalStats:
    """Angles between normalised prediction and target on valid pixels, pooled over the set."""

    def __init__(self, decode_raw_targets: bool, angle_median: str) -> None:
        self.decode_raw_targets, self.angle_median = decode_raw_targets, angle_median
        self.angle_sum = 0.0
        self.count = 0
        self.within = torch.zeros(len(ANGLE_THRESHOLDS), dtype=torch.long)
        self.angle_chunks: list[np.ndarray] = []
        self.histogram: torch.Tensor | None = None

    @classmethod
    def create(cls, ev: "SceneNetEval", num_class: int) -> "_NormalStats":
        decode = ev.options["normals"] == "decoded" and raw_normals(ev.dataset)
        return cls(decode, ev.options["angle_median"])

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: None = None) -> bool:
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

    def _median(self) -> float | Undefined:
        if self.count == 0:
            return Undefined(_NO_NORMAL)
        if self.angle_median == "exact":
            return float(np.median(np.concatenate(self.angle_chunks)))
        cumulative = torch.cumsum(self.histogram.cpu(), dim=0)
        # np.median's two middle ranks (equal for odd counts), located by their bins' centres.
        ranks = torch.tensor([(self.count - 1) // 2, self.count // 2])
        bins = torch.searchsorted(cumulative, ranks, right=True)
        return float(((bins.double() + 0.5) * ANGLE_HIST_BIN_DEG).mean())

    def compute(self) -> dict[str, float | Undefined]:
        n = self.count
        out = {"Angle Mean": self.angle_sum / n if n else Undefined(_NO_NORMAL),
               "Angle Median": self._median()}
        for name, within in zip(METRIC_NAMES["sn"][2:], self.within.tolist()):
            out[name] = 100.0 * within / n if n else Undefined(_NO_NORMAL)
        return out


class _DepthStats:
    """Batch-weighted abs/rel error over valid pixels and pooled threshold accuracies."""

    def __init__(self, require_positive_pred: bool) -> None:
        self.require_positive_pred = require_positive_pred
        self.abs_err, self.rel_err = _BatchMean(), _BatchMean()
        self.within = torch.zeros(3, dtype=torch.long)
        self.count = 0

    @classmethod
    def create(cls, ev: "SceneNetEval", num_class: int) -> "_DepthStats":
        return cls(ev.options["depth_sigma"] == "positive")

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

    def compute(self) -> dict[str, float | Undefined]:
        out = {"abs_err": self.abs_err.value(_NO_DEPTH), "rel_err": self.rel_err.value(_NO_DEPTH)}
        for name, within in zip(METRIC_NAMES["depth"][2:], self.within.tolist()):
            out[name] = 100.0 * within / self.count if self.count else Undefined(_NO_DEPTH)
        return out


class _MaskedL1Stats:
    """Batch-weighted mean |p - g| over the valid target pixels (keypoint, edge: not 255)."""

    def __init__(self) -> None:
        self.err = _BatchMean()

    @classmethod
    def create(cls, ev: "SceneNetEval", num_class: int) -> "_MaskedL1Stats":
        return cls()

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> bool:
        if not bool(valid.any()):
            return False
        diff = (pred.float().masked_select(valid) - gt.float().masked_select(valid)).abs()
        self.err.add(diff.double().mean(), pred.shape[0])
        return True

    def compute(self) -> dict[str, float | Undefined]:
        return {"err": self.err.value("no valid target pixel in any batch")}


# The accumulator of each evaluator kind a task-table entry names (TaskSpec.evaluator).
EVALUATORS = {"segmentation": _SegStats, "normals": _NormalStats, "depth": _DepthStats,
              "masked_l1": _MaskedL1Stats}


class SceneNetEval:
    """Streaming evaluator with the reference's metric definitions.

    Args:
        dataset: a dataset of the task table (``"nyuv2_3"``, ``"cityscapes"``, ``"taskonomy"``
            or a registered one: :mod:`lib.datasets`).
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
        check_dataset(dataset)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {list(TASKS)}")
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
        if seg_prior_weighted(cfg.DATASET) and "seg" in tasks:
            weight = load_seg_prior(cfg.DATA_ROOT)
        return cls(cfg.DATASET, tasks, num_class, cfg.IMAGE_SHAPE, weight, **options)

    def delta_options(self) -> dict:
        """:func:`delta_mtl`'s options for these tasks: the task table's Δ metrics."""
        return {"metric_names": {t: DELTA_METRICS[t] for t in self.tasks},
                "lower_is_better": dict(LOWER_IS_BETTER)}

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.num_images = 0
        self._stats: dict[str, Any] = {}
        for task, num_class in zip(self.tasks, self.tasks_num_class):
            self._stats[task] = EVALUATORS[TASKS[task].evaluator].create(self, num_class)

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
            spec = TASKS[task]
            key = spec.target_key
            gt = self._target(batch, key, task, pred.device)
            if gt.shape[0] != batch_size:
                raise ValueError(f"batch[{key!r}] has {gt.shape[0]} items but the predictions "
                                 f"have {batch_size}")
            pred = F.interpolate(pred.float(), size=self.image_shape, mode="nearest")
            valid = None
            if spec.valid is not None:
                mask = batch.get("depth_mask")
                valid = spec.valid(gt.float(), self.dataset,
                                   None if mask is None else torch.as_tensor(mask).to(pred.device))
            if not self._stats[task].update(pred, gt, valid):
                names = batch.get("name", "?")
                warnings.warn(f"task {task!r}: no valid target pixel in batch {names}; the "
                              f"batch is left out of that task's metrics", RuntimeWarning)
        self.num_images += batch_size or 0

    def compute(self) -> MetricResults:
        """``{task: {metric: value}}`` over everything added since the last ``reset``: finite
        floats, ``None`` for an undefined metric (the reason in ``.undefined``)."""
        if self.num_images == 0:
            raise RuntimeError("SceneNetEval.compute() called before any update()")
        return finite_results({task: self._stats[task].compute() for task in self.tasks},
                              "SceneNetEval")


class TaskMetrics:
    """Streaming evaluator over user metric functions, for tasks outside the task table.

    ``metrics`` maps each task to ``fn(pred, batch) -> {metric name: value}`` (a scalar tensor
    or float per metric, computed over that batch); :meth:`compute` returns each metric's mean
    over batches weighted by batch size. ``lower_is_better`` ({metric: bool}) records which way
    each metric is better (used by :func:`delta_mtl` through :attr:`directions`).
    """

    def __init__(self, metrics: Mapping[str, Any],
                 lower_is_better: Mapping[str, bool] | None = None) -> None:
        if not metrics:
            raise ValueError("TaskMetrics needs at least one task's metric function")
        bad = [t for t, fn in metrics.items() if not callable(fn)]
        if bad:
            raise TypeError(f"metric function(s) of task(s) {bad} are not callable")
        self.tasks = list(metrics)
        self.metrics = dict(metrics)
        self.directions = dict(lower_is_better or {})
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.num_images = 0
        self._means: dict[str, dict[str, _BatchMean]] = {t: {} for t in self.tasks}

    @torch.no_grad()
    def update(self, preds, batch: Mapping[str, Any]) -> None:
        """Add one batch (``preds`` a list aligned with ``tasks`` or ``{task: tensor}``)."""
        if not isinstance(preds, Mapping):
            if len(preds) != len(self.tasks):
                raise ValueError(f"got {len(preds)} predictions for tasks {self.tasks}")
            preds = dict(zip(self.tasks, preds))
        batch_size = None
        for task in self.tasks:
            if task not in preds:
                raise KeyError(f"predictions have no task {task!r}; got {sorted(preds)}")
            batch_size = int(preds[task].shape[0])
            values = self.metrics[task](preds[task], task_batch(batch, task))
            if not isinstance(values, Mapping):
                raise TypeError(f"metric function of task {task!r} returned "
                                f"{type(values).__name__}; expected {{metric name: value}}")
            for name, value in values.items():
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"metric {name!r} of task {task!r} is {value} on batch "
                                     f"{batch.get('name', '?')}")
                self._means[task].setdefault(name, _BatchMean()).add(value, batch_size)
        self.num_images += batch_size or 0

    def compute(self) -> MetricResults:
        """``{task: {metric: mean}}`` over everything added since the last ``reset``."""
        if self.num_images == 0:
            raise RuntimeError("TaskMetrics.compute() called before any update()")
        return finite_results({t: {name: mean.value() for name, mean in means.items()}
                               for t, means in self._means.items()}, "TaskMetrics")


def metrics_from_config(cfg, tasks: Sequence[str] | None = None, **options: str):
    """The streaming evaluator of ``cfg`` for ``tasks`` (default: all of ``cfg.TASKS``):
    the ``evaluator`` of ``cfg.DATASET``'s spec with its ``metric_options`` (the min-max ones:
    NYUv2-MTAN: ``averaging``, ``normal_mask``; CIFAR-100 domains: none), or
    :class:`SceneNetEval` for a dataset of the task table (options ``miou``, ``pixel_acc``,
    ``normals``, ``depth_sigma``, ``angle_median``). Every evaluator
    has ``reset`` / ``update(preds, batch)`` / ``compute`` and ``delta_options()``; an option
    the evaluator does not take is a one-line ValueError."""
    spec = dataset_spec(cfg.DATASET)
    if spec.evaluator is None:
        cls, allowed = SceneNetEval, OPTIONS
    else:
        cls, allowed = spec.get("evaluator"), spec.get("metric_options") or {}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"metric option(s) {unknown} do not apply to {cfg.DATASET}; its "
                         f"options: {sorted(allowed) or 'none'}")
    tasks = list(cfg.TASKS) if tasks is None else list(tasks)
    missing = [t for t in tasks if t not in cfg.TASKS]
    if missing:
        raise ValueError(f"task(s) {missing} not in the config's TASKS {list(cfg.TASKS)}")
    return cls.from_config(cfg, tasks, **options)


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable[Mapping[str, Any]],
             evaluator: SceneNetEval | TaskMetrics,
             device: torch.device | str | None = None, max_batches: int | None = None,
             progress: bool = True,
             autocast: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Run ``net`` over ``loader`` in eval mode and return ``evaluator``'s metrics.

    ``autocast`` (e.g. ``torch.bfloat16``) runs the forward pass under ``torch.autocast``;
    the outputs are cast to float32 before the evaluator sees them.

    ``device`` defaults to the device of the network's parameters; the network's train/eval
    mode is restored afterwards. A network with task names (``SceneNet(..., tasks=...)``) may
    have more tasks than the evaluator: its outputs are matched by name. Batches of either
    form (``lib.tasks.TaskBatches`` included) are run with ``lib.models.task_outputs``.
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
        for i, batch in enumerate(tqdm(loader, total=total, desc="evaluate", disable=not progress)):
            if max_batches is not None and i >= max_batches:
                break
            batch = batch_to(batch, device)
            inputs = network_input(batch)
            with (torch.autocast(device.type, dtype=autocast) if autocast is not None
                  else contextlib.nullcontext()):
                if getattr(net, "tasks", None) is not None:
                    preds = task_outputs(net, inputs)  # the evaluator may cover fewer tasks
                else:
                    preds = net(inputs)
            if autocast is not None:
                preds = ({t: p.float() for t, p in preds.items()} if isinstance(preds, dict)
                         else [p.float() for p in preds])
            outputs = preds if isinstance(preds, dict) else \
                {f"output {i}": p for i, p in enumerate(preds)}
            check_finite_tensors(outputs, f"the network's outputs on batch "
                                          f"{batch.get('name', i)}")
            evaluator.update(preds, batch)
    finally:
        net.train(was_training)
    return evaluator.compute()


def _delta_terms(metrics: Mapping[str, Mapping[str, float]],
                 dense_metrics: Mapping[str, Mapping[str, float]], task: str,
                 metric_names: Mapping[str, Sequence[str]] | None,
                 directions: Mapping[str, bool]) -> list[float]:
    names = (metric_names or DELTA_METRICS).get(task)
    if names is None:
        raise ValueError(f"no delta metrics defined for task {task!r}")
    if task not in metrics or task not in dense_metrics:
        side = "metrics" if task not in metrics else "dense_metrics"
        raise KeyError(f"task {task!r} missing from {side}")
    terms = []
    for name in names:
        if name not in directions:
            raise ValueError(f"metric {name!r} of task {task!r} has no entry in LOWER_IS_BETTER "
                             f"(pass lower_is_better={{{name!r}: True|False}})")
        for side, values in (("metrics", metrics), ("dense_metrics", dense_metrics)):
            if name not in values[task]:
                raise KeyError(f"{side}[{task!r}] has no metric {name!r}; "
                               f"got {sorted(values[task])}")
        for side, values in (("metrics", metrics), ("dense_metrics", dense_metrics)):
            if values[task][name] is None:
                raise UndefinedMetricError(f"{side} {task} {name} is undefined: the relative "
                                           f"change is undefined")
        value, dense = float(metrics[task][name]), float(dense_metrics[task][name])
        if dense == 0:
            raise ZeroDivisionError(f"dense {task} {name} is 0: the relative change is undefined")
        sign = -1.0 if directions[name] else 1.0
        terms.append(sign * (value - dense) / dense)
    return terms


def per_task_delta(metrics: Mapping[str, Mapping[str, float]],
                   dense_metrics: Mapping[str, Mapping[str, float]],
                   tasks: Sequence[str] | None = None,
                   metric_names: Mapping[str, Sequence[str]] | None = None,
                   lower_is_better: Mapping[str, bool] | None = None) -> dict[str, float]:
    """Per-task Δ_t = 100 / |M_t| Σ_m (-1)^{l_m} (M - M_dense) / M_dense, in percent.

    Positive means better than dense. ``tasks`` defaults to the tasks of ``metrics``;
    ``metric_names`` ({task: names}) defaults to :data:`DELTA_METRICS`; ``lower_is_better``
    ({metric: bool}) adds the directions of metrics outside the task table (e.g. a
    :class:`TaskMetrics`' ``directions``).
    """
    directions = {**LOWER_IS_BETTER, **dict(lower_is_better or {})}
    if tasks is None:
        tasks = [t for t in TASK_ORDER if t in metrics] + [t for t in metrics if t not in TASK_ORDER]
    out = {}
    for task in tasks:
        terms = _delta_terms(metrics, dense_metrics, task, metric_names, directions)
        out[task] = 100.0 * sum(terms) / len(terms)
    return out


def delta_or_none(metrics: Mapping[str, Mapping[str, float]],
                  dense_metrics: Mapping[str, Mapping[str, float]], tasks: Sequence[str],
                  **options) -> float | None:
    """:func:`delta_mtl` over ``tasks``; None (shown empty in tables), with a warning saying
    why, when a dense metric is 0 or a metric it needs is undefined, so the relative change is
    undefined (a barely trained model). ``options`` are :func:`delta_mtl`'s ``metric_names`` /
    ``lower_is_better``."""
    try:
        return delta_mtl(metrics, {t: dense_metrics[t] for t in tasks}, tasks=list(tasks),
                         **options)
    except (ZeroDivisionError, UndefinedMetricError) as exc:
        warnings.warn(f"no delta vs dense for {'+'.join(tasks)}: {exc}", stacklevel=2)
        return None


def delta_mtl(metrics: Mapping[str, Mapping[str, float]],
              dense_metrics: Mapping[str, Mapping[str, float]],
              tasks: Sequence[str] | None = None,
              metric_names: Mapping[str, Sequence[str]] | None = None,
              lower_is_better: Mapping[str, bool] | None = None) -> float:
    """Multi-task Δ (Maninis et al.; Auto-Lambda's ΔMTL) in percent: the mean of
    :func:`per_task_delta` over ``tasks``. Positive means better than the dense model."""
    per_task = per_task_delta(metrics, dense_metrics, tasks, metric_names, lower_is_better)
    if not per_task:
        raise ValueError("delta_mtl needs at least one task")
    return sum(per_task.values()) / len(per_task)
