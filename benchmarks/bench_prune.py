"""End-to-end pruning time: ``prune("cut", ...)`` against the original ``prune_net`` procedure.

Reference-width 3-task NYU SceneNet (90.7 M weights, random weights, eval mode), random batches
of 2 at 48x64, 2 CPU threads. Baselines, each measured in this run on the same weights and
batches (median of ``--repeats`` runs; the machine is shared):

  * original: zxccvdql/ESCM ``prune_utils.prune_net`` step for step: deepcopy of the network,
    a mask of ones per Conv2d/Linear that requires grad, for every batch and every task of the
    config a full forward + backward, per task ``topk(sorted=True)`` on the normalised scores,
    ``global_unstructured(amount=0)`` hooks on the network, backbone ``vote >= 2`` over the
    selected tasks, ``weight = weight_orig * weight_mask``, ``print_sparsity``'s count;
  * keep-ratio mode, for target mode (3 of 3, 90 % deployed) at the keep ratio it finds;
  * before: this pipeline with the ranking it had before, a full sort (``SortedRanking``; the
    target search then counts the fused masks at every step), for every method sharing it.

Prints wall and CPU times, ratios, whether masks are identical, where ``prune("cut")`` spends
its time, and the peak memory of each mode before and after (a fresh process each).

    python benchmarks/bench_prune.py [--num-batches 2 8] [--repeats 3] [--threads 2]
        [--sections cut target methods memory] [--methods cut lth ...]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.nn.utils.prune as torch_prune  # noqa: E402

from bench_scoring import random_batch, same  # noqa: E402
import lib.masks  # noqa: E402
from lib.config import load_config  # noqa: E402
from lib.losses import SceneNetLoss  # noqa: E402
from lib.models import SceneNet, prunable_layers  # noqa: E402
from lib.pruning import SortedRanking, prune, select_tasks  # noqa: E402
from lib.pruning import compact, ranking, scores  # noqa: E402
from lib.pruning import methods as pruning_methods  # noqa: E402
from lib.utils import set_cpu_threads  # noqa: E402

PRUNABLE = (nn.Conv2d, nn.Linear)


# ----------------------------------------------------------------- the original procedure
def _masked_conv(self, x):
    return F.conv2d(x, self.weight * self.weight_mask, self.bias, self.stride, self.padding,
                    self.dilation, self.groups)


def _masked_linear(self, x):
    return F.linear(x, self.weight * self.weight_mask, self.bias)


def original_prune_net(net, criterion, loader, num_batches, keep_ratio, selected_tasks, tasks):
    """The original ``prune_net`` on ``net`` in place (full network, hooks on every layer)."""
    probe = copy.deepcopy(net)
    for layer in probe.modules():
        if isinstance(layer, PRUNABLE):
            layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))
            layer.weight.requires_grad = False
            forward = _masked_conv if isinstance(layer, nn.Conv2d) else _masked_linear
            layer.forward = types.MethodType(forward, layer)
    grads_abs = {task: [] for task in tasks}
    batches = iter(loader)
    for _ in range(num_batches):
        batch = next(batches)
        for i, task in enumerate(tasks):
            probe.zero_grad()
            preds = probe(batch["img"])
            criterion.task_loss(preds, batch, task).backward()
            ct = 0
            for name, layer in probe.named_modules():
                if isinstance(layer, PRUNABLE) and ("backbone" in name or f"task{i + 1}" in name):
                    if len(grads_abs[task]) > ct:
                        grads_abs[task][ct] += torch.abs(layer.weight_mask.grad.data)
                    else:
                        grads_abs[task].append(torch.abs(layer.weight_mask.grad.data))
                    ct += 1
    keep_masks = {}
    for task in tasks:
        all_scores = torch.cat([torch.flatten(g) for g in grads_abs[task]])
        norm_factor = torch.sum(all_scores)
        all_scores.div_(norm_factor)
        threshold, _ = torch.topk(all_scores, int(len(all_scores) * keep_ratio), sorted=True)
        keep_masks[task] = [((g / norm_factor) >= threshold[-1]).int() for g in grads_abs[task]]
    hooked = [(m, "weight") for m in net.modules() if isinstance(m, PRUNABLE)]
    torch_prune.global_unstructured(hooked, pruning_method=torch_prune.L1Unstructured, amount=0)
    idxs, ct = [0] * len(tasks), 0
    for name, layer in net.named_modules():
        if not isinstance(layer, PRUNABLE):
            continue
        if "backbone" in name:
            vote_count = None
            for task in selected_tasks:  # the original adds in place into the first task's mask
                if vote_count is None:
                    vote_count = keep_masks[task][ct].data
                else:
                    vote_count += keep_masks[task][ct].data
            layer.weight_mask.data = (vote_count >= 2).int()
            ct += 1
            idxs = [x + 1 for x in idxs]
        else:
            j = next(j for j in range(len(tasks)) if f"task{j + 1}" in name)
            layer.weight_mask.data = keep_masks[tasks[j]][idxs[j]].data
            ct += 1
            idxs[j] += 1
    for module in net.modules():
        if isinstance(module, PRUNABLE):
            module.weight = module.weight_orig * module.weight_mask
    zeros = sum(torch.sum(m.weight == 0) for m in net.modules() if isinstance(m, PRUNABLE))
    total = sum(m.weight.nelement() for m in net.modules() if isinstance(m, PRUNABLE))
    return net, float(zeros / total)


# -------------------------------------------------------------------------------- timing
class Timing:
    """Median wall and CPU (this process, all threads) seconds of repeated runs."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def record(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def s(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu)

    def __str__(self) -> str:
        return f"{self.s:6.2f} s (cpu {self.cpu_s:6.2f} s)"

    def ratio(self, other: "Timing") -> str:
        return f"{self.s / other.s:.2f} (cpu {self.cpu_s / other.cpu_s:.2f})"


