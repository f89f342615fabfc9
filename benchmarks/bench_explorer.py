"""Responsiveness of the explorer (lib.explorer) on the reference-width 3-task SceneNet.

The network is the reference's (ResNet-34 backbone at full width, three DeepLab heads: 90.7 M
parameters), untrained, at a small input (the tiny profile's 48x64 frames, random batches).
In the same run:
  * baseline  ``lib.pruning.prune(method, ..., sparsity=S)`` per slider position: what
              re-running a notebook cell costs (scoring, the target search, installing);
  * explorer  ``ExplorerView`` with the scores cached: setting the slider (``prune``'s own
              target search, ``TargetSearch``, kept per plan and rule so it remembers what it
              counted; the counts; both plot frames), wall time
              and this process's CPU time (the machine may be shared);
and, for the record, what the explorer does once or in the background: the first scoring,
a change of the fusion rule, and ``ExplorerState.measure`` (the real artifact writer and the
timed forwards). ``ScoreRanking`` is whatever this checkout has.

    python benchmarks/bench_explorer.py [--width 1.0] [--moves 90,89,88,85,80,75,70,60,50]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_config  # noqa: E402
from lib.explorer import ExplorerState  # noqa: E402
from lib.explorer.view import ExplorerView  # noqa: E402
from lib.losses import SceneNetLoss  # noqa: E402
from lib.models import model_from_config  # noqa: E402
from lib.pruning import prune  # noqa: E402


def random_batch(cfg, seed: int, batch_size: int = 2) -> dict:
    """One batch with the loaders' keys and value ranges at the config's IMAGE_SHAPE."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.IMAGE_SHAPE
    normal = torch.nn.functional.normalize(torch.randn(batch_size, 3, h, w, generator=g), dim=1)
    return {"img": torch.randn(batch_size, 3, h, w, generator=g) * 50,
            "seg": torch.randint(0, cfg.TASKS_NUM_CLASS[0], (batch_size, 1, h, w), generator=g),
            "normal": (normal + 1) * 127.5,
            "depth": torch.rand(batch_size, 1, h, w, generator=g) * 5 + 0.5}


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="WIDTH_MULT (1.0: reference)")
    parser.add_argument("--moves", default="90,89,88,85,80,75,70,60,50",
                        help="slider positions (target deployed sparsity, percent)")
    parser.add_argument("--baseline-moves", type=int, default=2,
                        help="how many of the positions the prune() baseline is timed at")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    moves = [float(m) for m in args.moves.split(",")]

    cfg = load_config("nyuv2_3task", profile="tiny", BACKBONE_NAME="ResNet34",
                      WIDTH_MULT=args.width)
    torch.manual_seed(0)
    net = model_from_config(cfg).eval()
    criterion = SceneNetLoss.from_config(cfg)
    loader = [random_batch(cfg, 0)]
    tasks = list(cfg.TASKS)
    print(f"SceneNet {cfg.BACKBONE_NAME} width {args.width}: "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, tasks {tasks}, "
          f"input 1x3x{cfg.IMAGE_SHAPE[0]}x{cfg.IMAGE_SHAPE[1]}, {args.threads} thread(s)")

    state = ExplorerState(net, criterion, loader, num_batches=1, cfg=cfg,
                          input_shape=(1, 3, *cfg.IMAGE_SHAPE), latency_repeats=3)
    view, first_wall, first_cpu = timed(lambda: ExplorerView(
        state, tasks=tasks, method="cut", sparsity=moves[0], measure=False))
    print(f"first view (scoring, plots drawn once): {first_wall:.1f} s wall, {first_cpu:.1f} s CPU")

    rows = []
    for target in moves[1:]:
        _, wall, cpu = timed(lambda: setattr(view.sparsity, "value", target))
        snap = view.snapshot
        rows.append((target, snap.sparsity, snap.keep_ratio, "broken" if snap.exact else "kept",
                     wall, cpu))
    print("\nslider moves (scores cached): target, deployed, keep ratio, ties, wall s, CPU s")
    for row in rows:
        print(f"  {row[0]:5.1f} %  {row[1]:6.2f} %  {row[2]:.5f}  {row[3]:6s}  {row[4]:6.3f}  "
              f"{row[5]:6.3f}")
    walls = [r[4] for r in rows]
    cpus = [r[5] for r in rows]

    _, rule_wall, rule_cpu = timed(lambda: setattr(view.rule, "value", "any"))
    print(f"fusion rule 2 -> any at {moves[-1]} %: {rule_wall:.3f} s wall, {rule_cpu:.3f} s CPU")

    baseline = []
    for target in moves[:args.baseline_moves]:
        _, wall, cpu = timed(lambda: prune("cut", net, criterion, loader, selected_tasks=tasks,
                                           sparsity=target, num_batches=1))
        baseline.append((wall, cpu))
        print(f"baseline prune(sparsity={target:g}): {wall:.1f} s wall, {cpu:.1f} s CPU")
    base_wall = statistics.median(b[0] for b in baseline)
    base_cpu = statistics.median(b[1] for b in baseline)

    snap = view.snapshot
    measured, m_wall, m_cpu = timed(lambda: state.measure(snap))
    print(f"background measure at {snap.sparsity:.1f} %: {m_wall:.1f} s wall, {m_cpu:.1f} s CPU "
          f"(artifact {measured['artifact_bytes'] / 2**20:.1f} MiB, latency "
          f"{measured['latency_ms']:.0f} ms, dense {measured['dense_latency_ms']:.0f} ms)")

    print("\n| | wall s (median, max) | CPU s (median, max) |\n|---|---|---|")
    print(f"| baseline: prune() per position | {base_wall:.2f} | {base_cpu:.2f} |")
    print(f"| explorer: slider move | {statistics.median(walls):.3f}, {max(walls):.3f} | "
          f"{statistics.median(cpus):.3f}, {max(cpus):.3f} |")
    print(f"| ratio explorer / baseline (median) | {statistics.median(walls) / base_wall:.4f} | "
          f"{statistics.median(cpus) / base_cpu:.4f} |")


if __name__ == "__main__":
    main()
