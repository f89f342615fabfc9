"""Arguments and set-up shared by ``python -m lib train|finetune|evaluate``."""
from __future__ import annotations

import argparse
import ast
from typing import Any, Callable

from lib.cli_args import add_config_arguments as add_config_profile
from lib.cli_args import announce, resolve_config
from lib.config import load_config, parse_setting

from .precision import PRECISIONS, Precision
from .weighting import DEFAULT_WEIGHTING, WEIGHTINGS, make_weighting


def add_config_arguments(parser: argparse.ArgumentParser, reads: str | None = None) -> None:
    """The flags of train / finetune / evaluate; ``reads``: the flag of the checkpoint whose
    sidecar may record the config and profile (:func:`lib.cli_args.resolve_config`)."""
    add_config_profile(parser, reads=reads)
    parser.add_argument("--data-root", default=None,
                        help="dataset root (default: the config's DATA_ROOT / CUT_DATA_ROOT)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config attributes, e.g. --set BATCH_SIZE=8 VAL_FREQ=50")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:0")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    add_loop_arguments(parser)


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """Data workers, precision and memory layout of every training/evaluation loop (train,
    finetune, evaluate, the study)."""
    parser.add_argument("--num-workers", type=int, default=None, metavar="N",
                        help="data-loading worker processes (default: the profile's "
                             "NUM_WORKERS); results are the same for any N")
    parser.add_argument("--amp", nargs="?", const="fp16", default=None,
                        choices=list(PRECISIONS),
                        help="forward-pass precision: off (float32, default: the config's AMP), "
                             "bf16 (CPU or CUDA), fp16 (CUDA, with a gradient scaler); a bare "
                             "--amp is fp16")
    parser.add_argument("--channels-last", action="store_true", default=None,
                        help="channels_last memory layout (default: the config's "
                             "CHANNELS_LAST)")


def loop_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values :func:`add_loop_arguments`' flags set (only those given)."""
    return {key: getattr(args, option) for option, key in
            (("num_workers", "NUM_WORKERS"), ("amp", "AMP"), ("channels_last", "CHANNELS_LAST"))
            if getattr(args, option, None) is not None}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="where checkpoints and logs go")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="override the iterations (default: the config's MAX_ITERS; "
                             "finetune: its RETRAIN_EPOCH)")
    parser.add_argument("--lr", type=float, default=None,
                        help="override the learning rate (default: the config's INIT_LR; "
                             "finetune: its RETRAIN_LR)")
    parser.add_argument("--selection", default="val", choices=["val", "test"],
                        help="select the best checkpoint on a validation split of the train "
                             "list (val, default) or on the test set as the reference does (test)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of the train list held out for selection (default 0.1)")
    parser.add_argument("--metrics", action="store_true",
                        help="also compute the task metrics at each validation (slower)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/last.pth; refused when any setting differs "
                             "from the run's (see --allow-changed)")
    parser.add_argument("--allow-changed", nargs="+", default=[], metavar="KEY",
                        help="with --resume: settings that may differ from the run's: VAL_FREQ, "
                             "CKPT_FREQ, DATA_ROOT (the data moved), max_iters / MAX_ITERS / "
                             "RETRAIN_EPOCH (a longer or shorter run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in a non-empty RUN_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar / tensorboard")
    parser.add_argument("--weighting", default=DEFAULT_WEIGHTING,
                        help=f"how the task losses are combined: {', '.join(sorted(WEIGHTINGS))} "
                             f"(default {DEFAULT_WEIGHTING}: the config's LAMBDAS); see "
                             f"docs/TRAINING.md")
    parser.add_argument("--weighting-option", nargs="*", default=[], metavar="KEY=VALUE",
                        help="weighting options, e.g. beta=50 gamma=5 (minmax), temperature=2 "
                             "(dwa), init=-0.5 (uncertainty), epoch_iters=100")


def weighting_from_args(args: argparse.Namespace, tasks) -> dict[str, Any]:
    """``{"name": ..., **options}`` from ``--weighting`` / ``--weighting-option``, validated
    (a one-line error for unknown or out-of-range options) before anything is written."""
    spec = {"name": args.weighting, **parse_overrides(args.weighting_option,
                                                       flag="--weighting-option")}
    make_weighting(spec, tasks)
    return spec


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["BATCH_SIZE=8", "DATA_ROOT=/x"]`` -> ``{"BATCH_SIZE": 8, "DATA_ROOT": "/x"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE")
        key, raw = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def config_from_args(args: argparse.Namespace, announce_it: bool = True):
    """The config of ``--config`` / ``--profile`` (or what the checkpoint's sidecar records)
    with ``--set`` and ``--data-root`` applied, announced in one line (``announce_it``); each
    ``--set KEY=VALUE`` is parsed by the kind of the key's value (one-line errors for an
    unknown key, with the closest names, or a value of another kind)."""
    source = resolve_config(args)
    base = load_config(args.config, profile=args.profile)
    overrides: dict[str, Any] = {}
    for pair in args.set:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        key, raw = pair.split("=", 1)
        overrides[key] = parse_setting(base, key, raw)
    if args.data_root is not None:
        overrides["DATA_ROOT"] = args.data_root
    overrides.update(loop_overrides(args))
    cfg = load_config(args.config, profile=args.profile, **overrides)
    from lib.data import loader_workers
    loader_workers(cfg)   # a bad --num-workers / NUM_WORKERS: one line before anything runs
    Precision.resolve(cfg)
    if announce_it:
        announce(args, source)
    return cfg


def run_and_report(args: argparse.Namespace, build_net: Callable[[Any], Any],
                   loop: Callable[..., Any], verb: str) -> int:
    """The body shared by ``train`` and ``finetune``, torchrun-ready.

    Builds the config and the loaders, ``build_net(cfg)``, runs ``loop`` (``train`` or
    ``finetune``) with the command's options, then (rank 0) evaluates the selected checkpoint
    on the test split and writes ``<ckpt>.metrics.json``.
    """
    from lib.data import check_content
    from lib.losses import losses_from_config

    from .distributed import init_from_env
    from .evaluate import evaluate, metrics_eval_fn, metrics_path_for
    from lib.checkpoints import load_network
    from .selection import make_loaders

    info = init_from_env()
    try:
        cfg = config_from_args(args, announce_it=info.is_main)
        weighting = weighting_from_args(args, cfg.TASKS)
        loaders = make_loaders(cfg, selection=args.selection, val_fraction=args.val_fraction,
                               seed=args.seed)
        for data in (loaders.val, loaders.test):   # read in full before anything is written:
            check_content(data, progress=not args.quiet)   # a bad file is not found at the end
        net = build_net(cfg)
        result = loop(net, losses_from_config(cfg), loaders.train, cfg, args.run_dir,
                      weighting=weighting, val_loader=loaders.val, max_iters=args.max_iters,
                      lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
                      overwrite=args.overwrite,
                      eval_fn=metrics_eval_fn(cfg) if args.metrics else None,
                      log=not args.quiet, split=loaders.split,
                      allow_changed=args.allow_changed)
        if info.is_main:
            chosen = result.best_checkpoint or result.final_model
            model = load_network(chosen, cfg)
            metrics = evaluate(model, loaders.test, cfg, device=args.device,
                               out_path=metrics_path_for(chosen), progress=not args.quiet)
            print(f"{verb} {result.iterations} iterations; test metrics of {chosen}: {metrics}")
    finally:
        if info.enabled:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0
