"""Method comparison that decides: every method over several seeds, paired intervals vs CUT.

    python benchmarks/bench_methods.py                  # 5 seeds, 70/90/95 %, every method
    python benchmarks/bench_methods.py --quick          # 3 seeds, 90 %, CUT/SNIP/LTH/random
    python benchmarks/bench_methods.py --grid scratch   # CUT vs the from-scratch methods, 90 %
    python benchmarks/write_bench_readme.py             # README section + figure from it

Each seed trains its own base model on the ``bench`` profile (cached under ``--out``, reused
by reruns and by both grids) and runs the grid on the same synthetic dataset. Prints the base
models' accuracy floors, the control (the dense model fine-tuned exactly like the pruned ones;
it should stay within ±2 % Δ), per method and sparsity the mean ± std of Δ vs dense over the
seeds with the number of collapsed layers, and CUT minus each method paired by seed with a 95 %
Student t interval, one line per comparison saying whether it is decided. Writes
``--out/summary.json``. Resumable: finished cells are read back. Every seed's base and cells
run in one queue on the study engine (lib.experiments.engine; Ray by default: an embedded
instance of ``--jobs`` CPUs, one 1-thread task per core; ``--engine serial``, ``--address``,
``--gpus-per-cell`` as for ``python -m lib reproduce``); each task's log is in its unit's
folder (``--out/seed{k}/cells/<cell>/task.log``).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning

from lib.experiments.benchmark import (GRIDS, BenchmarkSpec, check_benchmark,  # noqa: E402
                                       default_jobs, format_report, run_benchmark)
from lib.experiments.cli import add_engine_arguments, engine_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--quick", action="store_true", help="the 10-minute grid (--grid quick)")
    parser.add_argument("--seeds", nargs="+", type=int, help="override the grid's seeds")
    parser.add_argument("--sparsities", nargs="+", type=float, help="override its sparsities")
    parser.add_argument("--methods", nargs="+", help="override its methods (cut must be one)")
    parser.add_argument("--profile", default="bench", help="config profile (tests: tiny)")
    parser.add_argument("--out", default="runs/bench_methods", help="output folder (resumable)")
    parser.add_argument("--synthetic-train", type=int, default=320)
    parser.add_argument("--synthetic-test", type=int, default=64)
    parser.add_argument("--device", default=None)
    add_engine_arguments(parser)    # --engine, --address, ..., --jobs: the instance's CPUs
    parser.add_argument("--quiet", action="store_true",
                        help="no study progress bar (training and scoring still show theirs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grid = GRIDS["quick" if args.quick else args.grid]
    changes = {k: tuple(v) for k, v in (("seeds", args.seeds), ("sparsities", args.sparsities),
                                        ("methods", args.methods)) if v}
    try:
        spec = BenchmarkSpec(grid=replace(grid, **changes), out_dir=args.out,
                             profile=args.profile, synthetic_train=args.synthetic_train,
                             synthetic_test=args.synthetic_test, device=args.device)
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        engine = engine_from_args(args)
        check_benchmark(spec)   # every input, before any work (run_benchmark checks it too)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_methods: {exc}", file=sys.stderr)
        return 2
    jobs = default_jobs(spec) if args.jobs is None else args.jobs
    try:
        summary = run_benchmark(spec, progress=not args.quiet, jobs=jobs, engine=engine)
    except (ValueError, OSError, RuntimeError) as exc:    # a failed unit, a locked folder, ...
        print(f"bench_methods: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_report(summary))
    print(f"\nsummary: {Path(args.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
