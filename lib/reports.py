"""Result tables (CSV + Markdown) and figures for CUT experiments.

A *row* is a flat dict describing one model, as :func:`results_row` builds it::

    {"method": "CUT", "tasks": "seg+sn", "nominal_sparsity": 90, "measured_sparsity": 88.7,
     "seg/mIoU": 0.27, "seg/Pixel Acc": 0.58, ..., "delta": -1.3}

Metric columns are named ``"<task>/<metric>"`` with the metric names of :mod:`lib.metrics`.
Every writer returns the path(s) it wrote and writes atomically (never a half-written file).
Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot state), so they work
headless and inside notebooks alike.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure

from lib.datasets import dataset_spec
from lib.metrics import (LOWER_IS_BETTER, METRIC_NAMES, TASK_ORDER, delta_or_none,
                         metrics_from_config)
from lib.models import task_outputs
from lib.tasks import (IMG_MEAN_BGR, NORMAL_INVALID_VALUE, TARGET_IGNORE_VALUE, TASKS,
                       TaskBatches, batch_to, depth_valid, network_input, raw_normals)
from lib.utils import atomic_write, atomic_write_text

BASE_COLUMNS = ("method", "tasks", "nominal_sparsity", "measured_sparsity")
DELTA_COLUMN = "delta"
COLUMN_LABELS = {"method": "method", "tasks": "selected tasks",
                 "nominal_sparsity": "nominal sparsity", "measured_sparsity": "measured sparsity",
                 DELTA_COLUMN: "Δ vs dense (%)"}
MISSING_COLOR = (0.5, 0.5, 0.5)


def metric_column(task: str, metric: str) -> str:
    """The column name of one task metric, e.g. ``"seg/mIoU"``."""
    return f"{task}/{metric}"


def split_metric_column(column: str) -> tuple[str, str] | None:
    """``"seg/mIoU"`` -> ``("seg", "mIoU")``; ``None`` for a column that is no task metric
    (every ``<task>/<metric>`` column is one, whether or not the task table knows the task)."""
    task, sep, metric = column.partition("/")
    return (task, metric) if sep and task and metric else None


def results_row(method: str, tasks: Sequence[str] | str, nominal_sparsity: float | None,
                measured_sparsity: float | None, metrics: Mapping[str, Mapping[str, float]],
                delta: float | None = None, **extra: Any) -> dict[str, Any]:
    """One table row from ``SceneNetEval.compute()``-style ``metrics`` ({task: {metric: v}})."""
    row: dict[str, Any] = {
        "method": method,
        "tasks": tasks if isinstance(tasks, str) else "+".join(tasks),
        "nominal_sparsity": nominal_sparsity, "measured_sparsity": measured_sparsity}
    for task, values in metrics.items():
        for metric, value in values.items():   # None: undefined (an empty cell)
            row[metric_column(task, metric)] = None if value is None else float(value)
    row[DELTA_COLUMN] = delta
    row.update(extra)
    return row


def _metric_sort_key(column: str) -> tuple[int, int]:
    """Task-table tasks in table order, their metrics in report order; other columns after
    them, in first-seen order (the sort is stable)."""
    task, metric = split_metric_column(column)
    if task not in METRIC_NAMES:
        return len(TASK_ORDER), 0
    names = METRIC_NAMES[task]
    return TASK_ORDER.index(task), names.index(metric) if metric in names else len(names)


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Paper-table column order: base columns, task metrics (task order, reference metric
    order), Δ, then any other keys in first-seen order."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    metrics = sorted((c for c in seen if split_metric_column(c)), key=_metric_sort_key)
    base = [c for c in BASE_COLUMNS if c in seen]
    delta = [DELTA_COLUMN] if DELTA_COLUMN in seen else []
    rest = [c for c in seen if c not in base and c not in metrics and c not in delta]
    return base + metrics + delta + rest


def _check_rows(rows: Sequence[Mapping[str, Any]], what: str) -> None:
    if not rows:
        raise ValueError(f"{what}: no rows given")
    for i, row in enumerate(rows):
        if "method" not in row:
            raise ValueError(f"{what}: row {i} has no 'method' key; keys: {sorted(row)}")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return float_format.format(float(value))
    return str(value)


def _markdown_header(column: str) -> str:
    parsed = split_metric_column(column)
    if parsed is None:
        return COLUMN_LABELS.get(column, column)
    task, metric = parsed
    arrow = {True: " ↓", False: " ↑"}.get(LOWER_IS_BETTER.get(metric), "")
    return f"{task} {metric}{arrow}"


def write_results_table(rows: Sequence[Mapping[str, Any]], path_stem: str | os.PathLike,
                        columns: Sequence[str] | None = None,
                        float_format: str = "{:.4f}") -> tuple[Path, Path]:
    """Write ``<path_stem>.csv`` (full precision) and ``<path_stem>.md`` (``float_format``).

    ``columns`` fixes the order (default :func:`table_columns`); a value a row lacks is left
    empty (CSV) or shown as ``–`` (Markdown). Returns ``(csv_path, md_path)``.
    """
    _check_rows(rows, "write_results_table")
    columns = table_columns(rows) if columns is None else list(columns)
    present = set().union(*(row.keys() for row in rows))
    unknown = [c for c in columns if c not in present]
    if unknown:
        raise ValueError(f"write_results_table: column(s) {unknown} appear in no row; "
                         f"row keys: {sorted(present)}")
    stem = Path(path_stem)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), "{!r}") for c in columns])
    csv_path = atomic_write_text(buffer.getvalue(), stem.with_name(stem.name + ".csv"))

    lines = ["| " + " | ".join(_markdown_header(c) for c in columns) + " |",
             "|" + "|".join("---" if c in ("method", "tasks") else "---:" for c in columns) + "|"]
    for row in rows:
        cells = [("–" if row.get(c) is None else _cell(row[c], float_format)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    md_path = atomic_write_text("\n".join(lines) + "\n", stem.with_name(stem.name + ".md"))
    return csv_path, md_path


# ------------------------------------------------------------------------------------ figures

def _save_figure(fig: Figure, out_png: str | os.PathLike, dpi: int = 100) -> Path:
    return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi,
                                                          bbox_inches="tight"))


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def group_into_lines(rows: Sequence[Mapping[str, Any]],
           skip_method: str | None = None) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped into plot lines: one per method, or per (method, selected tasks) when a
    method was run on several task selections."""
    selections: dict[str, set] = {}
    for row in rows:
        selections.setdefault(row["method"], set()).add(str(row.get("tasks")))
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["method"] == skip_method:
            continue
        label = row["method"]
        if len(selections[label]) > 1:
            label = f"{label} [{row.get('tasks')}]"
        lines.setdefault(label, []).append(row)
    return lines


