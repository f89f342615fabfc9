"""``python -m lib train``: train the dense base model; torchrun-ready.

Single process:   python -m lib train --config nyuv2_3task --profile cpu --data-root D --run-dir R
Several GPUs:     torchrun --nproc_per_node=4 -m lib train --config nyuv2_3task --data-root D --run-dir R
(``torchrun`` sets RANK/WORLD_SIZE; the processes join with NCCL on GPUs, gloo on CPU.)
The best checkpoint is then evaluated on the test split (``best.metrics.json``).
"""
from __future__ import annotations

import argparse

from lib.utils import seed_everything

from .cli_common import add_config_arguments, add_run_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from lib.losses import SceneNetLoss
    from lib.models import SceneNet

    from .distributed import init_from_env
    from .evaluate import evaluate, metrics_eval_fn, metrics_path_for
    from .loading import net_from_checkpoint
    from .selection import make_loaders
    from .train import train

    info = init_from_env()
    try:
        cfg = config_from_args(args)
        loaders = make_loaders(cfg, selection=args.selection, val_fraction=args.val_fraction,
                               seed=args.seed)
        seed_everything(args.seed)  # same initial weights on every rank
        net = SceneNet.from_config(cfg)
        result = train(net, SceneNetLoss.from_config(cfg), loaders.train, cfg, args.run_dir,
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
            print(f"trained {result.iterations} iterations; test metrics of {chosen}: {metrics}")
    finally:
        if info.enabled:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0
