"""``python -m lib synthetic``: write a synthetic dataset in one of the real on-disk layouts."""
from __future__ import annotations

import argparse

from .synthetic import LAYOUTS, write_dataset

# The CPU profile's image sizes (lib.config PROFILES["cpu"]).
DEFAULT_SIZES = {"nyuv2_3": (128, 160), "cityscapes": (128, 256), "taskonomy": (128, 128)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, default="nyuv2_3",
                        help="on-disk layout (and class set) to write")
    parser.add_argument("--root", required=True, help="target folder (must not exist or be empty)")
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--num-test", type=int, default=80)
    parser.add_argument("--height", type=int, default=None,
                        help="default: 128 (all layouts)")
    parser.add_argument("--width", type=int, default=None,
                        help="default: 160 NYU, 256 Cityscapes, 128 Taskonomy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="render in this many processes (same files for any value; worth "
                             "it on idle cores)")


def run(args: argparse.Namespace) -> int:
    height, width = DEFAULT_SIZES[args.layout]
    height = args.height or height
    width = args.width or width
    root = write_dataset(args.root, args.layout, args.num_train, args.num_test, height, width,
                         seed=args.seed, progress=True, workers=args.workers)
    print(f"wrote {args.num_train} train + {args.num_test} test {args.layout} samples "
          f"({height}x{width}) to {root}")
    return 0
