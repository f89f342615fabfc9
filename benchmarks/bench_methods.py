"""Method comparison with its spread: the demo grid run with several seeds.

    python benchmarks/bench_methods.py [--seeds 0 1 2] [--out runs/bench_methods]

Each seed trains its own base model and runs the demo's grid (CUT and the baselines, several
sparsities, two task selections) on the same synthetic dataset (``data_seed`` is fixed), so
the spread covers training, pruning and data-order randomness. Prints, per selection, method
and sparsity, the mean ± std of Δ vs dense (percent, higher is better) over the seeds, and
CUT's margin over each baseline with its spread, and the control: the dense model fine-tuned
exactly like the pruned ones. Resumable: finished cells are reused.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning

from lib.experiments import DENSE_FINETUNED, run_study  # noqa: E402
from lib.experiments.demo import demo_spec  # noqa: E402
from lib.utils import set_cpu_threads  # noqa: E402


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+7.2f} ± {std:5.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench_methods")
    args = parser.parse_args()
    set_cpu_threads()

    deltas: dict[tuple[str, float, str], dict[int, float]] = defaultdict(dict)
    methods: list[str] = []
    for seed in args.seeds:
        spec = replace(demo_spec(out_dir=f"{args.out}/seed{seed}", seed=seed), data_seed=0)
        result = run_study(spec, progress=True)
        print(f"seed {seed}: study done in {result.seconds / 60:.1f} min")
        methods = list(spec.methods)
        for row in result.rows:
            if row["method"] != "dense" and row.get("delta") is not None:
                deltas[(row["tasks"], row["nominal_sparsity"], row["method"])][seed] = row["delta"]

    print(f"\nΔ vs dense in % (mean ± std over seeds {args.seeds}; higher is better)")
    selections = sorted({k[0] for k in deltas}, key=lambda s: -len(s))
    sparsities = sorted({k[1] for k in deltas if k[2] != DENSE_FINETUNED})
    for sel in selections:
        print(f"\nselection {sel}")
        control = list(deltas.get((sel, 0.0, DENSE_FINETUNED), {}).values())
        if control:
            print(f"dense model fine-tuned like the pruned ones (control): {mean_std(control)}")
        print(f"{'sparsity':>9} " + " ".join(f"{m:>17}" for m in methods))
        for s in sparsities:
            cells = [mean_std(list(deltas[(sel, s, m)].values())) for m in methods]
            print(f"{s:>8g}% " + " ".join(f"{c:>17}" for c in cells))
        if "cut" in methods:
            print("CUT minus baseline (paired by seed):")
            for m in (m for m in methods if m != "cut"):
                diffs = [f"{s:g}%: " + mean_std([deltas[(sel, s, 'cut')][k] - v
                                                  for k, v in deltas[(sel, s, m)].items()
                                                  if k in deltas[(sel, s, 'cut')]])
                         for s in sparsities]
                print(f"  vs {m:<16} " + "   ".join(diffs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
