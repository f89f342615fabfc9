"""Mask analysis: per-layer IoU of task masks (DiSparse's "watershed" analysis), per-layer
sparsity, and matplotlib figures of both (Agg-safe: no pyplot, no display needed)."""
from __future__ import annotations

import os
from itertools import combinations
from typing import Mapping

from matplotlib.figure import Figure

from lib.masks import Masks
from lib.utils import atomic_write


def mask_iou_by_layer(masks_a: Masks, masks_b: Masks) -> dict[str, float]:
    """``{layer: |a & b| / |a | b|}`` over the layers both mask dicts hold (1.0 if both empty)."""
    common = [n for n in masks_a if n in masks_b]
    if not common:
        raise ValueError("the two mask dicts share no layer")
    out = {}
    for name in common:
        a, b = masks_a[name].bool(), masks_b[name].bool()
        if a.shape != b.shape:
            raise ValueError(f"masks for {name} differ in shape: {tuple(a.shape)} vs "
                             f"{tuple(b.shape)}")
        union = int((a | b).sum())
        out[name] = int((a & b).sum()) / union if union else 1.0
    return out


def pairwise_mask_iou(task_masks: Mapping[str, Masks]) -> dict[str, dict[str, float]]:
    """``{"t1&t2": {layer: IoU}}`` for every pair of tasks, over the layers they share."""
    return {f"{a}&{b}": mask_iou_by_layer(task_masks[a], task_masks[b])
            for a, b in combinations(task_masks, 2)}


def layer_sparsity(masks_or_report: Mapping) -> dict[str, float]:
    """``{layer: percent pruned}`` from a mask dict or a :func:`sparsity_report`."""
    if "layers" in masks_or_report:
        return {n: v["sparsity"] for n, v in masks_or_report["layers"].items()}
    return {n: 100.0 * float((~m.bool()).sum()) / m.numel() for n, m in masks_or_report.items()}


def _short(name: str) -> str:
    return name.replace("backbone.", "bb.").replace("blocks.", "").replace("_fc1_", ".")


def _finish_layer_axes(fig: Figure, ax, layers: list[str], ylabel: str,
                       ylim: tuple[float, float], title: str,
                       path: str | os.PathLike | None) -> Figure:
    """One tick per layer (short names), labels, legend; save atomically when ``path`` is given."""
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([_short(n) for n in layers], rotation=90, fontsize=5)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return fig


def plot_layer_sparsity(series: Mapping[str, Mapping], path: str | os.PathLike | None = None,
                        title: str = "Per-layer sparsity") -> Figure:
    """Bar chart of per-layer sparsity; ``series`` = ``{label: masks or sparsity report}``.

    Returns the Figure; saves a PNG when ``path`` is given.
    """
    data = {label: layer_sparsity(v) for label, v in series.items()}
    layers = list(next(iter(data.values())))
    fig = Figure(figsize=(max(6, 0.12 * len(layers) * len(data)), 3.5))
    ax = fig.add_subplot()
    width = 0.8 / len(data)
    for i, (label, values) in enumerate(data.items()):
        ax.bar([j + i * width for j in range(len(layers))], [values.get(n, 0.0) for n in layers],
               width=width, label=label)
    return _finish_layer_axes(fig, ax, layers, "sparsity (%)", (0, 100), title, path)


def plot_mask_iou(iou: Mapping[str, Mapping[str, float]], path: str | os.PathLike | None = None,
                  title: str = "Per-layer IoU of task masks") -> Figure:
    """Line plot of per-layer mask IoU; ``iou`` = ``{pair label: {layer: IoU}}``."""
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    layers: list[str] = []
    for label, values in iou.items():
        layers = list(values)
        ax.plot(range(len(values)), list(values.values()), marker=".", label=label)
    return _finish_layer_axes(fig, ax, layers, "IoU", (0, 1.05), title, path)
