"""The method benchmark: the study's grid over several seeds, read with paired intervals.

    spec = BenchmarkSpec(grid=GRIDS["quick"], out_dir="runs/bench_methods")
    summary = run_benchmark(spec)        # resumable; writes out_dir/summary.json
    print(format_report(summary))

Every seed trains its own base model (``out_dir/seed{k}/base``, reused by reruns and by every
grid run into the same folder) and prunes it with every method at every sparsity; the
synthetic dataset is the same for all seeds (``data_seed`` 0), so the spread is that of
training, pruning and data order. The dense model fine-tuned exactly like the pruned ones is
the control. Per method and sparsity the summary holds Δ vs dense per seed and the number of
layers the method collapsed (no weight kept); per comparison, :data:`REFERENCE` minus each
other method paired by seed with a Student t interval (:mod:`lib.experiments.stats`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from lib.utils import atomic_write_json

from .engine import EngineOptions
from .stats import compare_paired, summarize
from .study import DENSE_FINETUNED, DENSE_ROW, StudySpec, cell_id, run_studies

REFERENCE = "cut"
# The grids read the registry (lib.pruning.registry): one-shot methods that prune a freshly
# initialised network (``MethodSpec.fresh``: the reference's SNIP and random baselines) are
# left out of the default grid, since the fine-tuning budget does not train them (they answer
# another question, training from scratch); the methods that train from scratch cost a whole
# base training per cell, so they have their own grid ("scratch").
# The control passes when fine-tuning alone moves the dense model by at most this (Δ, %).
CONTROL_TOLERANCE = 2.0
# The base model is worth pruning when it reaches these on the test split.
BASE_FLOORS = {("seg", "mIoU"): 0.30, ("depth", "sigma_1.25"): 70.0}
SUMMARY = "summary.json"


def applicable_methods() -> tuple[str, ...]:
    """:data:`REFERENCE` first, then every other one-shot method but those pruning a fresh
    network, then the trained methods that start from the base model (the min-max
    pipeline)."""
    from lib.pruning.registry import ONE_SHOT, REGISTRY, method_names
    one_shot = [m for m in method_names(*ONE_SHOT) if not REGISTRY[m].fresh and m != REFERENCE]
    return (REFERENCE, *one_shot, *method_names("trained_from_base"))


def scratch_methods() -> tuple[str, ...]:
    """The sparse-training methods that train the selected tasks' network from scratch."""
    from lib.pruning.registry import method_names
    return tuple(method_names("trained_from_scratch"))


@dataclass(frozen=True)
class Grid:
    """Seeds x sparsities x task selections x methods (``methods=None``: every applicable;
    ``"scratch"``: CUT and the methods that train from scratch)."""
    seeds: tuple[int, ...]
    sparsities: tuple[float, ...]
    selections: tuple[tuple[str, ...], ...] = (("seg", "depth"),)
    methods: tuple[str, ...] | str | None = None

    def method_list(self) -> tuple[str, ...]:
        if self.methods is None:
            return applicable_methods()
        if self.methods == "scratch":
            return (REFERENCE, *scratch_methods())
        return tuple(self.methods)


GRIDS = {
    "default": Grid(seeds=(0, 1, 2, 3, 4), sparsities=(70, 90, 95)),
    "quick": Grid(seeds=(0, 1, 2), sparsities=(90,), methods=("cut", "snip", "lth", "random")),
    "scratch": Grid(seeds=(0, 1, 2, 3, 4), sparsities=(90,), methods="scratch"),
}


@dataclass
class BenchmarkSpec:
    """One benchmark run: a grid on one profile of one config (synthetic data unless given)."""
    grid: Grid
    out_dir: str = "runs/bench_methods"
    profile: str = "bench"
    config: str = "nyuv2_3task"
    data_root: str | None = None
    synthetic_train: int = 320
    synthetic_test: int = 64
    confidence: float = 0.95
    device: str | None = None
    metric_options: dict = field(default_factory=lambda: {"miou": "present"})

    def __post_init__(self):
        if len(self.grid.seeds) < 2:
            raise ValueError(f"a benchmark needs at least 2 seeds for paired intervals, "
                             f"got {list(self.grid.seeds)}")
        if len(set(self.grid.seeds)) != len(self.grid.seeds):
            raise ValueError(f"seeds repeat: {list(self.grid.seeds)}")
        if REFERENCE not in self.grid.method_list():
            raise ValueError(f"the grid's methods {list(self.grid.method_list())} lack the "
                             f"reference {REFERENCE!r}")


