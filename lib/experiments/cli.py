"""``python -m lib reproduce``: the paper's grid (prune, fine-tune, evaluate) -> table + figures."""
from __future__ import annotations

import argparse

from .study import DEFAULT_METHODS, DEFAULT_SPARSITIES, StudySpec, run_study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="nyuv2_3task",
                        help="nyuv2_3task | cityscapes | taskonomy")
    parser.add_argument("--profile", default="cpu", help="reference | cpu | tiny")
    parser.add_argument("--data-root", default=None,
                        help="dataset folder (default: the built-in synthetic dataset)")
    parser.add_argument("--out", default="runs/study", help="output folder (resumable)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="one-shot methods (lib.pruning.METHODS) and methods that train: "
                             "disparse_dynamic, minmax_dst, rigl, disparse_static_scratch, "
                             "minmax_pipeline (see docs/SPARSE.md)")
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES))
    parser.add_argument("--selection", action="append", nargs="+", default=None,
                        metavar="TASK", help="a task selection (repeat the flag for several); "
                                             "default: all tasks and every pair")
    parser.add_argument("--base-checkpoint", default=None,
                        help="dense base model (default: train one under OUT/base)")
    parser.add_argument("--base-iters", type=int, default=None)
    parser.add_argument("--finetune-iters", type=int, default=None)
    parser.add_argument("--num-batches", type=int, default=None)
    parser.add_argument("--sparsity-mode", choices=("target", "reference_table"),
                        default="target", help="target: hit the deployed sparsity; "
                                               "reference_table: the reference's keep ratios")
    parser.add_argument("--weighting", default=None,
                        help="task weighting of every training (fixed, equal, uncertainty, dwa, "
                             "minmax); default: each method's own (fixed; minmax for the "
                             "min-max pipeline)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu | cuda | auto (default)")


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    return StudySpec(config=args.config, profile=args.profile, data_root=args.data_root,
                     out_dir=args.out, methods=args.methods, sparsities=args.sparsities,
                     selections=args.selection, seed=args.seed,
                     base_checkpoint=args.base_checkpoint, base_iters=args.base_iters,
                     finetune_iters=args.finetune_iters, num_batches=args.num_batches,
                     sparsity_mode=args.sparsity_mode, device=args.device,
                     weighting=args.weighting)


def print_result(result) -> None:
    print(result.table_markdown)
    options = result.spec.metric_options
    print("metrics: " + (", ".join(f"{k}={v}" for k, v in options.items()) if options else
                         "the reference's definitions") + " (see docs/METRICS.md); "
          "delta: % vs dense, higher is better")
    print(f"table:   {result.table_csv}\n         {result.table_md}")
    for name, path in result.figures.items():
        print(f"figure:  {path}")
    print(f"done in {result.seconds / 60:.1f} min")


def run(args: argparse.Namespace) -> int:
    from lib.utils import set_cpu_threads
    set_cpu_threads()
    print_result(run_study(spec_from_args(args)))
    return 0
