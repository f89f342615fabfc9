"""The paper's experiment grid: base model -> {method x sparsity x task selection} -> table + figures.

    spec = StudySpec(config="nyuv2_3task", profile="cpu", out_dir="runs/study")
    result = run_study(spec)          # resumable: finished cells are read back, not recomputed
    print(result.table_markdown)

Each cell of the grid prunes the dense base model with one method at one sparsity for one task
selection, fine-tunes the compact network with its masks held, evaluates the fine-tuned model on
the test split and writes its row as JSON (atomically) under ``out_dir/cells``; of the fine-tuning
run only ``final_model.pth`` (+ ``.json``) is kept. The base and the cells are units
(:mod:`lib.experiments.units`) run by an engine (:mod:`lib.experiments.engine`: Ray tasks by
default, or one after another in this process); this module is the driver around them. The
table and the figures are rebuilt from those rows every run. The table holds results only, so
the same study gives the same ``results.csv`` / ``.md`` byte for byte; the wall-clock time of
each cell goes to ``timings.json``.

Everything is validated before the first file is written (methods, selections, sparsities,
the output folder, the base checkpoint, every file the dataset's index lists); a corrupt record
file is named with how to recover (delete a cell file to recompute that cell).

Methods that train rather than prune a trained model (``lib.sparse.study.TRAINED_METHODS``:
``disparse_dynamic``, ``minmax_dst``, ``rigl``, ``disparse_static_scratch``,
``minmax_pipeline``) have their own cells (:func:`lib.sparse.study.train_cell`); every row
states the training it cost in its ``budget`` column.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from lib.config import load_config
from lib.metrics import metrics_from_config
from lib.models import MultiTaskModel
from lib.sparse.study import TRAINED_METHODS
from lib.utils import atomic_write_json, check_output_dir, read_json, resolve_device

DEFAULT_METHODS = ("cut", "lth", "snip", "random", "disparse_static")
# The control row: the dense model with the selected heads only, fine-tuned exactly like the
# pruned models. Its delta is what fine-tuning alone (and its BatchNorm drift) does.
DENSE_FINETUNED = "dense_ft"
DEFAULT_SPARSITIES = (30, 50, 70, 90)
# Cells whose network's cost (non-zero parameters, measured latency) is recorded when the study
# has structured_cut, so structured and unstructured CUT are compared at equal cost
# (lib.experiments.equal_cost); other studies pay nothing for it.
EQUAL_COST_METHODS = ("cut", "structured_cut", DENSE_FINETUNED)


def default_selections(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """All tasks, then every pair (the paper's selections for NYU-v2's three tasks).

    With more than three tasks (Taskonomy) the pairs are limited to those of seg, sn and depth.
    """
    tasks = list(tasks)
    selections = [tuple(tasks)]
    pool = tasks if len(tasks) <= 3 else [t for t in tasks if t in ("seg", "sn", "depth")]
    if len(tasks) > 2:
        selections += list(itertools.combinations(pool, 2))
    return selections


@dataclass
class StudySpec:
    """Everything that defines a study. Defaults: the CPU demo profile on synthetic NYU-v2."""

    config: str = "nyuv2_3task"
    profile: str = "cpu"
    data_root: str | None = None          # None -> the built-in synthetic dataset
    out_dir: str = "runs/study"
    methods: Sequence[str] = DEFAULT_METHODS
    sparsities: Sequence[float] = DEFAULT_SPARSITIES
    selections: Sequence[Sequence[str]] | None = None   # None -> default_selections(TASKS)
    seed: int = 0                         # training, pruning and data-order seed
    data_seed: int = 0                    # the synthetic dataset's seed (fixed across seeds)
    base_checkpoint: str | None = None    # None -> train one (or reuse out_dir/base)
    base_iters: int | None = None         # None -> cfg.MAX_ITERS
    finetune_iters: int | None = None     # None -> cfg.RETRAIN_EPOCH
    num_batches: int | None = None        # None -> cfg.PRUNE_NUM_BATCHES
    sparsity_mode: str = "target"         # "target": hit the deployed sparsity; "reference_table"
    metric_options: dict = field(default_factory=dict)  # e.g. {"miou": "present"}; {}: defaults
    dense_control: bool = True            # add a DENSE_FINETUNED cell per selection
    val_fraction: float = 0.1
    synthetic_train: int = 160
    synthetic_test: int = 32
    device: str | None = None
    overrides: dict = field(default_factory=dict)  # extra config attributes
    weighting: str | dict | None = None   # task weighting of the cells' training (None: defaults)
    method_options: dict = field(default_factory=dict)  # {trained method: {option: value}}

    def __post_init__(self):
        if self.sparsity_mode not in ("target", "reference_table"):
            raise ValueError(f"sparsity_mode must be 'target' or 'reference_table', "
                             f"got {self.sparsity_mode!r}")
        for s in self.sparsities:
            if not 0 <= float(s) < 100:
                raise ValueError(f"sparsity {s} outside [0, 100)")
        if self.weighting is not None:   # name and options, before any work
            from lib.training.weighting import make_weighting
            make_weighting(self.weighting, ["any task"])


@dataclass
class StudyResult:
    spec: StudySpec
    rows: list[dict]
    table_csv: Path
    table_md: Path
    figures: dict[str, Path]
    table_markdown: str
    seconds: float
    cpu_seconds: float = 0.0   # CPU time its units reported (every study of the run, summed)


def cell_id(method: str, sparsity: float, selection: Sequence[str]) -> str:
    return f"{method}_{float(sparsity):g}_{'-'.join(selection)}"


# Spec fields that change what a finished cell means: resuming with other values would mix
# incomparable rows in one table, so it is refused.
_DEFINING_FIELDS = ("config", "profile", "data_root", "seed", "data_seed", "base_checkpoint",
                    "base_iters", "finetune_iters", "num_batches", "sparsity_mode", "val_fraction",
                    "synthetic_train", "synthetic_test", "metric_options", "overrides",
                    "dense_control", "weighting", "method_options")


def study_config(spec: StudySpec):
    """The config a study runs with (profile + overrides; DATA_ROOT from the spec)."""
    cfg = load_config(spec.config, profile=spec.profile, **dict(spec.overrides))
    if spec.data_root is not None:
        cfg.DATA_ROOT = str(spec.data_root)
    return cfg


def prepare_data(spec: StudySpec, cfg) -> str:
    """Point ``cfg`` at the study's data, generating the synthetic dataset when none is given."""
    if spec.data_root is None:
        from lib.data.synthetic import prepare_synthetic
        cfg.DATA_ROOT = prepare_synthetic(cfg, num_train=spec.synthetic_train,
                                          num_test=spec.synthetic_test, seed=spec.data_seed)
    return cfg.DATA_ROOT


