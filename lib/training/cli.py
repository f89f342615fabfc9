"""``python -m lib train``: train the dense base model; torchrun-ready.

Single process:   python -m lib train --config nyuv2_3task --profile cpu --data-root D --run-dir R
Several GPUs:     torchrun --nproc_per_node=4 -m lib train --config nyuv2_3task --data-root D --run-dir R
(``torchrun`` sets RANK/WORLD_SIZE; the processes join with NCCL on GPUs, gloo on CPU.)
The best checkpoint is then evaluated on the test split (``best.metrics.json``).
"""
from __future__ import annotations

import argparse

from lib.utils import seed_everything

from .cli_common import add_config_arguments, add_run_arguments, run_and_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from lib.models import model_from_config

    from .train import train

    def fresh_net(cfg):
        seed_everything(args.seed)  # same initial weights on every rank
        return model_from_config(cfg)

    return run_and_report(args, fresh_net, train, "trained")
