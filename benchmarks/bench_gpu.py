"""GPU readiness: the training loop, fine-tuning, pruning and a study on one CUDA device.

Reference-width 3-task NYU SceneNet (the reference profile: ResNet-34, batches of 16, 321x321
crops) on synthetic frames written at 480x640 (PNG decode + random scale/crop per item, as
real NYU-v2). Every ratio is against a baseline measured in this run, in alternating rounds
(median of ``--rounds``):

  * train step: ``lib.training.train`` vs a plain loop written like the original notebook
    (DataLoader(shuffle=True, pin_memory=True), ``.to(device, non_blocking=True)``, forward,
    weighted loss, backward, Adam step, StepLR step), in fp32, bf16 and bf16 + channels_last;
  * data loading: ``train`` with 0 and 8 workers (items/s, batches identical) and the GPU busy
    fraction with 8 workers: the step time of the same network on one resident batch (no
    loader at all) over the step time of the real run;
  * masked fine-tuning step: ``lib.training.finetune`` vs the plain loop on the same pruned
    network (torch.nn.utils.prune masks, 90 %);
  * ``prune("cut")`` at reference scale vs the original ``prune_net`` procedure
    (``benchmarks/bench_prune.py``'s reimplementation, imported);
  * a tiny study end to end on the device (``python -m lib reproduce --device cuda``).

Targets (issue 21): train / plain <= 1.05 in fp32 and bf16; bf16 >= 1.5x fp32 items/s; with 8
workers the GPU busy >= 90 % of the step. On a machine without CUDA it says so and exits 0.
``--device cpu --tiny`` runs every section at toy size on the CPU (a smoke test, < 1 min).

    python benchmarks/bench_gpu.py [--rounds 2] [--steps 20] [--workers 8]
    python benchmarks/bench_gpu.py --device cpu --tiny
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402
import torch.nn.utils.prune as torch_prune  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lib.config import load_config  # noqa: E402
from lib.data import build_dataset, build_loader  # noqa: E402
from lib.data.synthetic import write_dataset  # noqa: E402
from lib.losses import SceneNetLoss  # noqa: E402
from lib.models import SceneNet, prunable_modules  # noqa: E402
from lib.tasks import batch_to  # noqa: E402
from lib.training import finetune, train  # noqa: E402
from lib.training.data_order import epoch_loader  # noqa: E402
from lib.training.hooks import TrainingHook  # noqa: E402
from lib.training.precision import Precision, float_outputs  # noqa: E402

finetune_module = sys.modules["lib.training.finetune"]
# Every timed window's CPU seconds (this process, all threads), latest last: bench_train.py
# reports them beside the wall times (a shared CPU disturbs wall time, less CPU time).
CPU_SECONDS: list[float] = []
VARIANTS = {"fp32": ("off", False), "bf16": ("bf16", False),
            "bf16+channels_last": ("bf16", True)}


@dataclass
class Size:
    """What one run of the benchmark measures at."""
    profile: str
    batch: int
    frames: tuple[int, int]       # stored frame size (height, width)
    num_train: int
    warmup: int
    steps: int
    workers: int
    prune_batches: int

    @classmethod
    def for_args(cls, args) -> "Size":
        if args.tiny:
            return cls("tiny", 2, (48, 64), 8, 1, args.steps or 3, min(args.workers, 2), 1)
        return cls("reference", 16, (480, 640), 64, 5, args.steps or 20, args.workers, 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(TrainingHook):
    """Times the steps after ``warmup`` of a ``train`` run: the device is synchronised at the
    two ends of the window only, so the loop runs as it would unobserved."""
    name = "step_clock"

    def __init__(self, device: torch.device, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.start = self.seconds = self.cpu_start = self.cpu_seconds = None

    def spec(self):
        return {"name": self.name}

    def tick(self, done: int) -> None:
        """``done`` steps have been taken."""
        if done == self.warmup:
            sync(self.device)
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
        elif done == self.warmup + self.steps:
            sync(self.device)
            self.seconds = time.perf_counter() - self.start
            self.cpu_seconds = time.process_time() - self.cpu_start
            CPU_SECONDS.append(self.cpu_seconds)

    def after_step(self, model, iteration):
        self.tick(iteration + 1)


def items_per_s(size: Size, seconds: float) -> float:
    return size.batch * size.steps / seconds


# ------------------------------------------------------------------------ the two loops
def lib_train(cfg, size, device, variant, workers, run_dir) -> float:
    amp, channels_last = VARIANTS[variant]
    cfg = copy.copy(cfg)
    cfg.NUM_WORKERS = workers
    loader = build_loader(cfg, "train", batch_size=size.batch, seed=0)
    clock = StepClock(device, size.warmup, size.steps)
    torch.manual_seed(0)
    train(SceneNet.from_config(cfg), SceneNetLoss.from_config(cfg), loader, cfg, run_dir,
          max_iters=size.warmup + size.steps, device=device, amp=amp,
          channels_last=channels_last, log=False, hook=clock, overwrite=True)
    return items_per_s(size, clock.seconds)


def plain_loop(net, criterion, cfg, size, device, variant, workers, batches=None) -> float:
    """The original notebook's loop on ``net`` (``batches``: one resident batch, no loader)."""
    precision = Precision(*VARIANTS[variant])
    net = precision.prepare(net.to(device).train())
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad],
                                 lr=cfg.INIT_LR, weight_decay=cfg.WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.DECAY_LR_FREQ, cfg.DECAY_LR_RATE)
    if batches is None:
        dataset = build_dataset(cfg, "train", seed=0)
        batches = DataLoader(dataset, batch_size=size.batch, shuffle=True, num_workers=workers,
                             pin_memory=device.type == "cuda", drop_last=True,
                             persistent_workers=workers > 0)
    clock = StepClock(device, size.warmup, size.steps)
    done = 0
    while done < size.warmup + size.steps:
        for batch in batches:
            batch = batch_to(batch, device)
            with precision.autocast(device):
                preds = net(precision.inputs(batch["img"]))
            loss = criterion.weighted(criterion.per_task(float_outputs(preds), batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            clock.tick(done)
            if done == size.warmup + size.steps:
                break
    return items_per_s(size, clock.seconds)


def fresh_net(cfg):
    torch.manual_seed(0)
    return SceneNet.from_config(cfg)


def pruned_net(cfg):
    """A compact (seg, sn) reference-width SceneNet with 90 % l1 masks on every layer."""
    torch.manual_seed(0)
    net = SceneNet(cfg.TASKS_NUM_CLASS[:2], cfg.BACKBONE_NAME, cfg.WIDTH_MULT, task_ids=[1, 2],
                   tasks=list(cfg.TASKS[:2]))
    for module in prunable_modules(net).values():
        torch_prune.l1_unstructured(module, "weight", amount=0.9)
    return net


@contextlib.contextmanager
def finetune_clock(clock: StepClock):
    """Times ``finetune``'s steps through the per-step call it makes (``zero_pruned`` after
    every step; once before the first)."""
    original, calls = finetune_module.zero_pruned, [-1]

    def timed(net):
        original(net)
        calls[0] += 1
        if calls[0] > 0:
            clock.tick(calls[0])

    finetune_module.zero_pruned = timed
    try:
        yield
    finally:
        finetune_module.zero_pruned = original


def lib_finetune(cfg, size, device, workers, run_dir) -> float:
    cfg = copy.copy(cfg)
    cfg.NUM_WORKERS = workers
    loader = build_loader(cfg, "train", batch_size=size.batch, seed=0)
    clock = StepClock(device, size.warmup, size.steps)
    with finetune_clock(clock):
        finetune(pruned_net(cfg), SceneNetLoss.from_config(cfg), loader, cfg, run_dir,
                 max_iters=size.warmup + size.steps, device=device, log=False, overwrite=True)
    return items_per_s(size, clock.seconds)


# ------------------------------------------------------------------------------ sections
def alternate(rounds: int, jobs: dict) -> dict[str, float]:
    """Median items/s of each job, the jobs run in turn ``rounds`` times."""
    results: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            results[name].append(job())
    return {name: statistics.median(v) for name, v in results.items()}


def ratio_line(label: str, ours: float, base: float, target: str) -> str:
    return f"  {label}: {ours:8.1f} vs {base:8.1f} items/s | time ratio {base / ours:.3f} " \
           f"(target {target})"


def train_section(cfg, size, device, rounds, work) -> dict[str, float]:
    print(f"\ntrain step, {size.workers} workers: lib.training.train vs the plain loop")
    criterion = SceneNetLoss.from_config(cfg)
    speeds = {}
    for variant in VARIANTS:
        jobs = {"train": lambda v=variant: lib_train(cfg, size, device, v, size.workers,
                                                     work / "train"),
                "plain": lambda v=variant: plain_loop(fresh_net(cfg), criterion, cfg, size,
                                                      device, v, size.workers)}
        got = alternate(rounds, jobs)
        speeds[variant] = got["train"]
        target = "<= 1.05" if variant in ("fp32", "bf16") else "-"
        print(ratio_line(variant, got["train"], got["plain"], target))
    print(f"  bf16 / fp32 throughput: {speeds['bf16'] / speeds['fp32']:.2f}x (target >= 1.5); "
          f"bf16+channels_last / fp32: {speeds['bf16+channels_last'] / speeds['fp32']:.2f}x")
    return speeds


def loader_section(cfg, size, device, rounds, work) -> None:
    print(f"\ndata loading (bf16): 0 vs {size.workers} workers")
    got = alternate(rounds, {w: (lambda w=w: lib_train(cfg, size, device, "bf16", w,
                                                        work / "workers"))
                             for w in (0, size.workers)})
    print(f"  items/s: 0 workers {got[0]:.1f}, {size.workers} workers {got[size.workers]:.1f} "
          f"({got[size.workers] / got[0]:.2f}x)")
    first = {}
    for w in (0, size.workers):
        c = copy.copy(cfg)
        c.NUM_WORKERS = w
        it = iter(epoch_loader(build_loader(c, "train", batch_size=size.batch, seed=0), seed=0))
        first[w] = [next(it) for _ in range(2)]
    identical = all(torch.equal(a[k], b[k]) for a, b in zip(first[0], first[size.workers])
                    for k in a if isinstance(a[k], torch.Tensor))
    print(f"  first two batches identical for 0 and {size.workers} workers: {identical}")
    batch = batch_to(first[0][0], device)
    resident = alternate(rounds, {"resident": lambda: plain_loop(
        fresh_net(cfg), SceneNetLoss.from_config(cfg), cfg, size, device, "bf16", 0,
        batches=[batch])})["resident"]
    busy = got[size.workers] / resident
    print(f"  GPU busy fraction with {size.workers} workers: {100 * busy:.0f} % (step on one "
          f"resident batch {resident:.1f} items/s; target >= 90 %)")


def finetune_section(cfg, size, device, rounds, work) -> None:
    print("\nmasked fine-tuning step (fp32): lib.training.finetune vs the plain masked loop")
    criterion = SceneNetLoss.from_config(cfg).restricted_to(list(cfg.TASKS[:2]))
    got = alternate(rounds, {
        "finetune": lambda: lib_finetune(cfg, size, device, size.workers, work / "ft"),
        "plain": lambda: plain_loop(pruned_net(cfg), criterion, cfg, size, device, "fp32",
                                    size.workers)})
    print(ratio_line("masked step", got["finetune"], got["plain"], "<= 1.05"))


def prune_section(cfg, size, device, rounds) -> None:
    from bench_prune import masks_on, original_prune_net, paired_times
    from bench_scoring import random_batch, same
    from lib.models import prunable_layers
    from lib.pruning import prune

    print(f"\nprune('cut') vs the original prune_net: {size.prune_batches} batches of "
          f"{size.batch}x{cfg.CROP_H}x{cfg.CROP_W}, keep ratio 0.1, 3 of 3 tasks")
    net = fresh_net(cfg).to(device).eval()
    criterion = SceneNetLoss.from_config(cfg)
    batches = [batch_to(random_batch(cfg, size.batch, cfg.CROP_H, cfg.CROP_W, i), device)
               for i in range(size.prune_batches)]
    tasks = list(cfg.TASKS)

    def ours():
        result = prune("cut", net, criterion, batches, selected_tasks=tasks,
                       num_batches=size.prune_batches, keep_ratio=0.1, device=device)
        sync(device)
        return result

    def original(fresh):
        out = original_prune_net(fresh, criterion, batches, size.prune_batches, 0.1, tasks,
                                 tasks)
        sync(device)
        return out

    pruned, (theirs, _), t_new, t_old = paired_times(ours, (lambda: copy.deepcopy(net),
                                                            original), rounds)
    identical = same(pruned.masks, masks_on(theirs, set(prunable_layers(pruned.net))))
    print(f"  prune {t_new} | original {t_old} | ratio {t_new.ratio(t_old)} | masks identical: "
          f"{identical}")


def study_section(device, work) -> None:
    print("\ntiny study end to end on the device (python -m lib reproduce, profile tiny)")
    out = work / "study"
    command = [sys.executable, "-m", "lib", "reproduce", "--config", "nyuv2_3task", "--profile",
               "tiny", "--methods", "cut", "snip", "--sparsities", "50", "--tasks", "seg",
               "depth", "--base-iters", "4", "--max-iters", "2", "--num-batches", "1",
               "--synthetic-train", "6", "--synthetic-test", "2", "--device", device.type,
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUT_SYNTHETIC_DIR": str(work / "synthetic")}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    ok = done.returncode == 0 and (out / "results.csv").is_file()
    print(f"  exit {done.returncode}, results.csv written: {ok}, {seconds:.1f} s")
    if not ok:
        print("  " + (done.stderr.strip().splitlines() or ["(no output)"])[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="toy sizes (tiny profile, 48x64 frames): a smoke test of every "
                             "section")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (median)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--sections", nargs="+", default=["train", "loader", "finetune",
                                                          "prune", "study"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine, nothing measured (on a CPU: "
              "--device cpu --tiny runs every section at toy size)")
        return 0
    if device.type == "cpu" and not args.tiny:
        print("bench_gpu: --device cpu is the smoke test; add --tiny")
        return 2
    size = Size.for_args(args)
    workers = min(size.workers, os.cpu_count() or 1)
    size.workers = workers
    cfg = load_config("nyuv2_3task", profile=size.profile, CKPT_FREQ=10**6, VAL_FREQ=10**6)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"bench_gpu on {name}: {cfg.BACKBONE_NAME} x{cfg.WIDTH_MULT} SceneNet, batch "
          f"{size.batch}, {cfg.CROP_H}x{cfg.CROP_W} crops of {size.frames[0]}x{size.frames[1]} "
          f"frames, {size.warmup} warm-up + {size.steps} timed steps per run, median of "
          f"{args.rounds} alternating rounds; time ratio = ours / baseline (lower is better)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        work = Path(tmp)
        cfg.DATA_ROOT = str(write_dataset(work / "nyu", "nyuv2_3", size.num_train, 2,
                                          *size.frames, workers=max(1, os.cpu_count() or 1)))
        print(f"synthetic frames written in {time.perf_counter() - start:.1f} s")
        if "train" in args.sections:
            train_section(cfg, size, device, args.rounds, work)
        if "loader" in args.sections:
            loader_section(cfg, size, device, args.rounds, work)
        if "finetune" in args.sections:
            finetune_section(cfg, size, device, args.rounds, work)
        if "prune" in args.sections:
            prune_section(cfg, size, device, args.rounds)
        if "study" in args.sections:
            study_section(device, work)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