def check_study_data(cfg) -> None:
    """Every file the train and test lists of ``cfg``'s dataset name exists (existence only;
    a one-line FileNotFoundError naming the first missing one otherwise); for a per-task
    dataset, every task's."""
    from lib.data import build_dataset, build_task_datasets, check_files, has_task_datasets

    for split in ("train", "test"):
        if has_task_datasets(cfg):
            for dataset in build_task_datasets(cfg, split, augment=False).values():
                check_files(dataset)
        else:
            check_files(build_dataset(cfg, split, augment=False))


def _config_settings(cfg) -> dict:
    """The config values a study ran with (its profile's included), as JSON reads them back;
    the data root is the spec's ``data_root`` (a synthetic dataset's folder may move)."""
    from lib.config import config_to_dict

    values = {k: v for k, v in config_to_dict(cfg).items() if k != "DATA_ROOT"}
    return json.loads(json.dumps(values, default=list))


def check_record(spec: StudySpec, cfg, out: Path) -> dict:
    """The record ``out/study.json`` will hold (the spec and the config values it resolved to);
    a one-line ValueError when an earlier study there had other defining settings, a profile's
    values included (a record written before those were kept is checked on the spec alone)."""
    path = out / "study.json"
    current = json.loads(json.dumps(asdict(spec), default=list))   # tuples -> lists, as read back
    current["settings"] = _config_settings(cfg)
    if not path.exists():
        return current
    # A field an older version did not record had its default value then.
    defaults = json.loads(json.dumps(asdict(StudySpec()), default=list))
    recorded = read_json(path, "study record", recover=(
        "it records the settings the finished cells were computed with: restore it, or "
        "run the study in another out_dir"))
    if not isinstance(recorded, dict):
        raise ValueError(f"study record {path} holds {type(recorded).__name__}, expected a "
                         f"JSON object; restore it, or run the study in another out_dir")
    previous = {**defaults, **recorded}
    changed = [k for k in _DEFINING_FIELDS if previous.get(k) != current.get(k)]
    before = [previous.get(k) for k in changed]
    after = [current.get(k) for k in changed]
    old_settings = recorded.get("settings")
    if isinstance(old_settings, dict):
        for key in sorted(set(old_settings) | set(current["settings"])):
            if old_settings.get(key) != current["settings"].get(key):
                changed.append(f"settings.{key}")
                before.append(old_settings.get(key))
                after.append(current["settings"].get(key))
    if changed:
        raise ValueError(f"{path} was written by a study with other {changed} "
                         f"({before} vs {after}); use another out_dir")
    return current


