"""Arguments and set-up shared by ``python -m lib train|finetune|evaluate``."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from lib.cli_args import add_config_arguments as add_config_profile
from lib.cli_args import (add_data_root_argument, add_device_argument, add_loop_arguments,
                          add_out_argument, add_quiet_argument, add_seed_argument,
                          add_set_argument, announce, config_settings, loop_overrides,
                          parse_key_values, resolve_config)
from lib.config import load_config

from .precision import Precision
from .weighting import DEFAULT_WEIGHTING, WEIGHTINGS, make_weighting


def add_config_arguments(parser: argparse.ArgumentParser, reads: str | None = None) -> None:
    """The flags of train / finetune / evaluate; ``reads``: the flag of the checkpoint whose
    sidecar may record the config and profile (:func:`lib.cli_args.resolve_config`)."""
    add_config_profile(parser, reads=reads)
    add_data_root_argument(parser, "the config's DATA_ROOT / CUT_DATA_ROOT")
    add_set_argument(parser)
    add_device_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_loop_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_argument(parser, "the run directory: where checkpoints and logs go", "--run-dir",
                     required=True)
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
                        help="continue from OUT/last.pth; refused when any setting differs "
                             "from the run's (see --allow-changed)")
    parser.add_argument("--allow-changed", nargs="+", default=[], metavar="KEY",
                        help="with --resume: settings that may differ from the run's: VAL_FREQ, "
                             "CKPT_FREQ, DATA_ROOT (the data moved), max_iters / MAX_ITERS / "
                             "RETRAIN_EPOCH (a longer or shorter run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in a non-empty OUT")
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
    spec = {"name": args.weighting, **parse_key_values(args.weighting_option,
                                                        "--weighting-option")}
    make_weighting(spec, tasks)
    return spec


def config_from_args(args: argparse.Namespace, announce_it: bool = True):
    """The config of ``--config`` / ``--profile`` (or what the checkpoint's sidecar records)
    with ``--set`` and ``--data-root`` applied, announced in one line (``announce_it``); each
    ``--set KEY=VALUE`` is parsed by the kind of the key's value (one-line errors for an
    unknown key, with the closest names, or a value of another kind)."""
    source = resolve_config(args)
    overrides = config_settings(args)
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


def record_settings(final_model, cfg, args: argparse.Namespace) -> None:
    """Record in ``final_model``'s sidecar the config and profile the run used, so that
    ``prune``, ``evaluate``, ``export`` and ``finetune`` of it take them and refuse a
    contradicting flag (:func:`lib.cli_args.resolve_config`): a dense ``base_model.pth`` gets
    a sidecar (architecture, config, profile, its tasks, seed); a sparse or fine-tuned final
    model's sidecar gets the config and profile where its record lacks them."""
    from lib.checkpoints import find_sidecar, load_base_model, read_sidecar, write_sidecar
    from lib.utils import atomic_write_json

    settings = {"config": cfg.CONFIG_NAME, "profile": args.profile}
    if final_model.name == "base_model.pth":
        write_sidecar(load_base_model(final_model, cfg), final_model,
                      meta={**settings, "selected_tasks": list(cfg.TASKS), "seed": args.seed})
        return
    side = find_sidecar(final_model)
    if side is None:
        return
    record = read_sidecar(side)
    meta = dict(record.get("meta") or {})
    missing = {k: v for k, v in settings.items() if meta.get(k) is None}
    if missing:
        atomic_write_json({**record, "meta": {**meta, **missing}}, side)


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
        result = loop(net, losses_from_config(cfg), loaders.train, cfg, args.out,
                      weighting=weighting, val_loader=loaders.val, max_iters=args.max_iters,
                      lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
                      overwrite=args.overwrite,
                      eval_fn=metrics_eval_fn(cfg) if args.metrics else None,
                      log=not args.quiet, split=loaders.split,
                      allow_changed=args.allow_changed)
        if info.is_main:
            record_settings(result.final_model, cfg, args)
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
