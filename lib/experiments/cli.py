"""``python -m lib reproduce``: the paper's grid (prune, fine-tune, evaluate) -> table + figures."""
from __future__ import annotations

import argparse

from lib.cli_args import (add_config_arguments, add_data_root_argument, add_device_argument,
                          add_loop_arguments, add_num_batches_argument, add_out_argument,
                          add_quiet_argument, add_renamed, add_seed_argument, add_set_argument,
                          announce, config_settings, loop_overrides, parse_key_values,
                          resolve_config)

from .engine import ENGINES, EngineOptions
from .study import DEFAULT_METHODS, DEFAULT_SPARSITIES, StudySpec, run_study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config="nyuv2_3task", reads="--checkpoint")
    add_data_root_argument(parser, "the built-in synthetic dataset")
    add_set_argument(parser)
    add_device_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_out_argument(parser, "output folder (resumable)", default="runs/study")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="registered methods, one-shot or trained (python -m lib methods "
                             "lists them with their kinds; docs/SPARSE.md)")
    parser.add_argument("--method-option", action="append", default=[],
                        metavar="METHOD.KEY=VALUE",
                        help="an option of one of --methods, e.g. cut_floor.min_density=0.05 "
                             "or rigl.interval=10 (repeatable; python -m lib methods --options "
                             "lists them) (default: each method's own)")
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES),
                        help="target sparsities in percent")
    add_renamed(parser, "--tasks", "--selection", action="append", nargs="+", default=None,
                metavar="TASK", help="a task selection (repeat the flag for several); "
                                     "default: all tasks and every pair")
    add_renamed(parser, "--checkpoint", "--base-checkpoint", default=None,
                help="dense base model (default: train one under OUT/base)")
    parser.add_argument("--base-iters", type=int, default=None,
                        help="iterations of the base model's training (default: the config's "
                             "MAX_ITERS)")
    add_renamed(parser, "--max-iters", "--finetune-iters", type=int, default=None,
                help="fine-tuning iterations of each cell (default: the config's "
                     "RETRAIN_EPOCH schedule)")
    add_num_batches_argument(parser)
    parser.add_argument("--synthetic-train", type=int, default=StudySpec.synthetic_train,
                        help="without --data-root: synthetic train samples (CIFAR-100: per fine "
                             "class)")
    parser.add_argument("--synthetic-test", type=int, default=StudySpec.synthetic_test,
                        help="without --data-root: synthetic test samples (CIFAR-100: per fine "
                             "class)")
    parser.add_argument("--metric-option", nargs="*", default=[], metavar="KEY=VALUE",
                        help="metric variants, e.g. miou=present (AdaShare's datasets) or "
                             "averaging=pixel (nyuv2_mtan); default: docs/METRICS.md's defaults")
    parser.add_argument("--sparsity-mode", choices=("target", "reference_table"),
                        default="target", help="target: hit the deployed sparsity; "
                                               "reference_table: the reference's keep ratios")
    parser.add_argument("--weighting", default=None,
                        help="task weighting of every training (fixed, equal, uncertainty, dwa, "
                             "minmax); default: each method's own (fixed; minmax for the "
                             "min-max pipeline)")
    parser.add_argument("--plan", action="store_true",
                        help="print the grid (bases, cells, dependencies) and its estimated "
                             "cost from a few timed iterations; writes no results")
    add_loop_arguments(parser)
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine's flags (lib.experiments.engine), shared by reproduce and demo."""
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=ENGINES, default=None,
                       help="ray (default; $CUT_ENGINE overrides the default): bases and cells "
                            "as Ray tasks; serial: one after another in this process")
    group.add_argument("--address", default=None,
                       help="Ray cluster to run on: auto or HOST:PORT (also $RAY_ADDRESS); "
                            "default: an embedded local instance for this run")
    group.add_argument("--gpus-per-cell", type=float, default=None,
                       help="GPUs per task, fractions allowed (default: 1 with CUDA, else 0)")
    group.add_argument("--cpus-per-cell", type=int, default=1,
                       help="CPUs (torch threads) per task; the serial engine uses as many "
                            "(default 1: one task per core)")
    group.add_argument("--max-retries", type=int, default=3,
                       help="retries of a task whose worker or node died (default 3)")
    group.add_argument("--jobs", type=int, default=None,
                       help="CPUs of the embedded Ray instance (default: every core)")


def engine_from_args(args: argparse.Namespace) -> EngineOptions:
    values = dict(address=args.address, gpus_per_cell=args.gpus_per_cell,
                  cpus_per_cell=args.cpus_per_cell, max_retries=args.max_retries,
                  num_cpus=args.jobs)
    return EngineOptions(**values) if args.engine is None else \
        EngineOptions(engine=args.engine, **values)


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    return StudySpec(config=args.config, profile=args.profile, data_root=args.data_root,
                     out_dir=args.out, methods=args.methods, sparsities=args.sparsities,
                     selections=args.tasks, seed=args.seed,
                     base_checkpoint=args.checkpoint, base_iters=args.base_iters,
                     finetune_iters=args.max_iters, num_batches=args.num_batches,
                     sparsity_mode=args.sparsity_mode,
                     device=None if args.device == "auto" else args.device,
                     weighting=args.weighting, synthetic_train=args.synthetic_train,
                     synthetic_test=args.synthetic_test,
                     metric_options=parse_key_values(args.metric_option, "--metric-option"),
                     method_options=study_method_options(args.method_option),
                     overrides={**config_settings(args), **loop_overrides(args)})


def study_method_options(pairs: list[str]) -> dict[str, dict]:
    """``--method-option METHOD.KEY=VALUE`` pairs as ``{method: {key: value}}``, each value
    checked and converted by its method's spec."""
    from lib.pruning.registry import method_spec

    out: dict[str, dict] = {}
    for key, value in parse_key_values(pairs, "--method-option").items():
        method, dot, option = key.partition(".")
        if not dot or not method or not option:
            raise ValueError(f"--method-option {key}={value}: expected METHOD.KEY=VALUE, e.g. "
                             f"cut_floor.min_density=0.05")
        out.setdefault(method, {})[option] = value
    return {m: method_spec(m).check_options(o) for m, o in out.items()}


def print_result(result) -> None:
    print(result.table_markdown)
    options = result.spec.metric_options
    print("metrics: " + (", ".join(f"{k}={v}" for k, v in options.items()) if options else
                         "the documented defaults") + " (see docs/METRICS.md); "
          "delta: % vs dense, higher is better")
    print(f"table:   {result.table_csv}\n         {result.table_md}")
    for name, path in result.figures.items():
        print(f"figure:  {path}")
    print(f"done in {result.seconds / 60:.1f} min")


def run(args: argparse.Namespace) -> int:
    announce(args, resolve_config(args))
    spec, engine = spec_from_args(args), engine_from_args(args)
    if args.plan:
        from .plan import print_plan
        print_plan(spec, engine, progress=not args.quiet)
        return 0
    print_result(run_study(spec, engine=engine, progress=not args.quiet))
    return 0