def _loaders(spec: StudySpec, cfg):
    from lib.training import make_loaders
    # Built afresh for every cell so each cell sees the same seeded data order, whether the
    # study ran through or was resumed.
    return make_loaders(cfg, val_fraction=spec.val_fraction, seed=spec.seed)


def _budget_iters(spec: StudySpec, cfg) -> tuple[int, int]:
    """(base-training, fine-tuning) iterations of the study."""
    return (int(spec.base_iters or cfg.MAX_ITERS), int(spec.finetune_iters or cfg.RETRAIN_EPOCH))


def with_budgets(rows: list[dict], spec: StudySpec, cfg) -> list[dict]:
    """Each row with its ``budget``: the training it cost, in iterations
    (:func:`lib.sparse.study.budget`)."""
    from lib.sparse.study import budget

    base_iters, finetune_iters = _budget_iters(spec, cfg)
    base = "given" if spec.base_checkpoint is not None else base_iters
    return [{**row, "budget": budget(row["method"], base, base_iters, finetune_iters)}
            for row in rows]


def grid(spec: StudySpec, tasks: Sequence[str]) -> list[tuple[tuple[str, ...], str, float]]:
    """Every (selection, method, sparsity) cell of the study, in run order (per selection: the
    fine-tuned dense control first, if asked for, then every method at every sparsity)."""
    selections = [tuple(s) for s in (spec.selections or default_selections(tasks))]
    for sel in selections:
        unknown = [t for t in sel if t not in tasks]
        if unknown:
            raise ValueError(f"selection {list(sel)} names unknown task(s) {unknown}; "
                             f"available: {list(tasks)}")
        if not sel:
            raise ValueError(f"an empty task selection; available: {list(tasks)}")
        repeated = sorted({t for t in sel if sel.count(t) > 1})
        if repeated:
            raise ValueError(f"selection {list(sel)} names task(s) {repeated} more than once")
    repeated = sorted({"+".join(s) for s in selections if selections.count(s) > 1})
    if repeated:
        raise ValueError(f"selection(s) {repeated} given more than once")
    cells = []
    for sel in selections:
        if spec.dense_control:
            cells.append((sel, DENSE_FINETUNED, 0.0))
        cells += [(sel, m, float(s)) for m in spec.methods for s in spec.sparsities]
    return cells


def check_spec(spec: StudySpec, cfg) -> list[tuple[tuple[str, ...], str, float]]:
    """Validate everything a study is given, before any work or file: methods, selections
    (:func:`grid`), sparsities, the output folder and the base checkpoint; returns the cells."""
    from lib.pruning import METHODS, check_sparsity

    unknown = [m for m in spec.methods if m not in METHODS and m not in TRAINED_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: "
                         f"{sorted(METHODS) + list(TRAINED_METHODS)}")
    repeated = sorted({m for m in spec.methods if list(spec.methods).count(m) > 1})
    if repeated:
        raise ValueError(f"method(s) {repeated} given more than once")
    if not spec.methods or not spec.sparsities:
        raise ValueError(f"a study needs at least one method and one sparsity, got methods "
                         f"{list(spec.methods)} and sparsities {list(spec.sparsities)}")
    for value in spec.sparsities:
        check_sparsity(value)
    cells = grid(spec, cfg.TASKS)
    check_output_dir(spec.out_dir, "study folder")
    if spec.base_checkpoint is not None and not Path(spec.base_checkpoint).is_file():
        raise FileNotFoundError(f"base checkpoint {spec.base_checkpoint} does not exist")
    return cells


class StudyFailed(RuntimeError):
    """Some units of a study failed; the finished ones are kept and a rerun retries the rest."""


