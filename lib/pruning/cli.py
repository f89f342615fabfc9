"""``python -m lib prune``: prune a base checkpoint with CUT or a baseline, save the compact model.

    python -m lib prune --config nyuv2_3task --profile cpu --checkpoint base.pth \\
        --method cut --tasks seg depth --sparsity 90 --out runs/pruned

``--method-option KEY=VALUE`` (repeatable) sets an option of the method (``python -m lib
methods --options`` lists them), checked before anything is read or written; ``--min-votes``
is the same as ``--method-option min_votes=...``. Methods of one's own files are reached by
setting ``CUT_PLUGINS`` (see :mod:`lib.plugins`).

Writes ``OUT/{method}_{sparsity}_{tasks}.pth`` (reference-readable state dict with
``weight_orig``/``weight_mask``; a plain, smaller state dict for ``structured_cut``) and its
``.json`` sidecar. For ``structured_cut`` ``--sparsity`` is the percent of every channel group
removed. Every input is checked before anything is read from the data or written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.checkpoints import load_base_model, pruned_filename
from lib.cli_args import (add_config_arguments, add_data_root_argument, add_device_argument,
                          add_loop_arguments, add_num_batches_argument, add_out_argument,
                          add_quiet_argument, add_seed_argument, add_set_argument, announce,
                          config_settings, parse_key_values, resolve_config)
from lib.config import load_config
from lib.tasks import check_task_selection
from lib.utils import check_output_file, resolve_device, set_cpu_threads

from .methods import METHODS, check_method
from .ranking import check_keep_ratio
from .sparsity import check_sparsity, reference_keep_ratio
from .workflow import prune_and_save


def _min_votes(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, reads="--checkpoint")
    parser.add_argument("--checkpoint", required=True, help="dense base model state dict (.pth)")
    parser.add_argument("--method", default="cut", choices=sorted(METHODS),
                        help="one-shot pruning method (python -m lib methods: every method "
                             "with its kind and summary)")
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the method, e.g. rounds=5 for cut_iterative "
                             "(repeatable; python -m lib methods --options lists them) "
                             "(default: the method's own)")
    parser.add_argument("--tasks", nargs="+", required=True, help="selected task names")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--sparsity", type=float,
                        help="target deployed sparsity in percent, [0, 100) (structured_cut: "
                             "percent of every channel group removed); this or --keep-ratio is "
                             "required (default: none)")
    budget.add_argument("--keep-ratio", type=float,
                        help="keep ratio in (0, 1]; this or --sparsity is required (default: "
                             "none)")
    parser.add_argument("--reference-keep-ratio", action="store_true",
                        help="use the config's KEEP_RATIO_TABLE for --sparsity (the reference's "
                             "nominal sparsity) instead of searching for the deployed sparsity")
    add_num_batches_argument(parser)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="scoring batch size (default: the config's BATCH_SIZE)")
    parser.add_argument("--min-votes", type=_min_votes, default=None,
                        help="backbone fusion of a method with a min_votes option: an integer, "
                             "all, any or majority (default: the method's own, 2 for cut and "
                             "structured_cut)")
    parser.add_argument("--mode", default="eval", choices=["eval", "train"],
                        help="network mode while scoring (train reproduces the reference)")
    add_data_root_argument(parser, "the config's DATA_ROOT / CUT_DATA_ROOT if it exists, "
                                   "else the built-in synthetic dataset (announced)")
    add_set_argument(parser)
    add_device_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_loop_arguments(parser, precision=False)
    add_out_argument(parser, "output folder", required=True)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


def _data_root(cfg, data_root: str | None, seed: int) -> str:
    """An explicit root must exist; without one, the config's root or the synthetic dataset."""
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-root {data_root} is not a folder")
        return data_root
    if Path(cfg.DATA_ROOT).is_dir():
        return cfg.DATA_ROOT
    from lib.data.synthetic import prepare_synthetic
    root = prepare_synthetic(cfg, seed=seed, progress=False)
    print(f"config DATA_ROOT {cfg.DATA_ROOT} does not exist: scoring on the built-in synthetic "
          f"dataset {root}")
    return root


def method_options(spec, pairs: list[str], min_votes=None) -> dict:
    """The method's options from ``--method-option`` pairs and ``--min-votes``, checked by its
    spec (a one-line ValueError naming the method, the option and what it expects)."""
    given = parse_key_values(pairs, "--method-option")
    if min_votes is not None:
        if "min_votes" in given:
            raise ValueError("give min_votes once: --min-votes or --method-option min_votes=...")
        given["min_votes"] = min_votes
    return spec.check_options(given)


def _run(args: argparse.Namespace) -> int:
    set_cpu_threads()
    source = resolve_config(args)
    cfg = load_config(args.config, profile=args.profile, **config_settings(args))
    announce(args, source)
    check_task_selection(args.tasks, cfg.TASKS, f"--tasks (config {args.config!r})")
    if args.num_workers is not None:
        from lib.data import loader_workers
        cfg.NUM_WORKERS = loader_workers(cfg, args.num_workers)
    spec = check_method(args.method)
    options = method_options(spec, args.method_option, args.min_votes)
    keep_ratio = None if args.keep_ratio is None else check_keep_ratio(args.keep_ratio)
    sparsity = None if args.sparsity is None else check_sparsity(args.sparsity)
    if args.reference_keep_ratio:
        if sparsity is None:
            raise ValueError("--reference-keep-ratio needs --sparsity")
        if spec.kind == "structured":
            raise ValueError(f"--reference-keep-ratio is a weight keep ratio; {args.method} "
                             f"takes a channel sparsity (--sparsity)")
        keep_ratio, sparsity_target = reference_keep_ratio(cfg, sparsity), None
    else:
        sparsity_target = sparsity
    num_batches = args.num_batches if args.num_batches is not None else cfg.PRUNE_NUM_BATCHES
    device = resolve_device(args.device)
    name = pruned_filename(args.method, args.tasks, sparsity=sparsity,
                           keep_ratio=None if sparsity is not None else keep_ratio)
    out = check_output_file(Path(args.out) / name, "pruned checkpoint")   # before any scoring

    net = load_base_model(args.checkpoint, cfg).to(device)
    criterion = loader = None
    if spec.uses_data(cfg.DATASET, **options):
        from lib.data import build_loader, check_files  # lazily: data-free methods need none
        from lib.losses import losses_from_config
        cfg.DATA_ROOT = _data_root(cfg, args.data_root, args.seed)
        criterion = losses_from_config(cfg)
        loader = build_loader(cfg, "train", batch_size=args.batch_size, seed=args.seed)
        check_files(loader)
    saved = prune_and_save(args.method, net, criterion, loader, out,
                           selected_tasks=args.tasks, tasks=cfg.TASKS, keep_ratio=keep_ratio,
                           sparsity=sparsity_target, num_batches=num_batches, seed=args.seed,
                           mode=args.mode, device=device, progress=not args.quiet,
                           meta={"config": cfg.CONFIG_NAME, "profile": args.profile,
                                 "base_checkpoint": str(args.checkpoint)}, **options)
    print(saved.summary())
    return 0