def seed_spec(spec: BenchmarkSpec, seed: int) -> StudySpec:
    """The study one seed runs: the profile's iterations and batches, the data fixed."""
    return StudySpec(config=spec.config, profile=spec.profile, data_root=spec.data_root,
                     out_dir=str(Path(spec.out_dir) / f"seed{seed}"),
                     methods=spec.grid.method_list(), sparsities=spec.grid.sparsities,
                     selections=[list(s) for s in spec.grid.selections], seed=seed, data_seed=0,
                     metric_options=dict(spec.metric_options),
                     synthetic_train=spec.synthetic_train, synthetic_test=spec.synthetic_test,
                     device=spec.device)


def collapsed_layers(layer_sparsity: dict[str, float]) -> int:
    """Layers with no weight kept (sparsity 100 %)."""
    return sum(1 for v in layer_sparsity.values() if v >= 100.0)


def check_benchmark(spec: BenchmarkSpec) -> None:
    """Every seed's study validated (:func:`lib.experiments.study.check_spec`, and
    :func:`~lib.experiments.study.check_record` against what its folder holds) and the shared
    dataset prepared and checked, before any seed starts: parallel seeds would otherwise race
    to write the same synthetic dataset, and a bad input would surface in one worker only."""
    from lib.metrics import metrics_from_config

    from .study import check_record, check_spec, check_study_data, prepare_data, study_config

    configs = {}
    for seed in spec.grid.seeds:
        study = seed_spec(spec, seed)
        configs[seed] = cfg = study_config(study)
        check_spec(study, cfg)
        metrics_from_config(cfg, **study.metric_options)
    prepare_data(study, cfg)     # the data is the same for every seed (data_seed fixed)
    check_study_data(cfg)
    for seed, cfg in configs.items():    # a seed's folder left by other settings: refused
        check_record(seed_spec(spec, seed), cfg, Path(spec.out_dir) / f"seed{seed}")


def default_jobs(spec: BenchmarkSpec) -> int:
    """CPUs of the embedded Ray instance: every core on a CPU (one 1-thread task per core: the
    bench network is too small for intra-op threads to pay, benchmarks/bench_parallel.py), and
    as many on a GPU machine (the GPUs are Ray's to share out)."""
    return max(1, os.cpu_count() or 1)


def run_benchmark(spec: BenchmarkSpec, progress: bool = True, jobs: int = 1,
                  engine: EngineOptions | str | None = None) -> dict:
    """Run (or resume) every seed's study in one queue of units on ``engine`` (default: Ray,
    an embedded instance of ``jobs`` CPUs; each unit's log goes to its folder and one bar
    counts the finished bases and cells); write and return the summary."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    options = EngineOptions.of(engine)
    if options.num_cpus is None:
        options = replace(options, num_cpus=jobs)
    started, cpu_started = time.time(), time.process_time()
    out = Path(spec.out_dir)
    check_benchmark(spec)
    studies = {seed: seed_spec(spec, seed) for seed in spec.grid.seeds}
    read_back = sum(1 for study in studies.values()
                    for _ in (Path(study.out_dir) / "cells").glob("*.json"))
    results = run_studies(list(studies.values()), progress=progress, engine=options)
    per_seed = {seed: seed_results(study, result.rows)
                for (seed, study), result in zip(studies.items(), results)}
    cpu = time.process_time() - cpu_started + (results[0].cpu_seconds if results else 0.0)
    slots = options.num_cpus if options.engine == "ray" else 1
    summary = summarize_benchmark(spec, per_seed, time.time() - started, cpu, read_back,
                                  jobs=slots, threads=options.cpus_per_cell)
    atomic_write_json(summary, out / SUMMARY)
    return summary


def seed_results(study: StudySpec, rows: list[dict]) -> dict:
    """One seed's cells (Δ, measured sparsity, collapsed layers, seconds) and dense metrics,
    from its study's rows and the records it wrote (checked as they are read)."""
    from lib.metrics import read_metrics

    from .units import read_cell

    cells = {}
    for row in rows:
        if row["method"] == DENSE_ROW:
            continue
        key = cell_id(row["method"], row["nominal_sparsity"], row["tasks"].split("+"))
        record = read_cell(Path(study.out_dir) / "cells" / f"{key}.json")
        cells[key] = {"method": row["method"], "selection": row["tasks"],
                      "sparsity": float(row["nominal_sparsity"]), "delta": row["delta"],
                      "measured": row["measured_sparsity"],
                      "collapsed": collapsed_layers(record["layer_sparsity"]),
                      "seconds": record.get("seconds")}
    dense = read_metrics(Path(study.out_dir) / "base" / "dense_metrics.json")
    return {"cells": cells, "dense": dense}


