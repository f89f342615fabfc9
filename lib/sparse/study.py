"""The study grid's cells for methods that train, rather than prune a trained model and
fine-tune it (:func:`lib.experiments.units.cell_unit` hands these over).

- ``disparse_dynamic``, ``minmax_dst``, ``rigl``: a fresh network of the selected tasks trained
  from scratch with the method's hook; budget ``B`` from scratch;
- ``disparse_static_scratch``: DiSparse's static protocol, ``disparse_static`` masks on a fresh
  network trained from scratch with the masks held; budget ``B`` from scratch;
- ``minmax_pipeline``: the base model's selected tasks through reweighted-L1 training, a hard
  prune of every layer and masked retraining; budget base ``B`` + rew ``F`` + retrain ``F``.

``B`` is the study's base-training length (``base_iters``, default ``MAX_ITERS``), ``F`` its
fine-tuning length (``finetune_iters``, default ``RETRAIN_EPOCH``); one-shot methods cost
base ``B`` + ft ``F``. Schedules are the originals' mapped onto the budget (:func:`schedule`):
DiSparse's END = 15000 of 20000 iterations and INT = 50 become ``end = 3B/4`` and ``interval =
max(1, round(50 B / 20000))``; RigL uses the same (to be comparable); the min-max DST's 200
epochs become ``epoch_iters = max(1, B // 200)`` with updates every 10 such epochs up to 150.
``spec.method_options[method]`` overrides any of these.

Each of these methods is a :class:`lib.pruning.registry.MethodSpec` of a trained kind,
registered in its own file (``train.py``: the dynamic methods, ``disparse.py``: the static
protocol, ``minmax_pipeline.py``) with its ``train`` hook, ``(job: TrainJob) -> (network, task
masks or None, final checkpoint)``, and its ``schedule``; this module runs any such hook as the
study's cell (:func:`trained_cell`, the cell of both trained kinds). A method of one's own:
``@register_method(name, kind="trained_from_scratch", summary=...)`` over a function of a
:class:`TrainJob`, e.g. ``lambda job: scratch_with_hook(job, MyHook(job.sparsity))``
(:func:`lib.sparse.train.scratch_with_hook`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch.nn as nn

from lib.pruning.registry import (TRAINED, CellInputs, CellOutcome, MethodSpec, method_spec,
                                  set_kind_cell)

DISPARSE_FRACTIONS = (15000 / 20000, 50 / 20000)   # END and INT of DiSparse's NYU schedule


def disparse_schedule(base_iters: int) -> dict[str, int]:
    """DiSparse's END and INT mapped onto ``base_iters`` (RigL's study schedule too)."""
    end_fraction, interval_fraction = DISPARSE_FRACTIONS
    return {"end": int(end_fraction * base_iters),
            "interval": max(1, round(interval_fraction * base_iters))}


def schedule(method: str, base_iters: int, finetune_iters: int, dataset: str | None = None
             ) -> dict[str, Any]:
    """The study's default options of ``method`` for its budget (see the module docstring)."""
    spec = method_spec(method)
    return dict(spec.schedule(base_iters, finetune_iters, dataset)) if spec.schedule else {}


@dataclass
class TrainJob:
    """One cell of a trained method, as its ``train`` hook gets it. ``options``: the method's
    study schedule overridden by the study's ``method_options``, checked by its spec."""
    method: str
    cfg: Any
    base: nn.Module
    criterion: Any
    loaders: Any
    sparsity: float
    selection: list[str]
    run_dir: Path
    base_iters: int
    finetune_iters: int
    seed: int
    device: Any
    weighting: Any = None
    sparsity_mode: str = "target"
    num_batches: int | None = None
    options: dict = field(default_factory=dict)

    def common(self) -> dict[str, Any]:
        """The keywords every training of a cell shares."""
        return dict(val_loader=self.loaders.val, split=self.loaders.split, seed=self.seed,
                    device=self.device, log=False)


def train_cell(method: str, *, cfg, base: nn.Module, criterion, loaders, sparsity: float,
               selection: Sequence[str], run_dir: Path, base_iters: int, finetune_iters: int,
               seed: int, device, weighting=None, sparsity_mode: str = "target",
               num_batches: int | None = None,
               options: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict | None, float]:
    """Train one cell; returns ``(trained compact network, per-task masks or None, kept
    fraction of the prunable weights)``. Only the final model stays in ``run_dir``."""
    from lib.models import prunable_layers

    from . import masking

    spec = method_spec(method)
    if spec.train is None:
        raise ValueError(f"method {method!r} ({spec.kind}) does not train: it has no train hook")
    options = {**schedule(method, base_iters, finetune_iters, cfg.DATASET),
               **spec.check_options(options)}
    job = TrainJob(method, cfg, base, criterion, loaders, float(sparsity), list(selection),
                   Path(run_dir), base_iters, finetune_iters, seed, device, weighting,
                   sparsity_mode, num_batches, options)
    net, task_masks, final = spec.train(job)
    _keep_only(Path(run_dir), Path(final))
    layers = prunable_layers(net)
    kept = sum(masking.counts(layers).values()) / sum(m.weight_orig.numel()
                                                       for m in layers.values())
    return net, task_masks, kept


def trained_cell(spec: MethodSpec, inputs: CellInputs) -> CellOutcome:
    """The study's cell of a trained method: :func:`train_cell`, then the sparsity report."""
    from lib.masks import sparsity_report

    study = inputs.spec
    net, task_masks, keep_ratio = train_cell(
        spec.name, cfg=inputs.cfg, base=inputs.base, criterion=inputs.criterion,
        loaders=inputs.loaders, sparsity=inputs.sparsity, selection=inputs.selection,
        run_dir=inputs.run_dir, base_iters=inputs.base_iters,
        finetune_iters=inputs.finetune_iters, seed=study.seed, device=inputs.device,
        weighting=study.weighting, sparsity_mode=study.sparsity_mode,
        num_batches=study.num_batches, options=inputs.options)
    report = sparsity_report(net, full_net=inputs.base)
    return CellOutcome(net, task_masks, keep_ratio, report["deployed"]["sparsity"], report)


set_kind_cell(TRAINED, trained_cell)


def resume_or_start(run_dir: Path) -> dict[str, bool]:
    """Resume a cell's training from ``run_dir/last.pth`` when an interrupted run left one (a
    retried task after its worker died: the engine's exact resume gives the same result);
    else start afresh over whatever a run killed before its first checkpoint left. The
    min-max pipeline's two phases restart from the beginning."""
    resume = (Path(run_dir) / "last.pth").exists()
    return {"resume": resume, "overwrite": not resume}


def _keep_only(run_dir: Path, final: Path) -> None:
    """Remove every resumable checkpoint under ``run_dir`` (about 1 GB each at reference
    width), keeping the final model and its sidecar."""
    keep = {final.resolve(), final.with_suffix(".json").resolve()}
    for path in list(run_dir.rglob("*.pth")):
        if path.resolve() not in keep and path.name in ("last.pth", "best.pth"):
            path.unlink()