def _series(rows: Sequence[Mapping[str, Any]], x: str,
            column: str) -> tuple[list[float], list[float]]:
    points = []
    for row in rows:
        if _is_missing(row.get(column)):
            continue
        if _is_missing(row.get(x)):
            raise ValueError(f"row of method {row['method']!r} has {column!r} but no {x!r} value")
        points.append((float(row[x]), float(row[column])))
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def _reference_value(rows, reference_method: str | None, column: str) -> float | None:
    for row in rows:
        if row["method"] == reference_method and not _is_missing(row.get(column)):
            return float(row[column])
    return None


def plot_metric_vs_sparsity(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike,
                            metrics: Sequence[str] | None = None, x: str = "measured_sparsity",
                            reference_method: str | None = "dense",
                            title: str | None = None) -> Path:
    """One subplot per task-metric column, one line per method against sparsity ``x``
    (per method and task selection when a method was run on several selections).

    Rows of ``reference_method`` (the dense model) are drawn as a dashed horizontal line.
    ``metrics`` lists metric columns (``"seg/mIoU"``); default: every metric column present.
    """
    _check_rows(rows, "plot_metric_vs_sparsity")
    columns = list(metrics) if metrics is not None else [
        c for c in table_columns(rows) if split_metric_column(c)]
    if not columns:
        raise ValueError("plot_metric_vs_sparsity: the rows hold no '<task>/<metric>' column")
    nrows, ncols = _grid(len(columns))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    lines = group_into_lines(rows, skip_method=reference_method)
    for ax, column in zip(axes, columns):
        for label, line_rows in lines.items():
            xs, ys = _series(line_rows, x, column)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        ref = _reference_value(rows, reference_method, column)
        if ref is not None:
            ax.axhline(ref, color="black", linestyle="--", linewidth=1, label=reference_method)
        parsed = split_metric_column(column)
        ax.set_title(_markdown_header(column) if parsed else column)
        ax.set_xlabel(COLUMN_LABELS.get(x, x))
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6),
                   bbox_to_anchor=(0.5, 1.0 + 0.02 / nrows))
    if title:
        fig.suptitle(title, y=1.0 + 0.08 / nrows)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_delta_vs_sparsity(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike,
                           x: str = "measured_sparsity", column: str = DELTA_COLUMN,
                           title: str | None = None,
                           reference_method: str | None = "dense") -> Path:
    """Δ vs dense (percent) against sparsity, one line per method; 0 marks the dense model.

    Rows of ``reference_method`` are not drawn as a line (their Δ is 0 by definition), so each
    method keeps the colour it has in :func:`plot_metric_vs_sparsity`."""
    _check_rows(rows, "plot_delta_vs_sparsity")
    if not any(not _is_missing(row.get(column)) for row in rows):
        raise ValueError(f"plot_delta_vs_sparsity: no row has a {column!r} value")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for label, line_rows in group_into_lines(rows, skip_method=reference_method).items():
        xs, ys = _series(line_rows, x, column)
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(COLUMN_LABELS.get(x, x))
    ax.set_ylabel(COLUMN_LABELS.get(column, column))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:   # rows without a Δ (undefined) draw no line
        ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_loss_curves(history: Mapping[str, Sequence[tuple[float, float]]],
                     out_png: str | os.PathLike, log_y: bool | None = None,
                     title: str | None = None) -> Path:
    """One line per named series of ``(step, value)`` pairs.

    ``log_y=None`` picks a log axis when every value is positive and they span > 2 decades.
    """
    if not history:
        raise ValueError("plot_loss_curves: history is empty")
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    values = []
    for name, points in history.items():
        points = list(points)
        if not points or any(len(p) != 2 for p in points):
            raise ValueError(f"plot_loss_curves: series {name!r} must be a non-empty list of "
                             f"(step, value) pairs")
        steps, ys = zip(*points)
        ax.plot(steps, ys, label=name)
        values += [float(v) for v in ys if math.isfinite(float(v))]
    if log_y is None:
        log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 100
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_figure(fig, out_png)


