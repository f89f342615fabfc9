"""Training, masked fine-tuning and evaluation, with atomic, exactly resumable checkpoints.

    result = train(net, criterion, train_loader, cfg, run_dir, val_loader=val_loader)
    result = finetune(compact_net, criterion, train_loader, cfg, run_dir)
    metrics = evaluate(net, test_loader, cfg, out_path=metrics_path_for(ckpt))

Model selection: by default the best checkpoint is chosen on a seeded validation split of the
TRAIN list (:func:`split_train_val`, recorded as ``split.json``); ``selection="test"`` in
:func:`make_loaders` reproduces the reference (selection on the test set, not honest).
Multi-GPU: ``torchrun --nproc_per_node=N -m lib train ...`` (DistributedDataParallel).
See docs/TRAINING.md.
"""
from .checkpoint import (check_compatible, load_checkpoint, read_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .engine import Schedule, TrainResult, flatten_metrics, validation_losses
from .evaluate import evaluate, metrics_eval_fn, metrics_path_for
from .finetune import finetune
from .loading import net_from_checkpoint
from .masks import check_masks_unchanged, mask_snapshot, masked_modules, zero_pruned
from .selection import make_loaders
from .split import split_record, split_train_val
from .train import train

__all__ = ["train", "finetune", "evaluate", "TrainResult", "Schedule", "save_checkpoint",
           "load_checkpoint", "read_checkpoint", "check_compatible", "rng_state",
           "set_rng_state", "split_train_val", "split_record", "make_loaders",
           "metrics_eval_fn", "metrics_path_for", "flatten_metrics", "validation_losses",
           "net_from_checkpoint", "masked_modules", "mask_snapshot", "zero_pruned", "check_masks_unchanged"]