def paired_times(first, second, repeats: int):
    """Time ``first()`` and ``second()`` alternately, ``repeats`` times each, so both see the
    same load on a shared machine; returns both last outputs and both Timings.

    Each callable may be ``(setup, fn)``: ``fn(setup())`` is timed, ``setup`` is not.
    """
    timings = (Timing(), Timing())
    outputs: list = [None, None]
    for _ in range(repeats):
        for i, job in enumerate((first, second)):
            setup, fn = job if isinstance(job, tuple) else (None, job)
            arg = setup() if setup else None
            outputs[i] = None
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[i] = fn(arg) if setup else fn()
            timings[i].record(time.perf_counter() - wall, time.process_time() - cpu)
    return outputs[0], outputs[1], timings[0], timings[1]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_plain_sort(fn):
    """``fn`` run with the ranking as it was before (see :func:`plain_sort`)."""
    def run():
        with plain_sort():
            return fn()
    return run


@contextlib.contextmanager
def plain_sort():
    """The pipeline as it was: a full sort per ranking, the target search counting masks."""
    saved = pruning_methods.ScoreRanking, pruning_methods._voted_curve
    pruning_methods.ScoreRanking = SortedRanking
    pruning_methods._voted_curve = lambda *args: None
    try:
        yield
    finally:
        pruning_methods.ScoreRanking, pruning_methods._voted_curve = saved


def phase_breakdown(fn) -> str:
    """Seconds per pipeline phase of one profiled run of ``fn`` (cProfile, cumulative)."""
    phases = {compact.select_tasks: "compact build", scores.task_scores: "scoring",
              scores.joint_scores: "scoring", ranking.ScoreRanking.__init__: "rankings",
              pruning_methods.TargetSearch.keep_for: "target search",
              ranking.ScoreRanking.masks: "masks", pruning_methods.decide: "fusion",
              lib.masks.install_masks: "install"}
    keys = {(f.__code__.co_filename, f.__code__.co_firstlineno, f.__code__.co_name): label
            for f, label in phases.items()}
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(fn)
    wall = time.perf_counter() - start
    totals: dict[str, float] = {}
    for key, (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        if key in keys:
            totals[keys[key]] = totals.get(keys[key], 0.0) + cumulative
    parts = ", ".join(f"{label} {seconds:.2f} s" for label, seconds in totals.items())
    return f"{wall:.2f} s in one profiled run: {parts}"


def masks_on(net, layers) -> dict:
    return {n: m.weight_mask.detach().bool() for n, m in prunable_layers(net).items()
            if n in layers}


SECTIONS = ("cut", "target", "methods", "memory")
MEMORY_RUNS = {  # variant -> (the prune option given, ranking as before)
    "keep ratio, after": ("keep_ratio", False),
    "keep ratio, before": ("keep_ratio", True),
    "target, after": ("sparsity", False),
    "target, before": ("sparsity", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-batches", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--keep-ratio", type=float, default=0.1)
    parser.add_argument("--sparsity", type=float, default=90.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each; the median counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="*",
                        default=["cut", "disparse_static", "disparse_pt", "snip", "lth", "random"])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--peak-memory-of", choices=MEMORY_RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    cfg = load_config("nyuv2_3task")  # reference width
    torch.manual_seed(0)
    net = SceneNet.from_config(cfg).eval()
    criterion = SceneNetLoss.from_config(cfg)
    loader = [random_batch(cfg, args.batch_size, args.height, args.width, i)
              for i in range(max(args.num_batches))]
    weights = sum(m.weight.numel() for m in prunable_layers(net).values())
    print(f"{weights / 1e6:.1f} M prunable weights, batches of {args.batch_size}x3x{args.height}x"
          f"{args.width}, {torch.get_num_threads()} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), keep ratio {args.keep_ratio}, "
          f"median of {args.repeats} runs, each pair timed alternately; cpu: this process's "
          f"CPU time")
    selections = (["seg", "depth"], list(cfg.TASKS))
    cut = lambda nb, tasks, **kw: lambda: prune("cut", net, criterion, loader,  # noqa: E731
                                                 selected_tasks=tasks, num_batches=nb, **kw)
    if args.peak_memory_of:  # a child of the memory section: one run, its peak
        option, before = MEMORY_RUNS[args.peak_memory_of]
        run = cut(args.num_batches[0], selections[1], **{option: getattr(args, option)})
        print(f"PEAK {peak_rss_above_start(in_plain_sort(run) if before else run):.0f}")
        return
    cut(1, selections[1], keep_ratio=args.keep_ratio)()  # warm-up, untimed
    if "cut" in args.sections:
        compare_with_original(args, cfg, net, criterion, loader, selections, cut)
    if "target" in args.sections:
        compare_target_mode(args, selections, cut)
    if "methods" in args.sections:
        compare_methods(args, net, criterion, loader, selections)
    if "memory" in args.sections:
        compare_memory(args)


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1)) / 1024