# ------------------------------------------------------------------------ prediction grid

def segmentation_palette(num_colors: int = 256) -> np.ndarray:
    """A fixed, distinct colour per class (``num_colors x 3`` in [0, 1]).

    Class c gets colour c + 1 of the bit-interleaved PASCAL-style code, so no class is black;
    black is kept for ignored pixels.
    """
    palette = np.zeros((num_colors, 3))
    for c in range(num_colors):
        code, rgb = c + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        palette[c] = rgb
    return palette / 255.0


def _as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()


def _image_rgb(image: torch.Tensor, mean_bgr: Sequence[float], dataset: str) -> np.ndarray:
    """An input image as H x W x 3 RGB in [0, 1], undoing its loader's encoding: the dataset
    spec's ``image_to_rgb`` (MTAN's NYUv2 ``2 x RGB - 1``, CIFAR-100's standardised RGB), else
    BGR minus ``mean_bgr`` (0..255)."""
    x = image.float().numpy()
    spec = dataset_spec(dataset)
    if spec.image_to_rgb is not None:
        rgb = spec.get("image_to_rgb")(x)
    else:
        rgb = (x + np.asarray(mean_bgr, dtype=np.float32)[:, None, None])[::-1] / 255.0
    return np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0)


def _seg_rgb(labels: np.ndarray, num_class: int) -> np.ndarray:
    palette = segmentation_palette(max(num_class, 1))
    valid = (labels >= 0) & (labels < num_class)
    out = np.zeros(labels.shape + (3,))
    out[valid] = palette[labels[valid].astype(int)]
    return out


