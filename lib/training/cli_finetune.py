"""``python -m lib finetune``: fine-tune a pruned compact model with its masks held.

    python -m lib finetune --config nyuv2_3task --profile cpu --data-root D \
        --pruned runs/nyu/cut/pruned.pth --run-dir runs/nyu/cut/finetune

``--pruned`` is a file written by ``lib.pruning.save_pruned`` (state dict with
weight_orig/weight_mask + JSON sidecar with the architecture) or a fine-tuning checkpoint.
Works under ``torchrun`` like ``python -m lib train``.
"""
from __future__ import annotations

import argparse

from .cli_common import add_config_arguments, add_run_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--pruned", required=True, help="pruned compact model to fine-tune")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from lib.losses import SceneNetLoss

    from .distributed import init_from_env
    from .evaluate import evaluate, metrics_eval_fn, metrics_path_for
    from .finetune import finetune
    from .loading import net_from_checkpoint
    from .selection import make_loaders

    info = init_from_env()
    try:
        cfg = config_from_args(args)
        net = net_from_checkpoint(args.pruned, cfg)
        loaders = make_loaders(cfg, selection=args.selection, val_fraction=args.val_fraction,
                               seed=args.seed)
        result = finetune(net, SceneNetLoss.from_config(cfg), loaders.train, cfg, args.run_dir,
                          val_loader=loaders.val, max_iters=args.max_iters, lr=args.lr,
                          seed=args.seed, device=args.device, resume=args.resume,
                          overwrite=args.overwrite, amp=args.amp,
                          eval_fn=metrics_eval_fn(cfg) if args.metrics else None,
                          log=not args.quiet, split=loaders.split)
        if info.is_main:
            chosen = result.best_checkpoint or result.final_model
            model = net_from_checkpoint(chosen, cfg)
            metrics = evaluate(model, loaders.test, cfg, device=args.device,
                               out_path=metrics_path_for(chosen), progress=not args.quiet)
            print(f"fine-tuned {result.iterations} iterations; test metrics of {chosen}: "
                  f"{metrics}")
    finally:
        if info.enabled:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0
