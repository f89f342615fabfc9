"""The study grid's cells for methods that train, rather than prune a trained model and
fine-tune it (:func:`lib.experiments.units.cell_unit` hands these over).

- ``disparse_dynamic``, ``minmax_dst``, ``rigl``: a fresh network of the selected tasks trained
  from scratch with the method's hook; budget ``B`` from scratch;
- ``disparse_static_scratch``: DiSparse's static protocol, ``disparse_static`` masks on a fresh
  network trained from scratch with the masks held; budget ``B`` from scratch;
- ``minmax_pipeline``: the base model's selected tasks through reweighted-L1 training, a hard
  prune of every layer and masked retraining; budget base ``B`` + rew ``F`` + retrain ``F``.

``B`` is the study's base-training length (``base_iters``, default ``MAX_ITERS``), ``F`` its
fine-tuning length (``finetune_iters``, default ``RETRAIN_EPOCH``); one-shot methods cost
base ``B`` + ft ``F``. Schedules are the originals' mapped onto the budget (:func:`schedule`):
DiSparse's END = 15000 of 20000 iterations and INT = 50 become ``end = 3B/4`` and ``interval =
max(1, round(50 B / 20000))``; RigL uses the same (to be comparable); the min-max DST's 200
epochs become ``epoch_iters = max(1, B // 200)`` with updates every 10 such epochs up to 150.
``spec.method_options[method]`` overrides any of these.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch.nn as nn

from .registry import DISPARSE_DYNAMIC

DYNAMIC_METHODS = ("disparse_dynamic", "minmax_dst", "rigl")
STATIC_SCRATCH = "disparse_static_scratch"
PIPELINE = "minmax_pipeline"
TRAINED_METHODS = DYNAMIC_METHODS + (STATIC_SCRATCH, PIPELINE)
DISPARSE_FRACTIONS = (15000 / 20000, 50 / 20000)   # END and INT of DiSparse's NYU schedule


def schedule(method: str, base_iters: int, finetune_iters: int, dataset: str | None = None
             ) -> dict[str, Any]:
    """The study's default options of ``method`` for its budget (see the module docstring)."""
    end_fraction, interval_fraction = DISPARSE_FRACTIONS
    if method in ("disparse_dynamic", "rigl"):
        options = {"end": int(end_fraction * base_iters),
                   "interval": max(1, round(interval_fraction * base_iters))}
        if method == "disparse_dynamic":
            options["grad_chunks"] = DISPARSE_DYNAMIC[dataset]["grad_chunks"]
        return options
    if method == "minmax_dst":
        return {"epoch_iters": max(1, base_iters // 200), "every_epochs": 10, "stop_epoch": 150}
    if method == PIPELINE:
        return {"rew_iters": finetune_iters, "retrain_iters": finetune_iters, "layers": "all"}
    return {}


def budget(method: str, base: int | str, scratch_iters: int, finetune_iters: int) -> str:
    """The training a row cost, in iterations, as the results table states it (``base``: the
    base model's training, or ``"given"`` for a supplied checkpoint)."""
    if method == "dense":
        return f"base {base}"
    if method in DYNAMIC_METHODS or method == STATIC_SCRATCH:
        return f"{scratch_iters} from scratch"
    if method == PIPELINE:
        return f"base {base} + rew {finetune_iters} + retrain {finetune_iters}"
    return f"base {base} + ft {finetune_iters}"


def train_cell(method: str, *, cfg, base: nn.Module, criterion, loaders, sparsity: float,
               selection: Sequence[str], run_dir: Path, base_iters: int, finetune_iters: int,
               seed: int, device, weighting=None, sparsity_mode: str = "target",
               num_batches: int | None = None,
               options: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict | None, float]:
    """Train one cell; returns ``(trained compact network, per-task masks or None, kept
    fraction of the prunable weights)``. Only the final model stays in ``run_dir``."""
    from lib.models import prunable_layers

    from . import masking
    from .train import train_sparse

    options = {**schedule(method, base_iters, finetune_iters, cfg.DATASET), **dict(options or {})}
    common = dict(val_loader=loaders.val, split=loaders.split, seed=seed, device=device,
                  log=False)
    if method == PIPELINE:
        from .minmax_pipeline import minmax_pipeline

        result = minmax_pipeline(base.select(list(selection)), criterion, loaders.train, cfg,
                                 run_dir, prune_ratio=float(sparsity) / 100, weighting=weighting,
                                 **common, **options)
        net, task_masks = result.net, None
        final = result.retrain.final_model
    elif method == STATIC_SCRATCH:
        from .disparse import disparse_keep_ratio, static_from_scratch, train_from_scratch

        if sparsity_mode == "reference_table":   # DiSparse's own table, by name
            options.setdefault("keep_ratio",
                               disparse_keep_ratio("disparse_static", cfg.DATASET, sparsity))
        restricted = criterion.restricted_to(list(selection))
        pruning = static_from_scratch(
            cfg, restricted, loaders.train, selected_tasks=list(selection),
            sparsity=None if "keep_ratio" in options else float(sparsity),
            num_batches=num_batches or cfg.PRUNE_NUM_BATCHES, seed=seed, device=device,
            **options)
        result = train_from_scratch(pruning, restricted, loaders.train, cfg, run_dir,
                                    max_iters=base_iters, weighting=weighting,
                                    **_resume_or_start(run_dir), **common)
        net, task_masks, final = result.net, pruning.task_masks, result.final_model
    else:
        result = train_sparse(method, float(sparsity), criterion, loaders.train, cfg, run_dir,
                              selected_tasks=list(selection), options=options,
                              max_iters=base_iters, weighting=weighting,
                              **_resume_or_start(run_dir), **common)
        net, task_masks, final = result.net, None, result.final_model
    _keep_only(run_dir, final)
    layers = prunable_layers(net)
    kept = sum(masking.counts(layers).values()) / sum(m.weight_orig.numel()
                                                       for m in layers.values())
    return net, task_masks, kept


def _resume_or_start(run_dir: Path) -> dict[str, bool]:
    """Resume a cell's training from ``run_dir/last.pth`` when an interrupted run left one (a
    retried task after its worker died: the engine's exact resume gives the same result);
    else start afresh over whatever a run killed before its first checkpoint left. The
    min-max pipeline's two phases restart from the beginning."""
    resume = (Path(run_dir) / "last.pth").exists()
    return {"resume": resume, "overwrite": not resume}


def _keep_only(run_dir: Path, final: Path) -> None:
    """Remove every resumable checkpoint under ``run_dir`` (about 1 GB each at reference
    width), keeping the final model and its sidecar."""
    keep = {final.resolve(), final.with_suffix(".json").resolve()}
    for path in list(run_dir.rglob("*.pth")):
        if path.resolve() not in keep and path.name in ("last.pth", "best.pth"):
            path.unlink()