def _normal_rgb(vectors: np.ndarray, raw_encoded: bool, valid: np.ndarray) -> np.ndarray:
    """Unit direction per pixel as colour; raw-encoded (0..255) vectors are directions in the
    positive octant, so they are shown as is, decoded ones through (n + 1) / 2."""
    v = vectors.transpose(1, 2, 0)
    v = v / np.maximum(np.linalg.norm(v, axis=2, keepdims=True), 1e-12)
    rgb = np.clip(v, 0.0, 1.0) if raw_encoded else (v + 1.0) / 2.0
    rgb[~valid] = MISSING_COLOR
    return rgb


def _scalar_rgb(values: np.ndarray, valid: np.ndarray, cmap: str, vmin: float,
                vmax: float) -> np.ndarray:
    scale = max(vmax - vmin, 1e-12)
    rgb = colormaps[cmap](np.clip((values - vmin) / scale, 0.0, 1.0))[..., :3]
    rgb[~valid] = MISSING_COLOR
    return rgb


def _target_for(targets: Mapping[str, Any], task: str) -> torch.Tensor:
    key = TASKS[task].target_key if task in TASKS else task
    for name in (key, task):
        if name in targets:
            return _as_tensor(targets[name])
    raise KeyError(f"plot_prediction_grid: targets have no key {key!r} for task {task!r}; "
                   f"keys: {sorted(targets)}")


# How each figure-panel kind a task-table entry names (TaskSpec.panel) draws one sample's
# prediction and ground truth: (pred C x H x W at the gt size, gt, dataset, depth_mask 1 x H x W).
def _labels_panel(pred, gt, dataset, depth_mask):
    num_class = pred.shape[0]
    return (_seg_rgb(pred.argmax(0).numpy(), num_class),
            _seg_rgb(gt[0].numpy().astype(np.int64), num_class))


def _normals_panel(pred, gt, dataset, depth_mask):
    raw = raw_normals(dataset)
    g = gt.float().numpy()
    # raw encoding: (255, 255, 255) is the invalid marker; decoded normals: (0, 0, 0) is
    valid_gt = ~(g == NORMAL_INVALID_VALUE).all(axis=0) if raw else (g != 0).any(axis=0)
    return (_normal_rgb(pred.float().numpy(), raw, np.ones(g.shape[1:], dtype=bool)),
            _normal_rgb(g, raw, valid_gt))


def _depth_panel(pred, gt, dataset, depth_mask):
    mask = torch.ones_like(gt) if depth_mask is None else depth_mask
    valid = depth_valid(gt.float()[None], dataset, mask[None])[0, 0].numpy()
    g, p = gt[0].float().numpy(), pred[0].float().numpy()
    lo, hi = (float(g[valid].min()), float(g[valid].max())) if valid.any() else (0.0, 1.0)
    return (_scalar_rgb(p, np.ones_like(valid), "viridis", lo, hi),
            _scalar_rgb(g, valid, "viridis", lo, hi))


def _signed_panel(pred, gt, dataset, depth_mask):
    g, p = gt[0].float().numpy(), pred[0].float().numpy()
    valid = g != TARGET_IGNORE_VALUE
    return (_scalar_rgb(p, np.ones_like(valid), "gray", -1.0, 1.0),
            _scalar_rgb(g, valid, "gray", -1.0, 1.0))


PANELS = {"labels": _labels_panel, "normals": _normals_panel, "depth": _depth_panel,
          "signed": _signed_panel}


