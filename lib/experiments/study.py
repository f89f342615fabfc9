"""The paper's experiment grid: base model -> {method x sparsity x task selection} -> table + figures.

    spec = StudySpec(config="nyuv2_3task", profile="cpu", out_dir="runs/study")
    result = run_study(spec)          # resumable: finished cells are read back, not recomputed
    print(result.table_markdown)

Each cell of the grid prunes the dense base model with one method at one sparsity for one task
selection, fine-tunes the compact network with its masks held, evaluates the fine-tuned model on
the test split and writes its row as JSON (atomically) under ``out_dir/cells``; of the fine-tuning
run only ``final_model.pth`` (+ ``.json``) is kept. The base and the cells are units
(:mod:`lib.experiments.units`) run by an engine (:mod:`lib.experiments.engine`: Ray tasks by
default, or one after another in this process); this module is the driver around them (what
defines a study, its grid and its checks: :mod:`lib.experiments.spec`). The
table and the figures are rebuilt from those rows every run. The table holds results only, so
the same study gives the same ``results.csv`` / ``.md`` byte for byte; the wall-clock time of
each cell goes to ``timings.json``.

Everything is validated before the first file is written (methods, selections, sparsities,
the output folder, the base checkpoint, every file the dataset's index lists); a corrupt record
file is named with how to recover (delete a cell file to recompute that cell).

A cell is run by its method's spec (:meth:`lib.pruning.registry.MethodSpec.run_cell`): the
one-shot methods and the control by :mod:`lib.experiments.cells`, the methods that train
(``disparse_dynamic``, ``minmax_dst``, ``rigl``, ``disparse_static_scratch``,
``minmax_pipeline``, any registered trained kind) by :func:`lib.sparse.study.trained_cell`;
every row states the training it cost in its ``budget`` column (the spec's ``budget``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from lib.metrics import metrics_from_config
from lib.models import MultiTaskModel
from lib.utils import atomic_write_json, resolve_device

from .spec import (cell_id, check_record, check_spec, check_study_data, DEFAULT_METHODS,
                  default_selections, DEFAULT_SPARSITIES, DENSE_FINETUNED, DENSE_ROW,
                  EQUAL_COST_METHODS, grid, prepare_data, study_config, StudyResult,
                  StudySpec, with_budgets)  # noqa: F401 (re-exported)


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
        prepare_data(spec, cfg, progress=progress)
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
    return [results_row(DENSE_ROW, sel, 0.0, 0.0, {t: dense[t] for t in sel}, 0.0)
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
    from lib.experiments.equal_cost import has_both, plot_equal_cost
    if has_both(equal_cost):
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
