"""Structured vs unstructured CUT at equal cost, and global vs uniform channel ranking.

Baseline: the dense cpu-profile NYU network (ResNet-18, width 1/8, 96x128; trained here for
``--train-iters`` on the synthetic train split, or ``--checkpoint``), evaluated in the same run.
For one task selection (``--tasks``, default ``seg``):

- unstructured CUT (``cut``) at ``--sparsities`` percent of the weights;
- structured CUT with uniform ranking (``structured_cut``) and with global ranking
  (``structured_cut_global``) at ``--channel-sparsities`` percent of the channels;

each fine-tuned ``--finetune-iters`` with the same engine (masks held; ``dense_ft``: the
selected dense heads fine-tuned alike, the control for what fine-tuning alone does), evaluated
on the
synthetic test split (Δ vs dense, ``lib.metrics.delta_mtl``), and measured
(``lib.experiments.equal_cost.cost_columns``: non-zero parameters, onnxruntime latency at
``--threads`` threads, median of ``--repeats``). Prints every row, then structured CUT's Δ
minus unstructured CUT's Δ interpolated at equal non-zero parameters and at equal latency
(``compare_at_equal_cost``), and writes ``plot_equal_cost`` to ``--plot``.

    python benchmarks/bench_structured.py --plot equal_cost.png
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_config  # noqa: E402
from lib.data import build_loader  # noqa: E402
from lib.data.synthetic import prepare_synthetic  # noqa: E402
from lib.experiments.equal_cost import (compare_at_equal_cost, cost_columns,  # noqa: E402
                                        plot_equal_cost)
from lib.losses import SceneNetLoss  # noqa: E402
from lib.metrics import delta_mtl  # noqa: E402
from lib.models import SceneNet  # noqa: E402
from lib.pruning import cut_prune, load_base_model  # noqa: E402
from lib.pruning.structured import structured_cut_plan  # noqa: E402
from lib.training import evaluate, finetune, train  # noqa: E402
from lib.utils import seed_everything  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["seg"])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[50, 70, 90, 95])
    parser.add_argument("--channel-sparsities", type=float, nargs="+", default=[25, 50, 70])
    parser.add_argument("--train-iters", type=int, default=300)
    parser.add_argument("--finetune-iters", type=int, default=60)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    cfg = load_config("nyuv2_3task", profile="cpu")
    cfg.DATA_ROOT = prepare_synthetic(cfg, num_train=160, num_test=32, seed=args.seed,
                                      progress=False)
    criterion = SceneNetLoss.from_config(cfg)
    loader = build_loader(cfg, "train", seed=args.seed)
    test = build_loader(cfg, "test", batch_size=1, shuffle=False)
    shape = (1, 3, *cfg.IMAGE_SHAPE)
    if args.checkpoint is not None:
        base = load_base_model(args.checkpoint, cfg).eval()
    else:
        seed_everything(args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            result = train(SceneNet.from_config(cfg), criterion, loader, cfg, tmp,
                           max_iters=args.train_iters, seed=args.seed, log=False)
            base = load_base_model(result.final_model, cfg).eval()
    dense = evaluate(base, test, cfg, progress=False)
    tasks = list(args.tasks)

    def measure(method: str, sparsity: float, net) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            tuned = finetune(net, criterion, loader, cfg, tmp, max_iters=args.finetune_iters,
                             seed=args.seed, log=False).net.cpu().eval()
        metrics = evaluate(tuned, test, cfg, progress=False)
        row = {"method": method, "tasks": "+".join(tasks), "sparsity": sparsity,
               "delta": delta_mtl(metrics, {t: dense[t] for t in tasks}, tasks=tasks),
               **cost_columns(tuned, shape, threads=args.threads, repeats=args.repeats)}
        print(f"{method:22s} {sparsity:5.1f} %  Δ {row['delta']:+7.2f} %  "
              f"{row['params_nonzero'] / 1e6:6.3f} M non-zero  {row['latency_ms']:6.2f} ms",
              flush=True)
        return row

    selected = base.select(tasks)
    rows = [{"method": "dense", "tasks": "+".join(tasks), "sparsity": 0.0, "delta": 0.0,
             **cost_columns(selected, shape, threads=args.threads, repeats=args.repeats)}]
    print(f"{'dense (selected heads)':22s}   0.0 %  Δ   +0.00 %  "
          f"{rows[0]['params_nonzero'] / 1e6:6.3f} M non-zero  {rows[0]['latency_ms']:6.2f} ms")
    # The control: the selected dense heads fine-tuned alike (what fine-tuning alone does).
    rows.append(measure("dense_ft", 0.0, base.select(tasks)))
    for s in args.sparsities:
        rows.append(measure("cut", s, cut_prune(base, criterion, loader, cfg.PRUNE_NUM_BATCHES,
                                                None, tasks, cfg.TASKS, sparsity=s)))
    plan = structured_cut_plan(base, criterion, loader, tasks, cfg.PRUNE_NUM_BATCHES,
                               tasks=cfg.TASKS)
    for s in args.channel_sparsities:
        rows.append(measure("structured_cut", s, plan.prune(s / 100.0, "uniform")))
        rows.append(measure("structured_cut_global", s, plan.prune(s / 100.0, "global")))

    print(f"\nbaseline: dense cpu-profile network, {'+'.join(tasks)} heads; Δ = delta_mtl vs "
          f"its test metrics (+ = better); latency: onnxruntime, {args.threads} threads, median "
          f"of {args.repeats}; every pruned model fine-tuned {args.finetune_iters} iterations")
    for ranking in ("structured_cut", "structured_cut_global"):
        for x in ("params_nonzero", "latency_ms"):
            print(f"\n{ranking} vs cut at equal {x}: Δ structured - Δ unstructured (pp)")
            for r in compare_at_equal_cost(rows, x, structured=ranking):
                other = ("no unstructured row at that cost" if r["advantage"] is None
                         else f"{r['advantage']:+.2f} (cut: {r['delta_unstructured']:+.2f})")
                print(f"  {x} {r[x]:12.3f}: Δ {r['delta_structured']:+7.2f}  {other}")
    if args.plot is not None:
        plot_equal_cost(rows, args.plot, structured="structured_cut_global",
                        title=f"cpu profile, {'+'.join(tasks)}: structured vs unstructured CUT")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
