"""``python -m lib synthetic``: write a synthetic dataset in one of the real on-disk layouts."""
from __future__ import annotations

import argparse

from .synthetic import LAYOUTS, write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, default="nyuv2_3",
                        help="on-disk layout (and class set) to write")
    parser.add_argument("--root", required=True, help="target folder (must not exist or be empty)")
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--num-test", type=int, default=80)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    root = write_dataset(args.root, args.layout, args.num_train, args.num_test, args.height,
                         args.width, seed=args.seed, progress=True)
    print(f"wrote {args.num_train} train + {args.num_test} test {args.layout} samples "
          f"({args.height}x{args.width}) to {root}")
    return 0