def run_study(spec: StudySpec, progress: bool = True, engine=None) -> StudyResult:
    """Run (or resume) the whole study and write ``results.csv/.md``, ``timings.json`` and the
    figures: :func:`run_studies` for one study."""
    return run_studies([spec], progress=progress, engine=engine)[0]


def run_studies(specs: Sequence[StudySpec], progress: bool = True,
                engine=None) -> list[StudyResult]:
    """Run (or resume) several studies (seeds, configs) in one queue of units
    (:mod:`lib.experiments.units`) on ``engine`` (an :class:`~lib.experiments.engine.
    EngineOptions`, ``"ray"``, ``"serial"``, or None: ``$CUT_ENGINE``, else Ray), then write
    each study's table and figures from its cell files.

    Everything is checked before the first file is written: every spec (:func:`check_spec`),
    the base checkpoint given (loaded), every folder's record (:func:`check_record`), the data
    (:func:`check_study_data`, a synthetic dataset generated first); then the study folders are
    locked against a second driver (:mod:`lib.experiments.lock`), and every finished cell's
    file is read back and validated (:func:`lib.experiments.units.read_cell`). A unit that
    fails does not stop the others: the studies without a failed unit get their tables, then
    :class:`StudyFailed` lists the failed units (a study with one gets no table).
    """
    from lib.checkpoints import load_base_model

    from .engine import EngineOptions, run_units
    from .lock import study_locks
    from .units import StudyJob, cell_path, dense_metrics, read_cell

    started = time.time()
    options = EngineOptions.of(engine)
    outs = [Path(spec.out_dir).resolve() for spec in specs]
    repeated = sorted({str(o) for o in outs if outs.count(o) > 1})
    if repeated:
        raise ValueError(f"several studies write to the same folder(s) {repeated}")
    prepared = []
    for spec in specs:                   # validate before any work
        cfg = study_config(spec)
        cells = check_spec(spec, cfg)
        metrics_from_config(cfg, **spec.metric_options)
        if spec.base_checkpoint is not None:     # refused now, not after study.json is written
            load_base_model(spec.base_checkpoint, cfg)
        prepared.append((spec, cfg, cells))
    checked = set()
    for spec, cfg, _ in prepared:
        prepare_data(spec, cfg)
        if cfg.DATA_ROOT not in checked:
            check_study_data(cfg)
            checked.add(cfg.DATA_ROOT)
    records_json = [check_record(spec, cfg, Path(spec.out_dir)) for spec, cfg, _ in prepared]
    jobs = [StudyJob(spec, str(cfg.DATA_ROOT)) for spec, cfg, _ in prepared]

    with study_locks(spec.out_dir for spec in specs):
        for job, record in zip(jobs, records_json):
            atomic_write_json(record, job.out / "study.json")
        records: list[dict] = [{} for _ in jobs]
        todo: list[list] = [[] for _ in jobs]
        for i, (job, (_, _, cells)) in enumerate(zip(jobs, prepared)):
            for cell in cells:             # finished earlier: read back (validated) now
                path = cell_path(job, cell)
                if path.exists():
                    records[i][cell] = read_cell(path)
                else:
                    todo[i].append(cell)
        done = sum(len(r) for r in records)
        outcome = run_units(jobs, todo, options, progress=progress, done=done)
        for (i, cell), record in outcome.records.items():
            records[i][cell] = record       # read_cell-checked by the unit
        failed = {i for i, _, _ in outcome.failures}
        results = []
        for i, (job, (spec, cfg, cells)) in enumerate(zip(jobs, prepared)):
            if i in failed:
                continue
            by_id = {cell_id(m, s, sel): records[i][(sel, m, s)] for sel, m, s in cells}
            rows = with_budgets(dense_rows(dense_metrics(job), cells)
                                + [by_id[cell_id(m, s, sel)]["row"] for sel, m, s in cells],
                                spec, cfg)
            base = load_base_model(outcome.bases[i], cfg)
            results.append(write_outputs(spec, cfg, base, rows, by_id, cells, job.out,
                                         resolve_device(spec.device), time.time() - started))
    if outcome.failures:
        lines = "; ".join(f"{where}: {error}" for _, where, error in outcome.failures)
        raise StudyFailed(f"{len(outcome.failures)} unit(s) failed (finished cells are kept; "
                          f"rerun to retry the failed ones): {lines}")
    for result in results:
        result.cpu_seconds = outcome.cpu_seconds
    return results


