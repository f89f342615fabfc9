"""Scoring time: CUT's shared-forward per-task scores vs the naive reference procedure.

Same weights, same batches, reference-width 3-task ResNet-34 SceneNet (NYU-v2 heads 40/3/1)
at a small input. Baselines, both measured in this run:
  * reference procedure: what the original ``prune_net`` does, a full forward + backward of
    the whole network for EVERY task of the config, per batch (it scores all tasks whatever
    is selected);
  * naive, selected only: the same full forward + backward per task, for the selected tasks.
Prints both times, the ratios and whether the per-task and fused masks are identical.

    python benchmarks/bench_scoring.py [--batches 3] [--height 64 --width 80] [--device auto]
"""
from __future__ import annotations

import argparse
import time

import torch

from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet
from lib.pruning import decide, select_tasks, task_masks, task_scores, task_scores_reference
from lib.utils import resolve_device, set_cpu_threads


def random_batch(cfg, batch_size: int, height: int, width: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(batch_size, 3, height, width, generator=g), dim=1)
    return {"img": torch.randn(batch_size, 3, height, width, generator=g) * 50,
            "seg": torch.randint(0, cfg.TASKS_NUM_CLASS[0], (batch_size, 1, height, width), generator=g),
            "normal": (normal + 1) * 127.5,
            "depth": torch.rand(batch_size, 1, height, width, generator=g) * 5 + 0.5}


def timed(fn, device: torch.device, repeats: int):
    """Run ``fn`` ``repeats`` times; return its output and the fastest wall time.

    The fastest run is the least disturbed by other processes on a shared machine.
    """
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--keep-ratio", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs each; the fastest counts")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    set_cpu_threads()
    device = resolve_device(args.device)
    cfg = load_config("nyuv2_3task")  # reference width
    torch.manual_seed(0)
    net = SceneNet.from_config(cfg).to(device).eval()
    criterion = SceneNetLoss.from_config(cfg)
    loader = [random_batch(cfg, args.batch_size, args.height, args.width, i) for i in range(args.batches)]
    params = sum(p.numel() for p in net.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, {params / 1e6:.1f}M parameters, "
          f"{args.batches} batches of {args.batch_size}x3x{args.height}x{args.width}, "
          f"fastest of {args.repeats} runs")
    task_scores(net, criterion, loader[:1], ["seg"], 1, progress=False)  # warm-up

    reference, t_reference = timed(lambda: task_scores_reference(
        net, criterion, loader, cfg.TASKS, args.batches, progress=False), device, args.repeats)
    print(f"reference procedure (all {len(cfg.TASKS)} tasks, full fwd+bwd each): {t_reference:8.2f} s")
    for selected in (["seg", "depth"], list(cfg.TASKS)):
        label = f"{len(selected)} of {len(cfg.TASKS)} ({'+'.join(selected)})"
        shared, t_shared = timed(lambda: task_scores(
            net, criterion, loader, selected, args.batches, progress=False), device, args.repeats)
        naive, t_naive = timed(lambda: task_scores_reference(
            net, criterion, loader, selected, args.batches, progress=False), device, args.repeats)
        compact = select_tasks(net, selected)
        masks_shared = task_masks(shared, args.keep_ratio)
        masks_ref = task_masks({t: reference[t] for t in selected}, args.keep_ratio)
        identical = (all(same(masks_shared[t], masks_ref[t]) for t in selected) and
                     same(decide(compact, masks_shared, 2), decide(compact, masks_ref, 2)))
        max_rel = max(float(((shared[t][n] - reference[t][n]).abs() /
                             reference[t][n].abs().clamp_min(1e-30)).max())
                      for t in selected for n in shared[t])
        print(f"{label}: shared {t_shared:7.2f} s | naive selected-only {t_naive:7.2f} s | "
              f"ratio vs reference procedure {t_shared / t_reference:.2f} | "
              f"ratio vs naive selected-only {t_shared / t_naive:.2f} | "
              f"masks identical: {identical} | max rel. score diff {max_rel:.1e}")


if __name__ == "__main__":
    main()
