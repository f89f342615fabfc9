"""The training loop and the loaders on this CPU, each against a baseline measured in this run.

Synthetic NYU-v2 frames written at 480x640 (the real data's size; PNG decode per item). Median
of ``--rounds`` alternating rounds:

  * train step: ``lib.training.train`` (cpu profile: 1/8-width ResNet-18, batches of 8, frames
    resized to 96x128 on load, 80x112 crops) vs a plain loop written like the original
    notebook (``benchmarks/bench_gpu.py``'s: DataLoader(shuffle=True), forward, weighted loss,
    backward, Adam + StepLR); both read with 0 workers;
  * masked fine-tuning step: ``lib.training.finetune`` vs the same plain loop on the same
    pruned network (90 % l1 masks);
  * test-split loader, time per item: ``lib.data``'s NYUv2 reader (reference profile: frames
    as stored) vs the original AdaShare ``NYU_v2.__getitem__`` in test mode, reimplemented as
    its code does it (cv2.imread x3, np.load, ``astype('float')``, ``-= IMG_MEAN``,
    torchvision ``ToTensor().float()``, ``from_numpy(...).permute``); the tensors are compared;
  * ``--num-workers 1`` vs 0: items/s of ``train`` (cpu profile) with one loader process
    beside the training process; the batches of both are compared. Baseline in the same
    rounds: the plain loop's hand-built ``DataLoader(shuffle=True)`` with 1 vs 0 workers
    (persistent, one pass per epoch as the original notebook iterates it). Also printed: the
    training process's CPU time per step and its off-CPU time per step (wall minus CPU:
    waiting for a batch, or for a core another process holds).

Targets (issue 21): train / plain <= 1.05; finetune / plain <= 1.05; test-split item / the
original's <= 1.0; 1 worker >= 1.35x the items/s of 0.

    python benchmarks/bench_train.py [--rounds 5] [--steps 10] [--sections ...]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_gpu import (CPU_SECONDS, Size, fresh_net, lib_finetune, lib_train,  # noqa: E402
                       plain_loop, pruned_net)
from lib.config import load_config  # noqa: E402
from lib.data import build_dataset, build_loader  # noqa: E402
from lib.data.synthetic import write_dataset  # noqa: E402
from lib.losses import SceneNetLoss  # noqa: E402
from lib.training.data_order import epoch_loader  # noqa: E402
from lib.utils import set_cpu_threads  # noqa: E402

SECTIONS = ("train", "finetune", "test_loader", "workers")


# ------------------------------------------------------ the original AdaShare test-split item
class OriginalNYUTest:
    """sunxm2357/AdaShare ``dataloaders/nyu_v2_dataloader.py::NYU_v2`` in ``mode='test'``
    (no crop given: 480x640), its ``__getitem__`` step for step (no policy files)."""

    def __init__(self, root: str, triples: list):
        from torchvision import transforms
        self.root, self.triples = root, triples
        self.transform = transforms.ToTensor()
        mean = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
        self.IMG_MEAN = np.tile(mean[np.newaxis, np.newaxis, :], (480, 640, 1))

    def __getitem__(self, item):
        img_path, seg_path, normal_path, depth_path = self.triples[item]
        img = cv2.imread(os.path.join(self.root, img_path))
        seg = np.expand_dims(cv2.imread(os.path.join(self.root, seg_path),
                                        cv2.IMREAD_GRAYSCALE), axis=-1)
        normal = cv2.imread(os.path.join(self.root, normal_path))
        depth = np.expand_dims(np.load(os.path.join(self.root, depth_path)), axis=-1)
        img = img.astype('float')
        img -= self.IMG_MEAN
        name = img_path.split('/')[-1]
        return {'img': self.transform(img).float(),
                'seg': torch.from_numpy(seg).permute(2, 0, 1),
                'normal': torch.from_numpy(normal).permute(2, 0, 1),
                'depth': torch.from_numpy(depth).permute(2, 0, 1), 'name': name}


def per_item_seconds(dataset, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return (time.perf_counter() - start) / n


def test_loader_section(root: str, rounds: int) -> None:
    cfg = load_config("nyuv2_3task", DATA_ROOT=root)   # reference: frames as stored
    ours = build_dataset(cfg, "test")
    theirs = OriginalNYUTest(root, [list(e) for e in ours.entries])
    n = len(ours)
    same = all(torch.equal(ours[i][k], theirs[i][k]) and ours[i][k].dtype == theirs[i][k].dtype
               for i in range(n) for k in ("img", "seg", "normal", "depth"))
    got = {"ours": [], "original": []}
    for _ in range(rounds):
        got["ours"].append(per_item_seconds(ours, n))
        got["original"].append(per_item_seconds(theirs, n))
    t_ours, t_orig = (statistics.median(got[k]) for k in ("ours", "original"))
    print(f"\ntest-split loader, 480x640 items ({n} per round): lib.data {1e3 * t_ours:.2f} ms "
          f"vs the original {1e3 * t_orig:.2f} ms per item | ratio {t_ours / t_orig:.3f} "
          f"(target <= 1.0) | tensors identical: {same}")


def alternate(rounds: int, jobs: dict) -> tuple[dict, dict]:
    """Median items/s (wall) and median CPU seconds of each job's timed window, the jobs run
    in turn ``rounds`` times."""
    speed: dict = {name: [] for name in jobs}
    cpu: dict = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            speed[name].append(job())
            cpu[name].append(CPU_SECONDS[-1])
    return ({n: statistics.median(v) for n, v in speed.items()},
            {n: statistics.median(v) for n, v in cpu.items()})


def loop_sections(cfg, size, sections, rounds, work) -> None:
    device = torch.device("cpu")
    criterion = SceneNetLoss.from_config(cfg)
    if "train" in sections:
        got, cpu = alternate(rounds, {
            "train": lambda: lib_train(cfg, size, device, "fp32", 0, work / "train"),
            "plain": lambda: plain_loop(fresh_net(cfg), criterion, cfg, size, device, "fp32",
                                        0)})
        print(f"\ntrain step: lib.training.train {got['train']:.1f} vs plain loop "
              f"{got['plain']:.1f} items/s | time ratio {got['plain'] / got['train']:.3f} "
              f"(target <= 1.05) | CPU-time ratio {cpu['train'] / cpu['plain']:.3f}")
    if "finetune" in sections:
        masked = criterion.restricted_to(list(cfg.TASKS[:2]))
        got, cpu = alternate(rounds, {
            "finetune": lambda: lib_finetune(cfg, size, device, 0, work / "ft"),
            "plain": lambda: plain_loop(pruned_net(cfg), masked, cfg, size, device, "fp32", 0)})
        print(f"\nmasked fine-tuning step: lib.training.finetune {got['finetune']:.1f} vs plain "
              f"masked loop {got['plain']:.1f} items/s | time ratio "
              f"{got['plain'] / got['finetune']:.3f} (target <= 1.05) | CPU-time ratio "
              f"{cpu['finetune'] / cpu['plain']:.3f}")
    if "workers" in sections:
        workers_section(cfg, size, rounds, work, criterion)


def workers_section(cfg, size, rounds, work, criterion) -> None:
    """``train`` with 1 loader process vs 0, beside the same two in the plain loop (a
    hand-built ``DataLoader(shuffle=True, persistent_workers=True)``, one pass per epoch: the
    baseline of what one worker gives), alternating; then the batches of 0 and 1 workers."""
    device = torch.device("cpu")
    jobs = {}
    for w in (0, 1):
        jobs[f"train{w}"] = lambda w=w: lib_train(cfg, size, device, "fp32", w, work / "workers")
        jobs[f"plain{w}"] = lambda w=w: plain_loop(fresh_net(cfg), criterion, cfg, size, device,
                                                   "fp32", w)
    load = os.getloadavg()[0]
    got, cpu = alternate(rounds, jobs)
    batches = {}
    for w in (0, 1):
        c = copy.copy(cfg)
        c.NUM_WORKERS = w
        data = epoch_loader(build_loader(c, "train", batch_size=size.batch, seed=0), seed=0)
        it = iter(data)   # two epochs and the next one's first batch: across the boundaries
        batches[w] = [next(it) for _ in range(2 * data.batches_per_epoch + 1)]
    same = all(a["name"] == b["name"] and all(torch.equal(a[k], b[k]) for k in a
                                              if isinstance(a[k], torch.Tensor))
               for a, b in zip(batches[0], batches[1]))
    per_step = {k: 1e3 * v / size.steps for k, v in cpu.items()}
    # Wall minus CPU time of the training process per step: waiting for a batch, or for a
    # core other processes hold (on an idle machine, the data wait alone).
    off_cpu = {k: 1e3 * size.batch / got[k] - per_step[k] for k in got}
    print(f"\n--num-workers 1 vs 0 (train, cpu profile): {got['train1']:.1f} vs "
          f"{got['train0']:.1f} items/s | {got['train1'] / got['train0']:.2f}x (target >= 1.35) "
          f"| batches identical: {same}\n"
          f"  baseline, hand-built DataLoader in the plain loop: {got['plain1']:.1f} vs "
          f"{got['plain0']:.1f} items/s | {got['plain1'] / got['plain0']:.2f}x\n"
          f"  training-process CPU per step, 0 / 1 workers: train {per_step['train0']:.0f} / "
          f"{per_step['train1']:.0f} ms, plain {per_step['plain0']:.0f} / "
          f"{per_step['plain1']:.0f} ms; off CPU per step: train {off_cpu['train0']:.0f} / "
          f"{off_cpu['train1']:.0f} ms, plain {off_cpu['plain0']:.0f} / "
          f"{off_cpu['plain1']:.0f} ms | load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per training run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (default 1: a worker "
                             "process gets the other core)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    set_cpu_threads(args.threads)
    cfg = load_config("nyuv2_3task", profile="cpu", CKPT_FREQ=10**6, VAL_FREQ=10**6)
    size = Size("cpu", int(cfg.BATCH_SIZE), (480, 640), 32, 2, args.steps, 1, 1)
    print(f"bench_train: {cfg.BACKBONE_NAME} x{cfg.WIDTH_MULT} SceneNet, batch {size.batch}, "
          f"{cfg.CROP_H}x{cfg.CROP_W} crops of 480x640 frames resized to "
          f"{cfg.IMAGE_SHAPE[0]}x{cfg.IMAGE_SHAPE[1]}, {size.warmup} warm-up + {size.steps} "
          f"timed steps per run, {torch.get_num_threads()} torch thread(s), median of "
          f"{args.rounds} alternating rounds; time ratio = ours / baseline")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        root = str(write_dataset(work / "nyu", "nyuv2_3", size.num_train, 8, *size.frames,
                                 workers=os.cpu_count() or 1))
        cfg.DATA_ROOT = root
        print(f"synthetic frames written in {time.perf_counter() - start:.1f} s")
        loop_sections(cfg, size, args.sections, args.rounds, work)
        if "test_loader" in args.sections:
            test_loader_section(root, args.rounds)
    load = os.getloadavg()[0]
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at the end {load:.1f} on "
          f"{os.cpu_count()} cores (other processes share this CPU: wall-time ratios move with "
          f"them; CPU-time ratios less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
