"""Fine-tune a pruned compact network with its masks held (the reference's ``train_prune``)."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from lib.checkpoints import save_pruned
from lib.config import config_to_dict
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


# What fine-tuning reads from a config, and its values when the caller has no config (the
# reference NYUv2 config's fine-tuning values; validation and checkpoints at the run's end).
FINETUNE_DEFAULTS = {"RETRAIN_EPOCH": 1000, "RETRAIN_LR": 1e-5, "RETRAIN_DECAY_LR_FREQ": 1000,
                     "RETRAIN_DECAY_LR_RATE": 0.7, "WEIGHT_DECAY": 1e-4}


class _Batches(Dataset):
    """A list of ready batches as a dataset of one batch per item (with :func:`_one_batch` as
    collate function and ``batch_size=1``, a DataLoader yields them as they are, in order)."""

    def __init__(self, batches: Sequence[Any]):
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Any:
        return self.batches[index]


def _one_batch(items: list) -> Any:
    return items[0]


def batches_loader(batches: Sequence[Any]) -> DataLoader:
    """A DataLoader yielding the batch dicts of ``batches`` (what :func:`lib.pruning.prune`
    takes) in order, epoch after epoch, so training resumes them exactly."""
    if not batches:
        raise ValueError("the list of training batches is empty")
    return DataLoader(_Batches(batches), batch_size=1, shuffle=False, collate_fn=_one_batch)


def finetune_config(cfg: Any = None, max_iters: int | None = None) -> Any:
    """``cfg`` when it has every value fine-tuning reads, else a config object holding its
    values (a config object or a dict; None: none) over :data:`FINETUNE_DEFAULTS`, with
    ``VAL_FREQ`` / ``CKPT_FREQ`` defaulting to the run's iteration count (once, at the end)."""
    needed = (*FINETUNE_DEFAULTS, "VAL_FREQ", "CKPT_FREQ")
    if cfg is not None and not isinstance(cfg, Mapping) and all(hasattr(cfg, k) for k in needed):
        return cfg
    given = dict(cfg) if isinstance(cfg, Mapping) else ({} if cfg is None else
                                                        config_to_dict(cfg))
    values = {**FINETUNE_DEFAULTS, **given}
    iters = values["RETRAIN_EPOCH"] if max_iters is None else max_iters
    values.setdefault("VAL_FREQ", iters)
    values.setdefault("CKPT_FREQ", iters)
    return SimpleNamespace(**values)


def finetune(compact_net: nn.Module, criterion, train_loader: DataLoader | Sequence[Any],
             cfg: Any = None, run_dir: str | os.PathLike | None = None, *,
             val_loader: DataLoader | None = None,
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
             allow_changed: Sequence[str] = (),
             progress: bool = True) -> TrainResult:
    """Fine-tune ``compact_net`` (any :class:`~lib.models.MultiTaskModel`) on its own tasks'
    weighted loss with every mask held.

    ``train_loader``: a DataLoader, or a list of batch dicts as :func:`lib.pruning.prune`
    takes (iterated in order, epoch after epoch). ``cfg``: a config, a dict of its values, or
    None; what it lacks comes from :data:`FINETUNE_DEFAULTS` (``RETRAIN_EPOCH`` 1000,
    ``RETRAIN_LR`` 1e-5, ``RETRAIN_DECAY_LR_FREQ`` 1000, ``RETRAIN_DECAY_LR_RATE`` 0.7,
    ``WEIGHT_DECAY`` 1e-4: the reference NYUv2 values) and ``VAL_FREQ`` = ``CKPT_FREQ`` = the
    iteration count (:func:`finetune_config`). ``run_dir`` is required.

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
    if run_dir is None:
        raise ValueError("finetune needs run_dir=: the folder its checkpoints and final model "
                         "are written to")
    tasks = list(check_model(compact_net).tasks)
    criterion = criterion.restricted_to(tasks)
    if not isinstance(train_loader, DataLoader) and isinstance(train_loader, Sequence):
        train_loader = batches_loader(train_loader)
    cfg = finetune_config(cfg, max_iters)
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
                      weighting=weighting, allow_changed=allow_changed,
                      progress=progress)
    refresh_masked_weights(result.net)
    check_masks_unchanged(result.net, masks)
    return result