def dense_rows(dense: dict, cells) -> list[dict]:
    """One row per selection for the dense model (sparsity 0, delta 0 by definition)."""
    from lib.reports import results_row

    selections = list(dict.fromkeys(sel for sel, _, _ in cells))
    return [results_row("dense", sel, 0.0, 0.0, {t: dense[t] for t in sel}, 0.0)
            for sel in selections]


def _slug(selection: Sequence[str]) -> str:
    return "-".join(selection)


def write_outputs(spec: StudySpec, cfg, base: MultiTaskModel, rows: list[dict], records: dict,
                  cells, out: Path, device: torch.device, seconds: float) -> StudyResult:
    """The results table (CSV + Markdown) and every figure, rebuilt from the cells' records."""
    from lib.pruning import plot_layer_sparsity, plot_mask_iou
    from lib.reports import (plot_delta_vs_sparsity, plot_metric_vs_sparsity, plot_predictions,
                             write_results_table)

    csv_path, md_path = write_results_table(rows, out / "results")
    atomic_write_json({cid: record.get("seconds") for cid, record in records.items()},
                      out / "timings.json")
    figures: dict[str, Path] = {}
    selections = list(dict.fromkeys(sel for sel, _, _ in cells))
    for sel in selections:
        sel_rows = [r for r in rows if r["tasks"] == "+".join(sel)]
        figures[f"metrics_{_slug(sel)}"] = plot_metric_vs_sparsity(
            sel_rows, out / f"metric_vs_sparsity_{_slug(sel)}.png",
            title=f"{cfg.CONFIG_NAME}: {' + '.join(sel)}")
        figures[f"delta_{_slug(sel)}"] = plot_delta_vs_sparsity(
            sel_rows, out / f"delta_vs_sparsity_{_slug(sel)}.png",
            title=f"Δ vs dense: {' + '.join(sel)}")

    top = max(s for _, _, s in cells)
    focus = next((sel for sel in selections if len(sel) == 2), selections[0])
    layer_series = {m: records[cell_id(m, top, focus)]["layer_sparsity"]
                    for m in spec.methods if cell_id(m, top, focus) in records}
    figures["layer_sparsity"] = _save_fig(
        plot_layer_sparsity({m: {"layers": {n: {"sparsity": v} for n, v in ls.items()}}
                             for m, ls in layer_series.items()},
                            title=f"Per-layer sparsity at {top:g}% ({' + '.join(focus)})"),
        out / "layer_sparsity.png")
    iou_source = next((records[cell_id(m, top, sel)] for sel in selections for m in spec.methods
                       if "mask_iou" in records.get(cell_id(m, top, sel), {})
                       and len(sel) == max(len(s) for s in selections)), None)
    if iou_source is not None:
        figures["mask_iou"] = _save_fig(
            plot_mask_iou(iou_source["mask_iou"],
                          title=f"Per-layer IoU of task masks ({iou_source['row']['method']}, "
                                f"{top:g}%)"),
            out / "mask_iou.png")
    figures["predictions_dense"] = plot_predictions(base, cfg, out / "predictions_dense.png",
                                                    device, num_samples=3, seed=spec.seed)
    best_cut = out / "cells" / cell_id("cut", top, focus) / "final_model.pth"
    if best_cut.exists():
        from lib.checkpoints import load_pruned
        compact, _ = load_pruned(best_cut)
        figures["predictions_cut"] = plot_predictions(compact, cfg,
                                                      out / f"predictions_cut_{top:g}.png",
                                                      device, num_samples=3, seed=spec.seed)
    equal_cost = equal_cost_rows(records)
    if {r["method"] for r in equal_cost} >= {"cut", "structured_cut"}:
        from lib.experiments.equal_cost import plot_equal_cost
        figures["equal_cost"] = plot_equal_cost(
            equal_cost, out / "equal_cost.png",
            title=f"{cfg.CONFIG_NAME}: structured vs unstructured CUT at equal cost")
    table_markdown = md_path.read_text()
    return StudyResult(spec, rows, csv_path, md_path, figures, table_markdown, seconds)


def equal_cost_rows(records: dict) -> list[dict]:
    """Rows of the cells that measured their cost (non-zero parameters, onnxruntime latency),
    with those columns: the input of :mod:`lib.experiments.equal_cost`."""
    return [{**rec["row"], **rec["cost"]} for rec in records.values() if "cost" in rec]


def _save_fig(fig, path: Path) -> Path:
    from lib.utils import atomic_write
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
