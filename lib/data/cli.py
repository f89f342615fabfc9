"""``python -m lib synthetic``: write a synthetic dataset in one of the real on-disk layouts."""
from __future__ import annotations

import argparse

from lib.config import load_config

from .synthetic import LAYOUTS, write_dataset


def cpu_profile_size(layout: str) -> tuple[int, int]:
    """The image size the ``cpu`` profile uses for ``layout`` (what the demo generates)."""
    return tuple(load_config(layout, profile="cpu").IMAGE_SHAPE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, default="nyuv2_3",
                        help="on-disk layout (and class set) to write")
    parser.add_argument("--root", required=True, help="target folder (must not exist or be empty)")
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--num-test", type=int, default=80)
    parser.add_argument("--height", type=int, default=None,
                        help="default: the cpu profile's (96 for every layout)")
    parser.add_argument("--width", type=int, default=None,
                        help="default: the cpu profile's (128 NYU, 192 Cityscapes, 96 Taskonomy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="render in this many processes (same files for any value; worth "
                             "it on idle cores)")


def run(args: argparse.Namespace) -> int:
    if args.num_train < 1 or args.num_test < 1:   # the workflow trains and evaluates on it
        raise ValueError(f"--num-train and --num-test must be >= 1 (a dataset to train and "
                         f"evaluate on), got train={args.num_train} test={args.num_test}")
    height, width = cpu_profile_size(args.layout)
    height = args.height or height
    width = args.width or width
    root = write_dataset(args.root, args.layout, args.num_train, args.num_test, height, width,
                         seed=args.seed, progress=True, workers=args.workers)
    print(f"wrote {args.num_train} train + {args.num_test} test {args.layout} samples "
          f"({height}x{width}) to {root}")
    return 0