def peak_rss_above_start(fn) -> float:
    """MB the process's resident set peaks above where it stood when ``fn`` started (Linux)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current resident set
    start = _rss_mb("VmRSS")
    fn()
    return _rss_mb("VmHWM") - start


def compare_memory(args) -> None:
    print(f"\npeak memory of prune (3 of 3, nb {args.num_batches[0]}) above the network and "
          f"batches, one fresh process each")
    for variant in MEMORY_RUNS:
        child = subprocess.run([sys.executable, __file__, "--peak-memory-of", variant,
                                "--num-batches", str(args.num_batches[0]),
                                "--keep-ratio", str(args.keep_ratio),
                                "--sparsity", str(args.sparsity), "--threads", str(args.threads),
                                "--batch-size", str(args.batch_size), "--height", str(args.height),
                                "--width", str(args.width)],
                               capture_output=True, text=True, check=True)
        print(f"{variant:>22}: {child.stdout.split('PEAK')[-1].strip()} MB")


def compare_with_original(args, cfg, net, criterion, loader, selections, cut) -> None:
    print("\nCUT end to end vs the original prune_net (same weights, batches, keep ratio)")
    for nb in args.num_batches:
        for tasks in selections:
            label = f"nb {nb}, {len(tasks)} of {len(cfg.TASKS)} ({'+'.join(tasks)})"
            original = (lambda: copy.deepcopy(net),
                        lambda fresh: original_prune_net(fresh, criterion, loader, nb,
                                                         args.keep_ratio, tasks, cfg.TASKS))
            pruned, (original, _), t_new, t_old = paired_times(
                cut(nb, tasks, keep_ratio=args.keep_ratio), original, args.repeats)
            layers = set(prunable_layers(pruned.net))
            identical = same(pruned.masks, masks_on(original, layers))
            del original
            t_select = median_time(lambda: select_tasks(net, tasks), args.repeats)
            print(f"{label}: prune {t_new} | original {t_old} | ratio {t_new.ratio(t_old)} | "
                  f"masks identical: {identical} | compact build {t_select:.2f} s "
                  f"({100 * t_select / t_new.s:.0f} %)")
            del pruned
        print(f"  where prune (nb {nb}, 3 of 3) goes: "
              f"{phase_breakdown(cut(nb, selections[1], keep_ratio=args.keep_ratio))}")



def compare_target_mode(args, selections, cut) -> None:
    print(f"\ntarget mode ({args.sparsity:g} % deployed, 3 of 3) vs keep-ratio mode")
    for nb in args.num_batches:
        keep = cut(nb, selections[1], sparsity=args.sparsity)().meta["keep_ratio"]
        target, fixed, t_target, t_fixed = paired_times(
            cut(nb, selections[1], sparsity=args.sparsity),
            cut(nb, selections[1], keep_ratio=keep), args.repeats)
        line = (f"nb {nb}: target {t_target} | keep ratio {keep:.6f} {t_fixed} | "
                f"ratio {t_target.ratio(t_fixed)} | ties {target.meta['ties']} | deployed "
                f"{target.sparsity:.2f} % | masks identical: {same(target.masks, fixed.masks)}")
        del fixed
        if nb == args.num_batches[0]:
            _, before, t_after, t_before = paired_times(
                cut(nb, selections[1], sparsity=args.sparsity),
                in_plain_sort(cut(nb, selections[1], sparsity=args.sparsity)), args.repeats)
            line += (f" | before (plain sort) {t_before}, after/before "
                     f"{t_after.ratio(t_before)}, same masks: "
                     f"{same(target.masks, before.masks)}")
            del before
        print(line)
        profiled = phase_breakdown(cut(nb, selections[1], sparsity=args.sparsity))
        print(f"  where target mode goes: {profiled}")
        del target



def compare_methods(args, net, criterion, loader, selections) -> None:
    nb = args.num_batches[0]
    print(f"\nmethods sharing the ranking, before (plain sort) vs after, nb {nb}, 3 of 3, keep "
          f"ratio {args.keep_ratio}")
    for method in args.methods:
        def run(method=method):
            return prune(method, net, criterion, loader, selected_tasks=selections[1],
                         num_batches=nb, keep_ratio=args.keep_ratio)
        after, before, t_after, t_before = paired_times(run, in_plain_sort(run), args.repeats)
        identical = same(after.masks, before.masks)
        print(f"{method:>16}: after {t_after} | before {t_before} | ratio "
              f"{t_after.ratio(t_before)} | masks identical: {identical}")
        del after, before


if __name__ == "__main__":
    main()
