"""Metrics of the min-max framework's benchmarks: NYUv2 in MTAN's format and CIFAR-100 domains.

:class:`NYUv2MTANEval` accumulates, batch by batch, the numbers MTAN / Auto-Lambda / the
min-max code print for NYUv2 (``prune_apgda/utils.py``):

- ``seg``: ``mIoU`` and ``Pixel Acc`` (fractions) from one confusion matrix over the split,
  labels outside ``0..C-1`` (the ignore label -1) left out;
- ``depth``: ``abs_err`` = mean |p - g| and ``rel_err`` = mean |p - g| / g over pixels with
  g != 0;
- ``normal``: the angle between prediction and target in degrees, over valid pixels:
  ``Angle Mean``, ``Angle Median``, and ``Angle 11.25`` / ``Angle 22.5`` / ``Angle 30`` = the
  percentage of pixels with an angle *below* the threshold (the reference prints fractions).

Defaults follow the workspace's rule (docs/METRICS.md): a *definition* of the reference stays
the default, so numbers compare with published ones, and the other definition is one option
away; a reference *bug* is corrected by default and stays available under a clear name.

- ``averaging="batch"`` (default, a definition: the reference's): depth and normal metrics are
  each batch's value, then the plain mean over batches (every batch weighs the same whatever
  its size or valid count, and the "median" is the mean of per-batch medians).
  ``averaging="pixel"``: every valid pixel of the split counts once and the median is the
  exact median of all angles (one float32 per valid pixel kept on the CPU: ~290 MB for
  NYUv2's 654 val images at 288x384).
- ``normal_mask="nonzero"`` (default, a correction): a normal target is valid unless it is
  (0, 0, 0). ``normal_mask="sum"`` is the reference's bug: valid where the components' *sum*
  is non-zero, which also drops valid normals whose components happen to sum to 0, e.g.
  (0.71, -0.71, 0).
- mIoU averages the classes that occur in the target or the prediction; the reference's plain
  mean is NaN as soon as one class occurs in neither (on NYUv2's val split all 13 occur, and
  then both agree). A batch without any valid pixel for a task is left out of that task's
  numbers with a ``RuntimeWarning``; a task with no valid pixel at all raises in ``compute``.

:func:`delta_vs_single_task` is the min-max code's summary ("All"): the mean over tasks of the
relative gain over single-task baselines, in percent (the reference prints the fraction):
``100 / T * sum_t s_t (M_t - B_t) / B_t`` with ``M_t`` = mIoU (s = +1), depth abs_err (-1),
normal Angle Mean (-1), and ``B`` = :data:`NYUV2_SINGLE_TASK`, the reference's constants.

:class:`DomainAccuracy` is the CIFAR-100 side: per-domain accuracy (``Acc``, fraction, pooled
over images) and :func:`mean_accuracy`, the reference's "All" for CIFAR-100.

Both are streaming evaluators with the protocol of :mod:`lib.metrics` (``reset`` /
``update(preds, batch)`` / ``compute``, ``preds`` a list aligned with ``tasks`` or a
``{task: tensor}`` dict), so ``lib.metrics.evaluate`` runs them; ``delta_options`` are the
metric names and directions the multi-task Δ vs a dense model uses for them.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import torch

from lib.tasks import task_batch

NYUV2_MTAN_TASKS = ("seg", "depth", "normal")
NYUV2_MTAN_NUM_CLASS = 13
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "seg": ("mIoU", "Pixel Acc"),
    "depth": ("abs_err", "rel_err"),
    "normal": ("Angle Mean", "Angle Median", "Angle 11.25", "Angle 22.5", "Angle 30"),
}
LOWER_IS_BETTER = {"mIoU": False, "Pixel Acc": False, "abs_err": True, "rel_err": True,
                   "Angle Mean": True, "Angle Median": True, "Angle 11.25": False,
                   "Angle 22.5": False, "Angle 30": False, "Acc": False}
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
# Single-task NYUv2 results the min-max code measures Δ against (utils.py, TaskMetric).
NYUV2_SINGLE_TASK = {"seg": 0.4337, "depth": 0.5224, "normal": 22.40}
DELTA_METRIC = {"seg": "mIoU", "depth": "abs_err", "normal": "Angle Mean"}
OPTIONS = {"averaging": ("batch", "pixel"), "normal_mask": ("nonzero", "sum")}
DOMAIN_METRIC = "Acc"


def _option(name: str, value: str) -> str:
    if value not in OPTIONS[name]:
        raise ValueError(f"{name}={value!r} is not a metric option; expected one of "
                         f"{OPTIONS[name]}")
    return value


def _aligned(preds, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """``preds`` (a list aligned with ``tasks`` or ``{task: tensor}``) as ``{task: tensor}``."""
    if isinstance(preds, Mapping):
        missing = [t for t in tasks if t not in preds]
        if missing:
            raise KeyError(f"predictions have no task(s) {missing}; got {sorted(preds)}")
        return {t: preds[t] for t in tasks}
    if len(preds) != len(tasks):
        raise ValueError(f"got {len(preds)} predictions for tasks {list(tasks)}")
    return dict(zip(tasks, preds))


def _target(batch: Mapping, task: str, pred: torch.Tensor, channels: int) -> torch.Tensor:
    key = task
    if key not in batch:
        raise KeyError(f"batch has no {key!r} target for task {task!r}; keys: {sorted(batch)}")
    target = batch[key].to(pred.device)
    if task == "seg" and target.dim() == 3:
        target = target[:, None]
    expected = (pred.shape[0], channels, *pred.shape[-2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{task} target has shape {tuple(target.shape)}; expected {expected} "
                         f"(the prediction's batch and size)")
    return target


class _Mean:
    """Pixel-pooled or batch-averaged means of named per-pixel quantities."""

    def __init__(self, averaging: str):
        self.averaging = averaging
        self.sums: dict[str, float] = {}
        self.count = 0          # pixels (pixel) or batches (batch)

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        n = next(iter(values.values())).numel()
        for name, v in values.items():
            total = float(v.double().sum())
            self.sums[name] = self.sums.get(name, 0.0) + (total if self.averaging == "pixel"
                                                          else total / n)
        self.count += n if self.averaging == "pixel" else 1

    def mean(self, name: str) -> float:
        return self.sums[name] / self.count


class NYUv2MTANEval:
    """Streaming NYUv2 (MTAN format) metrics for ``tasks`` (see the module docstring).

    ``update(preds, batch)``: ``preds`` aligned with ``tasks`` or ``{task: tensor}`` (seg
    logits N x C x H x W, depth N x 1 x H x W, normals N x 3 x H x W); ``batch`` the loader's
    dict (``seg``, ``depth``, ``normal`` at the predictions' size). ``compute()`` ->
    ``{task: {metric: float}}``.
    """

    def __init__(self, tasks: Sequence[str] = NYUV2_MTAN_TASKS,
                 num_class: int = NYUV2_MTAN_NUM_CLASS, averaging: str = "batch",
                 normal_mask: str = "nonzero"):
        unknown = [t for t in tasks if t not in METRIC_NAMES]
        if unknown or not tasks:
            raise ValueError(f"NYUv2-MTAN metrics are defined for {list(METRIC_NAMES)}, got "
                             f"{list(tasks)}")
        self.tasks = list(tasks)
        self.num_class = int(num_class)
        self.averaging = _option("averaging", averaging)
        self.normal_mask = _option("normal_mask", normal_mask)
        self.reset()

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str] | None = None,
                    **options: str) -> "NYUv2MTANEval":
        """The evaluator of ``cfg`` (seg classes from ``TASKS_NUM_CLASS``) for ``tasks``;
        ``normal_mask`` defaults to the config's ``NORMAL_MASK`` (the loss's rule too)."""
        tasks = list(cfg.TASKS) if tasks is None else list(tasks)
        options.setdefault("normal_mask", getattr(cfg, "NORMAL_MASK", "nonzero"))
        num_class = (cfg.TASKS_NUM_CLASS[list(cfg.TASKS).index("seg")] if "seg" in cfg.TASKS
                     else NYUV2_MTAN_NUM_CLASS)
        return cls(tasks, num_class, **options)

    def delta_options(self) -> dict:
        """Δ vs dense over every reported metric (Auto-Lambda's Δ_MTL over NYUv2)."""
        return {"metric_names": {t: METRIC_NAMES[t] for t in self.tasks},
                "lower_is_better": dict(LOWER_IS_BETTER)}

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None
        self.depth = _Mean(self.averaging)
        self.normal = _Mean(self.averaging)
        self.angles: list[np.ndarray] = []        # pixel averaging: every valid angle
        self.batch_medians: list[float] = []      # batch averaging
        self.batches = 0

    def update(self, preds, batch: Mapping) -> None:
        preds = _aligned(preds, self.tasks)
        self.batches += 1
        with torch.no_grad():
            for task, pred in preds.items():
                getattr(self, f"_update_{task}")(pred.detach(), batch)

    def _skip(self, task: str, batch: Mapping) -> None:
        names = batch.get("name")
        warnings.warn(f"batch {self.batches} ({names}) has no valid {task} pixel; left out of "
                      f"the {task} metrics", RuntimeWarning, stacklevel=3)

    def _update_seg(self, pred: torch.Tensor, batch: Mapping) -> None:
        n = self.num_class
        if pred.shape[1] != n:
            raise ValueError(f"seg prediction has {pred.shape[1]} channels; expected {n}")
        target = _target(batch, "seg", pred, 1).long()
        label = pred.argmax(1, keepdim=True)
        valid = (target >= 0) & (target < n)
        counts = torch.bincount(target[valid] * n + label[valid], minlength=n * n)
        counts = counts.reshape(n, n).cpu()
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def _update_depth(self, pred: torch.Tensor, batch: Mapping) -> None:
        target = _target(batch, "depth", pred, 1).float()
        valid = target != 0
        if not valid.any():
            return self._skip("depth", batch)
        p, g = pred.float()[valid], target[valid]
        err = (p - g).abs()
        self.depth.add({"abs_err": err, "rel_err": err / g})

    def _update_normal(self, pred: torch.Tensor, batch: Mapping) -> None:
        target = _target(batch, "normal", pred, 3).float()
        valid = (target.sum(1) != 0) if self.normal_mask == "sum" else (target != 0).any(1)
        if not valid.any():
            return self._skip("normal", batch)
        # float64: acos is ill-conditioned near 0 degrees (float32 cosines give ~0.02 degree)
        cosine = (pred.double() * target.double()).sum(1)[valid].clamp(-1, 1)
        angle = torch.rad2deg(torch.acos(cosine))
        values = {"Angle Mean": angle}
        values.update({f"Angle {t:g}": (angle < t).double() * 100 for t in ANGLE_THRESHOLDS})
        self.normal.add(values)
        if self.averaging == "pixel":
            self.angles.append(angle.cpu().numpy().astype(np.float32))
        else:
            self.batch_medians.append(float(np.median(angle.cpu().numpy())))

    def compute(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for task in self.tasks:
            out[task] = getattr(self, f"_compute_{task}")()
        return out

    def _compute_seg(self) -> dict[str, float]:
        if self.confusion is None or int(self.confusion.sum()) == 0:
            raise ValueError("no labelled seg pixel was evaluated")
        h = self.confusion.double()
        tp = h.diag()
        union = h.sum(0) + h.sum(1) - tp
        present = union > 0
        return {"mIoU": float((tp[present] / union[present]).mean()),
                "Pixel Acc": float(tp.sum() / h.sum())}

    def _compute_depth(self) -> dict[str, float]:
        if self.depth.count == 0:
            raise ValueError("no valid depth pixel was evaluated")
        return {name: self.depth.mean(name) for name in METRIC_NAMES["depth"]}

    def _compute_normal(self) -> dict[str, float]:
        if self.normal.count == 0:
            raise ValueError("no valid normal pixel was evaluated")
        median = (float(np.median(np.concatenate(self.angles))) if self.averaging == "pixel"
                  else float(np.mean(self.batch_medians)))
        out = {"Angle Mean": self.normal.mean("Angle Mean"), "Angle Median": median}
        out.update({f"Angle {t:g}": self.normal.mean(f"Angle {t:g}") for t in ANGLE_THRESHOLDS})
        return out


def delta_vs_single_task(metrics: Mapping[str, Mapping[str, float]],
                         single_task: Mapping[str, float] = NYUV2_SINGLE_TASK) -> float:
    """The min-max code's Δ in percent over the tasks in ``metrics`` (module docstring)."""
    if not metrics:
        raise ValueError("delta_vs_single_task needs at least one task")
    terms = []
    for task, values in metrics.items():
        if task not in DELTA_METRIC or task not in single_task:
            raise ValueError(f"no single-task baseline for task {task!r}; have "
                             f"{sorted(single_task)}")
        name = DELTA_METRIC[task]
        base = float(single_task[task])
        value = float(values[name])
        if not math.isfinite(value) or base == 0:
            raise ValueError(f"{task} {name} = {value} against baseline {base}: Δ undefined")
        sign = -1.0 if LOWER_IS_BETTER[name] else 1.0
        terms.append(sign * (value - base) / base)
    return 100.0 * sum(terms) / len(terms)


class DomainAccuracy:
    """Per-domain classification accuracy, pooled over images.

    ``update(preds, batch)`` (the streaming protocol): ``preds`` ``{task: logits}`` or a list
    aligned with ``tasks``, ``batch`` the step's ``TaskBatches`` (or one dict for all tasks)
    with ``label``; ``add(task, logits, labels)`` adds one domain's batch directly.
    ``compute() -> {task: {"Acc": fraction}}``.
    """

    def __init__(self, tasks: Sequence[str]):
        if not tasks:
            raise ValueError("DomainAccuracy needs at least one task")
        self.tasks = list(tasks)
        self.reset()

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str] | None = None) -> "DomainAccuracy":
        return cls(list(cfg.TASKS) if tasks is None else list(tasks))

    def reset(self) -> None:
        self.correct = dict.fromkeys(self.tasks, 0)
        self.total = dict.fromkeys(self.tasks, 0)

    def delta_options(self) -> dict:
        """Δ vs dense over each domain's accuracy."""
        return {"metric_names": {t: (DOMAIN_METRIC,) for t in self.tasks},
                "lower_is_better": {DOMAIN_METRIC: False}}

    def update(self, preds, batch: Mapping) -> None:
        for task, logits in _aligned(preds, self.tasks).items():
            part = task_batch(batch, task)
            if "label" not in part:
                raise KeyError(f"batch of task {task!r} has no 'label'; keys: {sorted(part)}")
            self.add(task, logits, part["label"])

    def add(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if task not in self.correct:
            raise KeyError(f"unknown task {task!r}; tasks: {self.tasks}")
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"{task}: logits {tuple(logits.shape)} and labels "
                             f"{tuple(labels.shape)} must be N x classes and N")
        with torch.no_grad():
            self.correct[task] += int((logits.argmax(1) == labels.to(logits.device)).sum())
        self.total[task] += int(labels.numel())

    def compute(self) -> dict[str, dict[str, float]]:
        empty = [t for t in self.tasks if self.total[t] == 0]
        if empty:
            raise ValueError(f"no image was evaluated for task(s) {empty}")
        return {t: {DOMAIN_METRIC: self.correct[t] / self.total[t]} for t in self.tasks}


def mean_accuracy(metrics: Mapping[str, Mapping[str, float]]) -> float:
    """The mean of the domains' accuracies (the min-max code's "All" for CIFAR-100)."""
    if not metrics:
        raise ValueError("mean_accuracy needs at least one task")
    return float(np.mean([m[DOMAIN_METRIC] for m in metrics.values()]))
