"""Train the dense multi-task base model (the reference's ``train_baseline`` step)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .engine import EvalFn, Schedule, TrainResult, run_loop
from .hooks import TrainingHook
from .weighting import TaskWeighting


def train(net: nn.Module, criterion, train_loader: DataLoader, cfg, run_dir: str | os.PathLike,
          *, val_loader: DataLoader | None = None, max_iters: int | None = None,
          lr: float | None = None, weight_decay: float | None = None,
          decay_freq: int | None = None, decay_rate: float | None = None, seed: int = 0,
          device: str | torch.device | None = None, resume: bool | str | os.PathLike = False,
          overwrite: bool = False, amp: str | bool | None = None,
          channels_last: bool | None = None, eval_fn: EvalFn | None = None,
          select_metric: str | None = None, log: bool = True,
          split: Mapping[str, Any] | None = None,
          weighting: str | Mapping[str, Any] | TaskWeighting | None = None,
          hook: TrainingHook | None = None, allow_changed: Sequence[str] = (),
          progress: bool = True) -> TrainResult:
    """Train ``net`` on ``criterion``'s weighted multi-task loss; return a :class:`TrainResult`.

    The config's optimiser (``cfg.OPTIMIZER``: Adam by default, or SGD with ``cfg.MOMENTUM``)
    at ``cfg.INIT_LR`` with ``cfg.WEIGHT_DECAY``, and schedule (``cfg.LR_SCHEDULE``: StepLR by
    ``cfg.DECAY_LR_FREQ`` / ``cfg.DECAY_LR_RATE`` by default, or cosine over
    ``cfg.DECAY_LR_FREQ``) stepped every iteration, for ``cfg.MAX_ITERS`` iterations (each
    overridable by keyword; see :class:`lib.training.engine.Schedule`). ``train_loader`` is iterated epoch after epoch in a seeded order
    (its shuffle flag is kept) that resumes exactly. Every ``cfg.VAL_FREQ`` iterations and at
    the end, ``val_loader`` (if given) is scored: validation losses, plus ``eval_fn(net, loader,
    device)`` metrics if given; the best by ``select_metric`` (default ``"val/loss"``, lowest)
    is written to ``run_dir/best.pth``. ``run_dir/last.pth`` (resumable) is written every
    ``cfg.CKPT_FREQ`` iterations and at the end; the final weights also go to
    ``run_dir/base_model.pth`` as a plain reference-compatible state dict. ``split`` (see
    :mod:`lib.training.split`) is recorded as ``run_dir/split.json``.

    ``resume=True`` continues from ``run_dir/last.pth`` (or give a path): weights, optimiser,
    scheduler, RNG and data position are restored, so the result equals an uninterrupted run.
    A checkpoint written with other settings (config values, data root, schedule, seed,
    selection, split, weighting, hook) is refused with the differing keys named;
    ``allow_changed`` lets chosen ones of :data:`lib.training.engine.RESUMABLE_CHANGES`
    (``VAL_FREQ``, ``CKPT_FREQ``, ``DATA_ROOT``, the length) differ. Every file of the
    loaders' dataset index must exist (checked before anything is written).
    ``amp`` (``"off"``, ``"bf16"``, ``"fp16"``; default ``cfg.AMP``) and ``channels_last``
    (default ``cfg.CHANNELS_LAST``) choose the forward pass's precision and the memory layout
    (:mod:`lib.training.precision`); they are recorded, and resume refuses a change.
    Under ``torchrun`` (an initialised process group) the net is wrapped in
    DistributedDataParallel and only rank 0 logs and writes. ``log=False`` writes no
    tensorboard log and shows no progress bar; ``progress=False`` hides only the bar.

    ``weighting`` chooses how the per-task losses are combined (:mod:`lib.training.weighting`;
    default ``fixed``, the config's LAMBDAS). ``hook`` is a sparse-training hook (e.g.
    ``lib.sparse.make_sparse("disparse_dynamic", ...)``): it installs and updates masks during
    the run, and the final model then goes to ``run_dir/final_model.pth`` + ``.json`` in
    ``lib.pruning.save_pruned``'s layout (masks included) instead of ``base_model.pth``.
    """
    schedule = Schedule.from_config(cfg, retrain=False, max_iters=max_iters, lr=lr,
                                    weight_decay=weight_decay, decay_freq=decay_freq,
                                    decay_rate=decay_rate)
    output = {"final_name": "base_model.pth"}
    if hook is not None:   # a sparse network: saved with its masks, as pruned models are
        from .finetune import FINAL_NAME, save_final_pruned

        output = {"final_name": FINAL_NAME, "save_final": lambda model, path:
                  save_final_pruned(model, path, {"training": hook.summary()})}
    return run_loop(net, criterion, train_loader, cfg, run_dir, schedule=schedule, phase="train",
                    val_loader=val_loader, seed=seed, device=device, resume=resume,
                    overwrite=overwrite, amp=amp, channels_last=channels_last,
                    eval_fn=eval_fn, select_metric=select_metric,
                    log=log, split=split, weighting=weighting, hook=hook,
                    allow_changed=allow_changed, progress=progress, **output)
