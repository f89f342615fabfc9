"""One pruning run as the ``prune`` command and the pruning notebooks take it: prune a base
network, save the compact model with its sidecar, report its sparsity, draw its masks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lib.checkpoints import save_pruned
from lib.masks import sparsity_report
from lib.models import MultiTaskModel, shared_layers

from .analysis import pairwise_mask_iou, plot_layer_sparsity, plot_mask_iou
from .methods import PruneResult, prune


@dataclass
class SavedPruning:
    """A pruned model and where it was written: the :class:`PruneResult`, its sparsity report
    against the dense network it was cut from, the ``.pth`` written (+ ``.json`` sidecar)."""
    result: PruneResult
    report: dict
    path: Path

    def summary(self) -> str:
        """Keep ratio, sparsity (overall, shared layers, each task's own) and the file."""
        r, meta = self.report, self.result.meta
        heads = ", ".join(f"{t} {v['sparsity']:.2f}%" for t, v in r["heads"].items())
        return (f"{meta['method']} {'+'.join(meta['selected_tasks'])}: keep ratio "
                f"{meta['keep_ratio']:.4f}, deployed sparsity {self.result.sparsity:.2f}%, "
                f"reference figure {r['reference']['sparsity']:.2f}% -> {self.path}\n"
                f"  zeros: {r['deployed']['zeros']:,} of {r['deployed']['total']:,} weights "
                f"(shared {r['backbone']['sparsity']:.2f}%, own layers {heads})")


def prune_and_save(method: str, net: MultiTaskModel, criterion, loader: Iterable | None,
                   path: str | os.PathLike, *, selected_tasks: Sequence[str],
                   meta: Mapping[str, Any] | None = None, **prune_kwargs) -> SavedPruning:
    """:func:`lib.pruning.prune` ``net``, then :func:`lib.checkpoints.save_pruned` the result
    at ``path`` with its metadata (plus ``meta``) and the reference's sparsity figure against
    ``net``. ``prune_kwargs`` are :func:`prune`'s (budget, seed, device, method options)."""
    result = prune(method, net, criterion, loader, selected_tasks=selected_tasks, **prune_kwargs)
    saved = save_pruned(result.net, path, meta={**result.meta, **dict(meta or {})}, full_net=net)
    return SavedPruning(result, sparsity_report(result.net, net), saved)


def plot_pruning(saved: SavedPruning, folder: str | os.PathLike) -> list[Path]:
    """The per-layer sparsity figure and, for per-task methods, the per-layer IoU of the task
    masks over the shared layers; PNGs written to ``folder``, their paths returned."""
    folder = Path(folder)
    meta = saved.result.meta
    tag = f"{meta['method']}_{'-'.join(meta['selected_tasks'])}"
    paths = [folder / f"layer_sparsity_{tag}.png"]
    plot_layer_sparsity({meta["method"]: saved.report}, paths[0],
                        title=f"{meta['method']}: per-layer sparsity, "
                              f"{'+'.join(meta['selected_tasks'])}")
    task_masks = saved.result.task_masks
    if task_masks and len(task_masks) > 1:
        shared = shared_layers(saved.result.net)
        iou = pairwise_mask_iou({t: {n: m for n, m in masks.items() if n in shared}
                                 for t, masks in task_masks.items()})
        paths.append(folder / f"mask_iou_{tag}.png")
        plot_mask_iou(iou, paths[-1], title="Per-layer IoU of the task masks (shared layers)")
    return paths
