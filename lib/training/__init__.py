"""Training, masked fine-tuning and evaluation of any MultiTaskModel, with atomic, exactly
resumable checkpoints.

    result = train(net, criterion, train_loader, cfg, run_dir, val_loader=val_loader)
    result = finetune(compact_net, criterion, train_loader, cfg, run_dir, meta=pruned.meta)
    metrics = evaluate(net, test_loader, cfg, out_path=metrics_path_for(ckpt))
    metrics = evaluate(net, test_loader, metrics={"cls": my_accuracy})   # a model of your own

Model selection: by default the best checkpoint is chosen on a seeded validation split of the
TRAIN list (:func:`split_train_val`, recorded as ``split.json``); ``selection="test"`` in
:func:`make_loaders` reproduces the reference (selection on the test set, not honest).
Multi-GPU: ``torchrun --nproc_per_node=N -m lib train ...`` (DistributedDataParallel).
Checkpoint files and masks have their own homes (:mod:`lib.checkpoints`, :mod:`lib.masks`);
the names below are re-exported from there. See docs/TRAINING.md.
"""
from lib.checkpoints import (load_checkpoint, load_network as net_from_checkpoint,
                             read_checkpoint, save_checkpoint)
from lib.masks import check_masks_unchanged, mask_snapshot, masked_modules, zero_pruned
from lib.utils import rng_state, set_rng_state

from .engine import Schedule, TrainResult, flatten_metrics, validation_losses
from .evaluate import evaluate, metrics_eval_fn, metrics_path_for
from .finetune import finetune
from .selection import make_loaders
from .split import split_record, split_train_val
from .train import train

__all__ = ["train", "finetune", "evaluate", "TrainResult", "Schedule", "save_checkpoint",
           "load_checkpoint", "read_checkpoint", "rng_state",
           "set_rng_state", "split_train_val", "split_record", "make_loaders",
           "metrics_eval_fn", "metrics_path_for", "flatten_metrics", "validation_losses",
           "net_from_checkpoint", "masked_modules", "mask_snapshot", "zero_pruned",
           "check_masks_unchanged"]
