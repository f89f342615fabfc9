"""Fine-tune a pruned compact network with its masks held (the reference's ``train_prune``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from lib.checkpoints import save_pruned
from lib.masks import check_masks_unchanged, mask_snapshot, refresh_masked_weights, zero_pruned
from lib.models import check_model

from .engine import EvalFn, Schedule, TrainResult, run_loop
from .weighting import TaskWeighting

FINAL_NAME = "final_model.pth"


def save_final_pruned(net: nn.Module, path: Path, meta: Mapping[str, Any] | None = None) -> None:
    """``lib.checkpoints.save_pruned``'s layout: state dict with ``weight_orig``/``weight_mask``
    + JSON sidecar (architecture, ``meta`` with ``"finetuned": True``, sparsity), so
    ``load_pruned`` reads it back."""
    save_pruned(net, path, meta={**dict(meta or {}), "finetuned": True})


def finetune(compact_net: nn.Module, criterion, train_loader: DataLoader, cfg,
             run_dir: str | os.PathLike, *, val_loader: DataLoader | None = None,
             max_iters: int | None = None, lr: float | None = None,
             weight_decay: float | None = None, decay_freq: int | None = None,
             decay_rate: float | None = None, seed: int = 0,
             device: str | torch.device | None = None, resume: bool | str | os.PathLike = False,
             overwrite: bool = False, amp: str | bool | None = None,
             channels_last: bool | None = None, eval_fn: EvalFn | None = None,
             select_metric: str | None = None, log: bool = True,
             split: Mapping[str, Any] | None = None,
             meta: Mapping[str, Any] | None = None,
             weighting: str | Mapping[str, Any] | TaskWeighting | None = None,
             allow_changed: Sequence[str] = ()) -> TrainResult:
    """Fine-tune ``compact_net`` (any :class:`~lib.models.MultiTaskModel`) on its own tasks'
    weighted loss with every mask held.

    The criterion (a :class:`lib.losses.TaskLosses`) is restricted to ``compact_net.tasks``
    (unselected tasks' losses dropped). The config's optimiser and schedule (as in
    :func:`lib.training.train`) at ``cfg.RETRAIN_LR``, ``cfg.WEIGHT_DECAY``, with
    ``cfg.RETRAIN_DECAY_LR_FREQ`` / ``cfg.RETRAIN_DECAY_LR_RATE``, for ``cfg.RETRAIN_EPOCH``
    iterations (the reference counts iterations there despite the name).
    Pruned weights are exactly zero before, during (after every step, weight decay included)
    and after the run; at the end the masks are checked to be identical to the ones given (a
    RuntimeError otherwise). The final model goes to ``run_dir/final_model.pth`` +
    ``final_model.json`` (``lib.checkpoints.save_pruned``'s layout; ``meta``, e.g. the
    :class:`lib.pruning.PruneResult`'s, is recorded there). ``weighting`` as in
    :func:`lib.training.train` (built for ``compact_net.tasks``). Everything else (resume's
    settings check, ``allow_changed``, ``amp``, ``channels_last``) is as in
    :func:`lib.training.train`: masks and pruned weights stay exact under every precision.
    """
    tasks = list(check_model(compact_net).tasks)
    criterion = criterion.restricted_to(tasks)
    schedule = Schedule.from_config(cfg, retrain=True, max_iters=max_iters, lr=lr,
                                    weight_decay=weight_decay, decay_freq=decay_freq,
                                    decay_rate=decay_rate)
    masks = mask_snapshot(compact_net)
    zero_pruned(compact_net)
    result = run_loop(compact_net, criterion, train_loader, cfg, run_dir, schedule=schedule,
                      phase="finetune", final_name=FINAL_NAME, val_loader=val_loader, seed=seed,
                      device=device, resume=resume, overwrite=overwrite, amp=amp,
                      channels_last=channels_last,
                      eval_fn=eval_fn, select_metric=select_metric, log=log, split=split,
                      after_step=zero_pruned,
                      save_final=lambda net, path: save_final_pruned(net, path, meta),
                      weighting=weighting, allow_changed=allow_changed)
    refresh_masked_weights(result.net)
    check_masks_unchanged(result.net, masks)
    return result