def task_panel(task: str, dataset: str) -> str | None:
    """How ``task`` of ``dataset`` is drawn (a key of :data:`PANELS`), None if it has no map."""
    panels = dataset_spec(dataset).panels       # the dataset's own tasks first (MTAN's NYUv2)
    if task in panels:
        return panels[task]
    return TASKS[task].panel if task in TASKS else None


def plot_prediction_grid(images: Any, preds: Sequence[Any] | Mapping[str, Any],
                         targets: Mapping[str, Any], tasks: Sequence[str],
                         out_png: str | os.PathLike, dataset: str = "nyuv2_3",
                         max_samples: int = 4,
                         image_mean_bgr: Sequence[float] = IMG_MEAN_BGR) -> Path:
    """Rows = samples; columns = input, then prediction and ground truth for each task.

    ``images`` is the loader's ``img`` (B x 3 x H x W, BGR minus the mean); ``preds`` the
    network's outputs (list aligned with ``tasks`` or ``{task: tensor}``), nearest-upsampled to
    H x W; ``targets`` the batch dict. seg uses :func:`segmentation_palette` (ignored pixels
    black), normals are shown as RGB, depth with viridis scaled to the sample's valid range,
    keypoint/edge in grey over [-1, 1]; invalid target pixels are grey.
    """
    images = _as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"plot_prediction_grid: images have shape {tuple(images.shape)}; "
                         f"expected B x 3 x H x W")
    unknown = [t for t in tasks if task_panel(t, dataset) is None]
    if unknown:
        raise ValueError(f"plot_prediction_grid: no figure panel for task(s) {unknown} of "
                         f"{dataset}")
    if not isinstance(preds, Mapping):
        if len(preds) != len(tasks):
            raise ValueError(f"plot_prediction_grid: got {len(preds)} predictions for tasks "
                             f"{list(tasks)}")
        preds = dict(zip(tasks, preds))
    height, width = images.shape[-2:]
    num = min(images.shape[0], max_samples)
    depth_mask = _as_tensor(targets["depth_mask"]) if "depth_mask" in targets else None
    columns = ["input"] + [f"{t} {kind}" for t in tasks for kind in ("pred", "gt")]
    fig = Figure(figsize=(2.4 * len(columns), 2.4 * num * height / width + 0.4))
    axes = fig.subplots(num, len(columns), squeeze=False)
    for task in tasks:
        if task not in preds:
            raise KeyError(f"plot_prediction_grid: predictions have no task {task!r}")
    upsampled = {t: F.interpolate(_as_tensor(preds[t]).float()[:num], size=(height, width),
                                  mode="nearest") for t in tasks}
    for i in range(num):
        axes[i, 0].imshow(_image_rgb(images[i], image_mean_bgr, dataset))
        for j, task in enumerate(tasks):
            gt = _target_for(targets, task)[i]
            if tuple(gt.shape[-2:]) != (height, width):
                raise ValueError(f"plot_prediction_grid: target of {task!r} has size "
                                 f"{tuple(gt.shape[-2:])}, images {(height, width)}")
            mask = None if depth_mask is None else depth_mask[i]
            panel = PANELS[task_panel(task, dataset)]
            pred_img, gt_img = panel(upsampled[task][i], gt, dataset, mask)
            axes[i, 1 + 2 * j].imshow(pred_img, interpolation="nearest")
            axes[i, 2 + 2 * j].imshow(gt_img, interpolation="nearest")
    for j, name in enumerate(columns):
        axes[0, j].set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_classification_grid(images: Mapping[str, Any], logits: Mapping[str, Any],
                             labels: Mapping[str, Any], tasks: Sequence[str],
                             out_png: str | os.PathLike, dataset: str = "cifar100_mtl",
                             max_samples: int = 4,
                             class_names: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Rows = tasks (domains), columns = samples: each image titled with the predicted and the
    true class (green when they agree, red when not). ``images``, ``logits`` and ``labels`` are
    ``{task: B x 3 x H x W}``, ``{task: B x classes}`` and ``{task: B}``."""
    missing = [t for t in tasks if t not in images or t not in logits or t not in labels]
    if missing:
        raise KeyError(f"plot_classification_grid: no images, predictions or labels for "
                       f"task(s) {missing}")
    num = min(max_samples, min(_as_tensor(images[t]).shape[0] for t in tasks))
    fig = Figure(figsize=(1.6 * num + 1.2, 1.7 * len(tasks) + 0.3))
    axes = fig.subplots(len(tasks), num, squeeze=False)
    for r, task in enumerate(tasks):
        names = (class_names or {}).get(task)
        predicted = _as_tensor(logits[task]).argmax(1)
        truth = _as_tensor(labels[task])
        for c in range(num):
            ax = axes[r, c]
            ax.imshow(_image_rgb(_as_tensor(images[task])[c], IMG_MEAN_BGR, dataset),
                      interpolation="nearest")
            p, g = int(predicted[c]), int(truth[c])
            ax.set_title(f"{names[p]} / {names[g]}" if names else f"{p} / {g}", fontsize=7,
                         color="green" if p == g else "red")
            ax.set_axis_off()
        axes[r, 0].text(-0.1, 0.5, task, transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=8)
    fig.suptitle("predicted / true class", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, out_png)


@torch.no_grad()
def plot_predictions(net: torch.nn.Module, cfg, out_png: str | os.PathLike,
                     device: torch.device | str | None = None, num_samples: int = 4,
                     seed: int = 0) -> Path:
    """:func:`plot_prediction_grid` of ``net``'s predictions for the first ``num_samples`` test
    images of ``cfg``'s dataset, for every task of ``net`` (one batch per task, as CIFAR-100's
    domains: :func:`plot_classification_grid`); the network's mode is restored."""
    from lib.data import build_loader

    loader = build_loader(cfg, "test", batch_size=num_samples, shuffle=False, seed=seed)
    batch = next(iter(loader))
    device = next(net.parameters()).device if device is None else torch.device(device)
    was_training = net.training
    net.to(device).eval()
    try:
        preds = {t: p.cpu() for t, p in
                 task_outputs(net, network_input(batch_to(batch, device))).items()}
    finally:
        net.train(was_training)
    if isinstance(batch, TaskBatches):
        names = {t: getattr(d, "classes", None) for t, d in loader.task_datasets.items()}
        return plot_classification_grid({t: batch[t]["img"] for t in net.tasks}, preds,
                                        {t: batch[t]["label"] for t in net.tasks}, net.tasks,
                                        out_png, dataset=cfg.DATASET, max_samples=num_samples,
                                        class_names=names)
    return plot_prediction_grid(network_input(batch), preds, batch, net.tasks, out_png,
                                dataset=cfg.DATASET, max_samples=num_samples)


def comparison_rows(tasks: Sequence[str], dense: Mapping[str, Mapping[str, float]],
                    models: Mapping[str, tuple[Mapping[str, Mapping[str, float]], float, float]],
                    cfg=None) -> list[dict[str, Any]]:
    """Table rows comparing models with the dense one on ``tasks``: the dense row (Δ 0), then
    one row per ``{label: (metrics, nominal sparsity, measured sparsity)}`` with its Δ vs dense
    (:func:`lib.metrics.delta_or_none`: empty where a dense metric is 0). With ``cfg`` the Δ
    uses that config's metrics (``metrics_from_config(cfg).delta_options()``), else the task
    table's."""
    options = {} if cfg is None else metrics_from_config(cfg, tasks).delta_options()
    dense = {t: dense[t] for t in tasks}
    rows = [results_row("dense", tasks, 0, 0.0, dense, delta=0.0)]
    rows += [results_row(label, tasks, nominal, measured, metrics,
                         delta=delta_or_none(metrics, dense, tasks, **options))
             for label, (metrics, nominal, measured) in models.items()]
    return rows
