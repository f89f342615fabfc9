"""``python -m lib demo``: the whole study on the built-in synthetic dataset, on a CPU.

Generates the synthetic NYU-v2-format dataset, trains a small base model, runs CUT and the
baselines (prune, fine-tune, evaluate) over a small grid and prints the table and the figures'
paths. Its cells run as Ray tasks, one 1-thread task per core (``--engine serial``: one
after another in this process). Sized to finish in minutes on 2 cores; rerunning it resumes
from what is finished.
"""
from __future__ import annotations

import argparse
import dataclasses

from lib.cli_args import (add_config_arguments, add_out_argument, add_quiet_argument,
                          add_seed_argument, add_set_argument, announce, config_settings,
                          resolve_config)

from .cli import add_engine_arguments, engine_from_args, print_result
from .study import DEFAULT_METHODS, run_study
from .demo import DEMO_CONFIG, demo_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config=DEMO_CONFIG, with_config=False)
    add_set_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_out_argument(parser, "output folder (resumable)", default="demo_output")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="methods of the grid (see python -m lib reproduce --help)")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    announce(args, resolve_config(args))
    spec = demo_spec(out_dir=args.out, seed=args.seed, methods=args.methods,
                     profile=args.profile)
    settings = config_settings(args)
    if settings:
        spec = dataclasses.replace(spec, overrides={**spec.overrides, **settings})
    print_result(run_study(spec, engine=engine_from_args(args), progress=not args.quiet))
    return 0
