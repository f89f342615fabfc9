"""``python -m lib synthetic``: write a synthetic dataset in one of the real on-disk layouts.

    python -m lib synthetic --layout nyuv2_mtan --out data/nyu_mtan       # MTAN's NYUv2 files
    python -m lib synthetic --layout cifar100_mtl --out data/cifar        # cifar-100-python/
    python -m lib synthetic --config cifar100_mtl --profile tiny --out D  # what a config reads
    CUT_PLUGINS=examples/custom_dataset.py python -m lib synthetic --config toy_scenes --out D
                                                    # a registered dataset's own writer

Image size and default counts are the profile's (``--profile``, default cpu) for ``--config``,
or without one for the first config that reads the layout (``lib.config.canonical_name``).
"""
from __future__ import annotations

import argparse

from lib.cli_args import (add_config_arguments, add_out_argument, add_quiet_argument,
                          add_renamed, add_seed_argument, add_set_argument, announce,
                          config_settings, resolve_config)
from lib.config import canonical_name, load_config
from lib.datasets import dataset_names, dataset_spec

from .synthetic import ALL_LAYOUTS, write_dataset, write_own
from .synthetic.minmax import DEFAULT_COUNTS as MINMAX_COUNTS

DEFAULT_COUNTS = (320, 80)


def default_counts(layout: str, profile: str | None) -> tuple[int, int]:
    """Train / test counts a layout gets by default (CIFAR-100: images per fine class)."""
    if layout in MINMAX_COUNTS:
        counts = MINMAX_COUNTS[layout]
        return counts.get(profile, counts[None])
    return (8, 4) if profile == "tiny" else DEFAULT_COUNTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    own = [n for n in dataset_names() if n not in ALL_LAYOUTS and dataset_spec(n).synthetic]
    parser.add_argument("--layout", choices=list(ALL_LAYOUTS) + own, default=None,
                        help="on-disk layout (and class set) to write (default: nyuv2_3, or the "
                             "--config's dataset)")
    add_config_arguments(parser, required=False,
                         config_help="write the layout and image size this config reads "
                                     "(default: the layout's config)")
    add_set_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_out_argument(parser, "the dataset folder to write (must not exist or be empty)",
                     "--root", required=True)
    parser.add_argument("--num-train", type=int, default=None,
                        help="train samples (CIFAR-100: per fine class); default 320, "
                             "cifar100_mtl 20, tiny profile 8 (CIFAR-100 2)")
    parser.add_argument("--num-test", type=int, default=None,
                        help="test samples (CIFAR-100: per fine class); default 80, "
                             "cifar100_mtl 5, tiny profile 4 (CIFAR-100 1)")
    parser.add_argument("--height", type=int, default=None,
                        help="image height (default: the profile's: cpu 96 for every layout; "
                             "CIFAR-100 32)")
    parser.add_argument("--width", type=int, default=None,
                        help="image width (default: the profile's: cpu 128 NYU, 192 Cityscapes, "
                             "96 Taskonomy, CIFAR-100 32)")
    # Not the shared --num-workers (data-loading workers, the profile's by default): the
    # processes that render the files, one unless told.
    add_renamed(parser, "--num-workers", "--workers", type=int, default=1, metavar="N",
                help="render in this many worker processes (same files for any N; worth it on "
                     "idle cores; the AdaShare layouts only)")


def run(args: argparse.Namespace) -> int:
    resolve_config(args)
    if args.config is None:
        args.config = canonical_name(args.layout or "nyuv2_3")   # the dataset's first config
    cfg = load_config(args.config, profile=args.profile, **config_settings(args))
    if args.layout is not None and args.layout != cfg.DATASET:
        raise ValueError(f"--layout {args.layout} differs from config {args.config}'s "
                         f"dataset {cfg.DATASET}")
    announce(args)
    layout, (height, width) = cfg.DATASET, tuple(cfg.IMAGE_SHAPE)
    height, width = args.height or height, args.width or width
    num_train, num_test = default_counts(layout, args.profile)
    num_train = num_train if args.num_train is None else args.num_train
    num_test = num_test if args.num_test is None else args.num_test
    if num_train < 1 or num_test < 1:   # the workflow trains and evaluates on it
        raise ValueError(f"--num-train and --num-test must be >= 1 (a dataset to train and "
                         f"evaluate on), got train={num_train} test={num_test}")
    if layout in ALL_LAYOUTS:
        root = write_dataset(args.out, layout, num_train, num_test, height, width,
                             seed=args.seed, progress=not args.quiet, workers=args.num_workers)
    else:   # a registered dataset's own writer (e.g. a CUT_PLUGINS file's)
        cfg.IMAGE_SHAPE = (height, width)
        root = write_own(args.out, cfg, num_train, num_test, seed=args.seed,
                         progress=not args.quiet, workers=args.num_workers)
    unit = " per fine class" if layout == "cifar100_mtl" else ""
    print(f"wrote {num_train} train + {num_test} test {layout} samples{unit} "
          f"({height}x{width}) to {root}")
    return 0
