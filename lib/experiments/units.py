"""A study's units of work, the same under every engine (:mod:`lib.experiments.engine`).

    base = base_unit(job)               # path of the dense base model (trained or reused)
    record = cell_unit(job, cell, base) # prune -> fine-tune -> evaluate one cell; its record

Both are idempotent and write only their own files, atomically, so a unit can be rerun
anywhere (another process, another node) after a crash: :func:`base_unit` resumes the base
training from ``base/last.pth``; :func:`cell_unit` returns at once when the cell's file exists,
and otherwise resumes its fine-tuning from ``cells/<cid>/last.pth`` (the training engine's
exact resume), so a retried cell gives the record an uninterrupted one would have.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.utils import atomic_write_json, first_non_finite, read_json, seed_everything

from .spec import StudySpec, budget_iters, cell_id, study_config, study_loaders

Cell = tuple[tuple[str, ...], str, float]   # (selection, method, sparsity), as study.grid


@dataclass(frozen=True)
class StudyJob:
    """What a unit needs: the study's spec and the data folder the driver prepared (a
    synthetic dataset is generated once, by the driver, before any unit runs)."""
    spec: StudySpec
    data_root: str
    # The most data-loading workers a unit may start: the CPUs its engine gave it beyond its
    # compute threads (a Ray task of 1 CPU: none, or the tasks beside it lose their core).
    # None: the config's NUM_WORKERS. A NUM_WORKERS the spec sets explicitly is kept. Workers
    # change no number (lib.training.engine.SPEED_ONLY).
    max_loader_workers: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.spec.out_dir)

    def config(self):
        cfg = study_config(self.spec)
        cfg.DATA_ROOT = self.data_root
        if self.max_loader_workers is not None and "NUM_WORKERS" not in self.spec.overrides:
            cfg.NUM_WORKERS = min(int(cfg.NUM_WORKERS), self.max_loader_workers)
        return cfg


def unit_device(spec: StudySpec) -> torch.device:
    """The device of a unit: inside a Ray task, the GPU Ray assigned (``cuda:0`` of the
    ``CUDA_VISIBLE_DEVICES`` it set) or the CPU when it assigned none; elsewhere the spec's
    (``None``: :func:`lib.utils.default_device`)."""
    from lib.utils import resolve_device

    assigned = _ray_gpu_ids()
    if assigned is None:                   # not in a Ray task
        return resolve_device(spec.device)
    if assigned and torch.cuda.is_available():
        return torch.device("cuda:0")      # the first of the visible (assigned) set
    if spec.device not in (None, "auto", "cpu"):
        raise ValueError(f"the study asks for device {spec.device!r} but this task was given "
                         f"no GPU (--gpus-per-cell 0 or no CUDA on its node)")
    return torch.device("cpu")


def _ray_gpu_ids() -> list | None:
    """The GPU ids Ray assigned to the running task, or None outside a Ray task."""
    # Not imported here: a process that has not imported Ray runs no Ray task, and importing
    # it costs a serial study seconds (~2 s of CPU here).
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        if ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return None
    except AttributeError:
        return None
    return list(ray.get_gpu_ids())


def base_unit(job: StudyJob) -> str:
    """The dense base model's checkpoint path: the given one, a finished earlier run
    (``base/base_model.pth``), or trained now (resuming ``base/last.pth``). Its dense test
    metrics are evaluated once and cached at ``base/dense_metrics.json``."""
    from lib.checkpoints import load_base_model
    from lib.losses import losses_from_config
    from lib.models import model_from_config
    from lib.training import evaluate, train

    spec, out, cfg = job.spec, job.out, job.config()
    device = unit_device(spec)
    path = Path(spec.base_checkpoint) if spec.base_checkpoint is not None else \
        out / "base" / "base_model.pth"
    if not path.exists():
        seed_everything(spec.seed)
        loaders = study_loaders(spec, cfg)
        result = train(model_from_config(cfg), losses_from_config(cfg), loaders.train, cfg,
                       out / "base", val_loader=loaders.val, max_iters=spec.base_iters,
                       seed=spec.seed, device=device,
                       resume=(out / "base" / "last.pth").exists(), overwrite=True,
                       split=loaders.split)
        path = Path(result.final_model)
    metrics = out / "base" / "dense_metrics.json"
    if not metrics.exists():
        evaluate(load_base_model(path, cfg), study_loaders(spec, cfg).test, cfg, device=device,
                 out_path=metrics, progress=False, metric_options=spec.metric_options)
    return str(path)


def dense_metrics(job: StudyJob) -> dict[str, dict[str, float]]:
    """The dense model's test metrics :func:`base_unit` cached."""
    from lib.metrics import read_metrics

    path = job.out / "base" / "dense_metrics.json"
    return read_metrics(path, recover=f"delete {path} to re-evaluate the dense model")