def summarize_benchmark(spec: BenchmarkSpec, per_seed: dict[int, dict], seconds: float,
                        cpu_seconds: float | None = None, read_back: int = 0, jobs: int = 1,
                        threads: int | None = None) -> dict:
    """The JSON summary: settings, base floors, cells (Δ per seed) and paired comparisons;
    ``seconds`` (wall) and ``cpu_seconds`` (all its processes) of the run that wrote it, which
    ran ``jobs`` seeds at a time on ``threads`` threads each and read ``read_back`` finished
    cells from an earlier run instead of computing them."""
    grid = spec.grid
    seeds = list(grid.seeds)
    methods = [DENSE_FINETUNED, *grid.method_list()]
    cells = []
    for selection in ("+".join(s) for s in grid.selections):
        for method in methods:
            for sparsity in ([0.0] if method == DENSE_FINETUNED else grid.sparsities):
                key = cell_id(method, sparsity, selection.split("+"))
                found = {s: per_seed[s]["cells"][key] for s in seeds if key in per_seed[s]["cells"]}
                deltas = {s: c["delta"] for s, c in found.items() if c["delta"] is not None}
                cell = {"selection": selection, "method": method, "sparsity": float(sparsity),
                        "deltas": {str(s): d for s, d in deltas.items()},
                        "measured": {str(s): c["measured"] for s, c in found.items()},
                        "collapsed": {str(s): c["collapsed"] for s, c in found.items()}}
                if deltas:
                    stat = summarize(list(deltas.values()), f"Δ of {key}")
                    cell.update(mean=stat.mean, std=stat.std, n=stat.n)
                cells.append(cell)
    comparisons = []
    for selection in ("+".join(s) for s in grid.selections):
        for sparsity in grid.sparsities:
            by_method = {c["method"]: {int(s): d for s, d in c["deltas"].items()} for c in cells
                         if c["selection"] == selection and c["sparsity"] == float(sparsity)}
            for method in grid.method_list():
                if method == REFERENCE:
                    continue
                common = set(by_method.get(REFERENCE, {})) & set(by_method.get(method, {}))
                if len(common) < 2:
                    continue
                c = compare_paired(by_method[REFERENCE], by_method[method], REFERENCE, method,
                                   spec.confidence)
                comparisons.append({"selection": selection, "sparsity": float(sparsity),
                                    **{k: v for k, v in asdict(c).items() if k != "seeds"},
                                    "seeds": list(c.seeds), "n": c.n, "decided": c.decided,
                                    "winner": c.winner, "verdict": c.verdict()})
    base = {str(s): {f"{t}/{m}": per_seed[s]["dense"][t][m] for t, m in BASE_FLOORS}
            for s in seeds}
    return {"config": spec.config, "profile": spec.profile, "seeds": seeds,
            "sparsities": [float(s) for s in grid.sparsities],
            "selections": ["+".join(s) for s in grid.selections],
            "methods": list(grid.method_list()), "reference": REFERENCE,
            "confidence": spec.confidence, "control_tolerance": CONTROL_TOLERANCE,
            "base_floors": {f"{t}/{m}": v for (t, m), v in BASE_FLOORS.items()},
            "base": base, "cells": cells, "comparisons": comparisons,
            "seconds": round(seconds, 1),
            "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 1),
            "cells_read_back": read_back,
            "jobs": int(jobs),
            "threads": int(threads or torch.get_num_threads()),
            "cell_seconds": round(sum(c["seconds"] or 0.0 for s in seeds
                                      for c in per_seed[s]["cells"].values()), 1)}


