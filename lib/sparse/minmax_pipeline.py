"""The min-max framework's compression pipeline: reweighted-L1 training, one-shot per-layer hard
prune, masked retraining (``prune_apgda/trainer_apgda.py --stage rew``, then ``--stage
retrain``, which hard-prunes at its start), each stage resumable, with any task weighting.

    result = minmax_pipeline(base.select(["seg", "depth"]), criterion, loader, cfg, "runs/mm",
                             prune_ratio=0.975)          # 40x; 0.983 = 60x, 0.99 = 100x

Stages, each in its own place under ``out_dir`` and skipped when its output exists:

1. ``rew/``: the network (pre-trained, selected tasks) trained with the reweighted-L1 penalty
   (:class:`lib.sparse.reweighted.ReweightedL1`) for ``rew_iters`` (default the config's
   fine-tuning length ``RETRAIN_EPOCH``) with the fine-tuning schedule; ``W_old`` refreshed at
   30 % and 60 % of the stage (``prune_apgda``'s epochs 60 and 120 of 200). A half-finished
   stage resumes from ``rew/last.pth``; its result is ``rew/final_model.pth``;
2. ``pruned.pth`` (+ ``.json``): every layer in scope pruned to exactly ``prune_ratio``
   (:mod:`lib.sparse.hard_prune`, ``irregular`` or ``filter``), written atomically;
3. ``retrain/``: :func:`lib.training.finetune` of the pruned network, masks held, for
   ``retrain_iters`` (default ``RETRAIN_EPOCH``); resumes from ``retrain/last.pth``.

``layers="reference"`` (default) regularises and prunes what ``prune_apgda`` does: every conv
whose name lacks ``task`` (on SegNet-MTAN the shared convs and the per-task attention convs;
only the ``pred_task*`` heads stay dense; :func:`lib.sparse.reweighted.scoped_layers`);
``"shared"`` the contract's shared layers only; ``"all"`` every prunable layer, as the journal
version's trainer. ``counts="percentile"`` prunes with the original's ``np.percentile``
threshold instead of exact counts (:mod:`lib.sparse.hard_prune`). The default weighting is
``prune_apgda``'s: ``{"name": "minmax", "beta": 50}``.
Resuming with other settings is refused (the stages' checkpoints record them).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn
from torch.utils.data import DataLoader

from lib.checkpoints import load_pruned, save_pruned
from lib.masks import install_masks, refresh_masked_weights
from lib.models import prunable_layers
from lib.training import finetune, train
from lib.training.engine import TrainResult

from .hard_prune import COUNTS, KINDS, check_counts, check_kind, check_ratio, hard_prune_masks
from .masking import zero_dead
from .reweighted import DEFAULT_SCOPE, LAYER_SCOPES, ReweightedL1, scoped_layers

DEFAULT_WEIGHTING = {"name": "minmax", "beta": 50.0}
REFRESH_FRACTIONS = (0.3, 0.6)   # prune_apgda: W_old refreshed at epochs 60 and 120 of 200


@dataclass
class PipelineResult:
    net: nn.Module               # the retrained pruned network
    rew: Path                    # stage 1 result
    pruned: Path                 # stage 2 result
    retrain: TrainResult         # stage 3
    settings: dict


def minmax_prune(net: nn.Module, criterion, train_loader: DataLoader, cfg,
                 out_dir: str | os.PathLike, *, prune_ratio: float = 0.975,
                 sparsity_type: str = "irregular", layers: str = DEFAULT_SCOPE,
                 counts: str = "exact",
                 weighting: str | Mapping[str, Any] | None = None,
                 rew_iters: int | None = None, penalty: float = 1e-7, eps: float = 1e-6,
                 refresh_at: list[int] | None = None, reference_eps: bool = False,
                 val_loader: DataLoader | None = None, seed: int = 0, device=None,
                 log: bool = True, split: Mapping[str, Any] | None = None,
                 _extra: Mapping[str, Any] | None = None) -> tuple[Path, Path, dict]:
    """Stages 1 and 2 (reweighted-L1 training, hard prune) on ``net`` (not modified); returns
    ``(rew/final_model.pth, pruned.pth, settings)``. Fine-tune ``pruned.pth`` with the masks
    held (:func:`lib.training.finetune`) for stage 3, or call :func:`minmax_pipeline`."""
    prune_ratio = check_ratio(prune_ratio)
    check_kind(sparsity_type)
    check_counts(counts)
    rew_iters = int(cfg.RETRAIN_EPOCH if rew_iters is None else rew_iters)
    if refresh_at is None:
        refresh_at = sorted({int(f * rew_iters) for f in REFRESH_FRACTIONS} - {0})
    weighting = dict(DEFAULT_WEIGHTING) if weighting is None else weighting
    hook = ReweightedL1(penalty=penalty, eps=eps, refresh_at=refresh_at, layers=layers,
                        reference_eps=reference_eps)
    hook.check(net, rew_iters)
    scoped_layers(net, layers)          # an empty scope is refused before anything is written
    out = Path(out_dir)
    settings = {"prune_ratio": prune_ratio, "sparsity_type": sparsity_type, "layers": layers,
                "counts": counts, "weighting": weighting, "rew_iters": rew_iters,
                "rew": hook.spec(), "seed": seed,
                **dict(_extra or {})}
    _record(out, settings)
    tasks = list(net.tasks)
    criterion = criterion.restricted_to(tasks)

    rew_final = out / "rew" / "final_model.pth"
    if not rew_final.exists():
        train(_copy(net), criterion, train_loader, cfg, out / "rew", max_iters=rew_iters,
              lr=cfg.RETRAIN_LR, decay_freq=cfg.RETRAIN_DECAY_LR_FREQ,
              decay_rate=cfg.RETRAIN_DECAY_LR_RATE, hook=hook,
              resume=(out / "rew" / "last.pth").exists(), overwrite=True, val_loader=val_loader,
              seed=seed, device=device, log=log, split=split, weighting=weighting)

    pruned_path = out / "pruned.pth"
    if not pruned_path.exists():
        regularised, _ = load_pruned(rew_final)
        masks = hard_prune_masks(scoped_layers(regularised, layers), prune_ratio, sparsity_type,
                                 counts)
        install_masks(regularised, masks)
        zero_dead(prunable_layers(regularised))   # pruned weights are zero, as hard_prune does
        save_pruned(regularised, pruned_path,
                    meta={"method": "minmax_pipeline", "selected_tasks": tasks,
                          "keep_ratio": 1 - prune_ratio, **_flat(settings)})
    return rew_final, pruned_path, settings


def minmax_pipeline(net: nn.Module, criterion, train_loader: DataLoader, cfg,
                    out_dir: str | os.PathLike, *, retrain_iters: int | None = None,
                    weighting: str | Mapping[str, Any] | None = None,
                    val_loader: DataLoader | None = None, seed: int = 0, device=None,
                    log: bool = True, split: Mapping[str, Any] | None = None,
                    **prune_options: Any) -> PipelineResult:
    """Run (or resume) all three stages on ``net`` (its tasks; not modified).
    ``prune_options`` go to :func:`minmax_prune`."""
    retrain_iters = int(cfg.RETRAIN_EPOCH if retrain_iters is None else retrain_iters)
    weighting = dict(DEFAULT_WEIGHTING) if weighting is None else weighting
    common = dict(val_loader=val_loader, seed=seed, device=device, log=log, split=split)
    rew_final, pruned_path, settings = minmax_prune(
        net, criterion, train_loader, cfg, out_dir, weighting=weighting,
        _extra={"retrain_iters": retrain_iters}, **common, **prune_options)
    out = Path(out_dir)
    pruned, meta = load_pruned(pruned_path)
    result = finetune(pruned, criterion.restricted_to(list(net.tasks)), train_loader, cfg,
                      out / "retrain", max_iters=retrain_iters,
                      resume=(out / "retrain" / "last.pth").exists(), overwrite=True,
                      weighting=weighting, meta=meta, **common)
    return PipelineResult(result.net, rew_final, pruned_path, result, settings)


def _copy(net: nn.Module) -> nn.Module:
    """A deep copy (training works in place; the caller's network stays as it was)."""
    refresh_masked_weights(net)   # .weight without autograd history: deepcopy-safe
    return copy.deepcopy(net)


def _record(out: Path, settings: dict) -> None:
    """``out/pipeline.json``; a pipeline resumed with other settings is refused."""
    from lib.utils import atomic_write_json, read_json

    path = out / "pipeline.json"
    current = json.loads(json.dumps(settings))
    if path.exists():
        previous = read_json(path, "pipeline record", recover=(
            "it records the settings the pipeline's finished stages were run with: restore "
            "it, or use another out_dir"))
        if not isinstance(previous, dict):
            previous = {"<record>": previous}
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current)
                             if previous.get(k) != current.get(k))
            raise ValueError(f"{path} was written by a pipeline with other settings {changed} "
                             f"({[previous.get(k) for k in changed]} vs "
                             f"{[current.get(k) for k in changed]}); use another out_dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(current, path)


def _flat(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if isinstance(v, (str, int, float, bool))}


# ------------------------------------------------------------------- the study's cell
def _pipeline_cell(job):
    """``minmax_pipeline``'s cell: the base model's selected tasks through the three stages,
    ``prune_ratio`` the cell's sparsity."""
    result = minmax_pipeline(job.base.select(job.selection), job.criterion, job.loaders.train,
                             job.cfg, job.run_dir, prune_ratio=job.sparsity / 100,
                             weighting=job.weighting, **job.common(), **job.options)
    return result.net, None, result.retrain.final_model


def _register() -> None:
    from lib.pruning.registry import anything, choice, flag, integer, number, register_method

    register_method(
        "minmax_pipeline", _pipeline_cell, kind="trained_from_base",
        summary="min-max compression: reweighted-L1 training of the base model, hard prune "
                "of every layer, masked retraining",
        budget="base {base} + rew {finetune} + retrain {finetune}",
        schedule=lambda base_iters, finetune_iters, dataset: {
            "rew_iters": finetune_iters, "retrain_iters": finetune_iters, "layers": "all"},
        options={"rew_iters": integer(None, 1, "default: the study's fine-tuning length"),
                 "retrain_iters": integer(None, 1, "default: the study's fine-tuning length"),
                 "layers": choice(DEFAULT_SCOPE, LAYER_SCOPES),
                 "sparsity_type": choice("irregular", KINDS),
                 "counts": choice("exact", COUNTS),
                 "penalty": number(1e-7), "eps": number(1e-6),
                 "refresh_at": anything(None, "iterations refreshing W_old"),
                 "reference_eps": flag(False)})


_register()
