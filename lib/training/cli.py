"""``python -m lib train``: train the dense base model, or a sparse one; torchrun-ready.

Single process:   python -m lib train --config nyuv2_3task --profile cpu --data-root D --out R
Several GPUs:     torchrun --nproc_per_node=4 -m lib train --config nyuv2_3task --data-root D --out R
Sparse training:  python -m lib train ... --sparse disparse_dynamic --sparsity 90 \\
                      --sparse-option interval=10 end=200 [--tasks seg depth]
(``torchrun`` sets RANK/WORLD_SIZE; the processes join with NCCL on GPUs, gloo on CPU.)
The best checkpoint is then evaluated on the test split (``best.metrics.json``). A dense
run's ``base_model.pth`` gets a sidecar ``base_model.json`` recording the config, profile and
tasks, which ``prune`` / ``evaluate`` / ``export`` of it then take.
"""
from __future__ import annotations

import argparse

from lib.utils import seed_everything

from lib.cli_args import parse_key_values

from .cli_common import add_config_arguments, add_run_arguments, run_and_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--sparse", default=None, metavar="METHOD",
                        help="train a sparse network from scratch: disparse_dynamic, minmax_dst, "
                             "rigl (masks change during training) or disparse_static (DiSparse's "
                             "static protocol); see docs/SPARSE.md (default: none, a dense "
                             "network)")
    parser.add_argument("--sparsity", type=float, default=None,
                        help="with --sparse: target sparsity in percent (minmax_dst: per layer); "
                             "required with --sparse (default: none)")
    parser.add_argument("--sparse-option", nargs="*", default=[], metavar="KEY=VALUE",
                        help="with --sparse: method options, e.g. interval=10 end=200 "
                             "(default: the method's)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="with --sparse: the tasks the network keeps (default: all)")


def run(args: argparse.Namespace) -> int:
    from lib.models import model_from_config

    from .train import train

    if args.sparse is None:
        if args.sparsity is not None or args.sparse_option or args.tasks:
            raise ValueError("--sparsity, --sparse-option and --tasks need --sparse METHOD")

        def fresh_net(cfg):
            seed_everything(args.seed)  # same initial weights on every rank
            return model_from_config(cfg)

        return run_and_report(args, fresh_net, train, "trained")
    return _run_sparse(args)


def _run_sparse(args: argparse.Namespace) -> int:
    from lib.sparse.train import check_method, train_sparse

    check_method(args.sparse)
    if args.sparsity is None:
        raise ValueError(f"--sparse {args.sparse} needs --sparsity (percent)")
    options = parse_key_values(args.sparse_option, "--sparse-option")

    def loop(_, criterion, train_loader, cfg, run_dir, **kwargs):
        return train_sparse(args.sparse, args.sparsity, criterion, train_loader, cfg, run_dir,
                            selected_tasks=args.tasks, options=options, **kwargs)

    return run_and_report(args, lambda cfg: None, loop, f"trained {args.sparse}")