def control_verdict(summary: dict, selection: str) -> str:
    """Whether fine-tuning alone leaves the dense model within the tolerance, on every seed."""
    control = next(c for c in summary["cells"]
                   if c["method"] == DENSE_FINETUNED and c["selection"] == selection)
    deltas = list(control["deltas"].values())
    if not deltas:
        return "control: no value"
    tol = summary["control_tolerance"]
    worst = max(abs(d) for d in deltas)
    ok = "within" if worst <= tol else "OUTSIDE"
    return (f"control (dense, fine-tuned alike): {control['mean']:+.2f} ± {control['std']:.2f}, "
            f"worst seed {worst:.2f}: {ok} ±{tol:g} %")


def floor_verdicts(summary: dict) -> list[str]:
    """One line per base-model floor: the range over seeds and whether every seed meets it."""
    lines = []
    for name, floor in summary["base_floors"].items():
        values = [b[name] for b in summary["base"].values()]
        ok = "met" if min(values) >= floor else "NOT met"
        lines.append(f"base {name}: {min(values):.3g} .. {max(values):.3g} over seeds "
                     f"(floor {floor:g}: {ok})")
    return lines


def format_report(summary: dict) -> str:
    """The printed report: floors, control, Δ table with spread, one verdict per comparison."""
    width = 17
    methods = summary["methods"]
    cpu = summary.get("cpu_seconds")
    jobs = summary.get("jobs", 1)
    procs = f"{jobs} task slots x " if jobs > 1 else ""
    cpu_text = (f", {cpu / 60:.1f} CPU-min on {procs}{summary.get('threads')} thread(s)"
                if cpu else "")
    lines = [f"profile {summary['profile']}, seeds {summary['seeds']}, "
             f"{summary['seconds'] / 60:.1f} min this run{cpu_text}", *floor_verdicts(summary)]
    for selection in summary["selections"]:
        cells = {(c["method"], c["sparsity"]): c for c in summary["cells"]
                 if c["selection"] == selection}
        lines += ["", f"selection {selection}: Δ vs dense in % (mean ± std over seeds; "
                      f"collapsed layers, max over seeds)", control_verdict(summary, selection),
                  f"{'sparsity':>9} " + " ".join(f"{m:>{width}}" for m in methods)]
        for s in summary["sparsities"]:
            row = []
            for m in methods:
                c = cells.get((m, s))
                if c is None or "mean" not in c:
                    row.append(f"{'n/a':>{width}}")
                    continue
                worst = max(c["collapsed"].values(), default=0)
                row.append(f"{c['mean']:+6.1f} ± {c['std']:4.1f} [{worst:>2}]".rjust(width))
            lines.append(f"{s:>8g}% " + " ".join(row))
        lines.append(f"{summary['reference']} minus each method, paired by seed "
                     f"(Student t, {summary['confidence']:.0%} CI):")
        for c in summary["comparisons"]:
            if c["selection"] == selection:
                lines.append(f"  {c['sparsity']:>4g}%  {c['verdict']}")
    return "\n".join(lines)


def load_summary(out_dir: str | Path) -> dict:
    """The summary a benchmark wrote into ``out_dir``."""
    path = Path(out_dir) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run benchmarks/bench_methods.py first")
    return json.loads(path.read_text())