def cell_path(job: StudyJob, cell: Cell) -> Path:
    selection, method, sparsity = cell
    return job.out / "cells" / f"{cell_id(method, sparsity, selection)}.json"


def cell_unit(job: StudyJob, cell: Cell, base: str) -> dict:
    """One cell's record: read back when its file exists, else computed (prune -> fine-tune ->
    evaluate, the fine-tuning resumed from ``cells/<cid>/last.pth`` when an interrupted run
    left one) and written atomically to ``cells/<cid>.json``; then the cell's resumable
    checkpoints are removed (only ``final_model.pth`` is kept)."""
    path = cell_path(job, cell)
    if not path.exists():
        record = _compute_cell(job, cell, base)
        atomic_write_json(record, path)
    record = read_cell(path)
    run_dir = path.with_suffix("")
    # At reference width each resumable checkpoint is ~1 GB; the row is the cell's result.
    for name in ("last.pth", "best.pth"):
        (run_dir / name).unlink(missing_ok=True)
    return record


def _compute_cell(job: StudyJob, cell: Cell, base_path: str) -> dict:
    from lib.checkpoints import load_base_model
    from lib.losses import losses_from_config
    from lib.metrics import delta_or_none, metrics_from_config
    from lib.pruning.registry import CellInputs, method_spec
    from lib.reports import results_row
    from lib.training import evaluate

    from .equal_cost import records_cost

    spec, cfg = job.spec, job.config()
    selection, method, sparsity = cell
    device = unit_device(spec)
    criterion = losses_from_config(cfg)
    base = load_base_model(base_path, cfg)
    dense = dense_metrics(job)
    loaders = study_loaders(spec, cfg)
    delta_options = metrics_from_config(cfg, **spec.metric_options).delta_options()
    started = time.time()
    run_dir = job.out / "cells" / cell_id(method, sparsity, selection)
    mspec = method_spec(method)
    iters = budget_iters(spec, cfg)
    # The method's own cell (lib.pruning.registry.MethodSpec.run_cell): prune and fine-tune,
    # fine-tune the control, or train (lib.sparse.study.trained_cell).
    outcome = mspec.run_cell(CellInputs(
        spec=spec, cfg=cfg, method=method, selection=tuple(selection), sparsity=sparsity,
        base=base, criterion=criterion, loaders=loaders, run_dir=run_dir, device=device,
        base_iters=iters[0], finetune_iters=iters[1],
        options=mspec.check_options(spec.method_options.get(method))))
    net, task_masks, report = outcome.net, outcome.task_masks, outcome.report
    keep_ratio, measured = outcome.keep_ratio, outcome.measured
    metrics = evaluate(net, loaders.test, cfg, device=device, progress=False,
                       metric_options=spec.metric_options)
    row = results_row(method, selection, float(sparsity), measured,
                      metrics, delta_or_none(metrics, dense, selection, **delta_options),
                      reference_sparsity=report["reference"]["sparsity"],
                      keep_ratio=keep_ratio)
    record = {"row": row, "seconds": round(time.time() - started, 1),
              "layer_sparsity": {n: v["sparsity"] for n, v in report["layers"].items()},
              "device": str(device),
              "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if task_masks:
        from lib.pruning import pairwise_mask_iou
        record["mask_iou"] = pairwise_mask_iou(task_masks)
    if records_cost(method, spec.methods):  # the equal-cost figure
        from lib.experiments.equal_cost import cost_columns
        record["cost"] = cost_columns(net, (1, 3, *cfg.IMAGE_SHAPE))
    return record


def read_cell(path: str | os.PathLike) -> dict:
    """A finished cell's record, checked as it is read: a JSON object with a ``row`` object,
    every number in it finite (NaN / Infinity refused, the key named), ``seconds`` a finite
    number >= 0. A one-line ValueError naming the file and how to recover otherwise. A
    wall-clock ``seconds`` an older version kept in the row moves beside it."""
    path = Path(path)
    recover = f"delete the cell file {path} to recompute it"
    record = read_json(path, "study cell", recover=recover)
    if not isinstance(record, dict) or not isinstance(record.get("row"), dict):
        raise ValueError(f"study cell {path} holds no result row (expected {{'row': {{...}}, "
                         f"...}}); {recover}")
    if "seconds" in record["row"]:
        record.setdefault("seconds", record["row"].pop("seconds"))
    bad = first_non_finite(record)
    if bad is not None:
        raise ValueError(f"study cell {path}: {bad} is not a finite number; {recover}")
    seconds = record.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds < 0):
        raise ValueError(f"study cell {path}: seconds {seconds!r} is not a finite number >= 0; "
                         f"{recover}")
    return record

