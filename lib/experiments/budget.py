"""Budget mode from a base model: prune for a task selection to fit "X MB" / "Y ms" here.

    from lib.experiments.budget import fit_budget
    result = fit_budget(base, criterion, train_loader, ["seg"], (1, 3, 224, 288),
                        budget_mb=10, budget_ms=200, structure="structured", dtype="int8",
                        calibration=calib_loader, out_dir="export/budget")

The candidates are CUT's (scored once): masks at a keep ratio (``structure="unstructured"``)
or structured CUT at a channel ratio (``"structured"``); :func:`lib.export.budget.solve_budget`
measures them and solves the ratio (see there). Lives here, above both ``lib.pruning`` and
``lib.export``, because it needs both.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Sequence

import torch.nn as nn

from lib.export.budget import (STRUCTURES, BudgetResult, Measurer, check_budget, solve_budget)
from lib.export.quantize import DEFAULT_CALIBRATION_BATCHES


def unstructured_builder(net, criterion, loader, selected_tasks: Sequence[str], num_batches: int,
                         method: str = "cut", tasks: Sequence[str] | None = None, seed: int = 0,
                         **options: Any) -> Callable[[float], nn.Module]:
    """``keep ratio -> masked compact network`` of ``method`` (scored once)."""
    from lib.pruning import PruneContext, check_method, install_masks, select_tasks
    from lib.utils import seed_everything

    spec = check_method(method)
    options = spec.check_options(options)
    compact = select_tasks(net, selected_tasks, tasks)
    seed_everything(seed)
    plan = spec.plan(compact, PruneContext(criterion, loader, num_batches, seed, None),
                     **options)

    def build(keep_ratio: float) -> nn.Module:
        candidate = copy.deepcopy(plan.net)
        return install_masks(candidate, plan.masks_for(keep_ratio)).eval()
    return build


def structured_builder(net, criterion, loader, selected_tasks: Sequence[str], num_batches: int,
                       ranking: str = "uniform", tasks: Sequence[str] | None = None,
                       **options: Any) -> Callable[[float], nn.Module]:
    """``channel ratio -> structurally pruned network`` of structured CUT (scored once)."""
    from lib.pruning.structured import structured_cut_plan

    plan = structured_cut_plan(net, criterion, loader, selected_tasks, num_batches, tasks=tasks,
                               **options)
    return lambda ratio: plan.prune(1.0 - ratio, ranking).eval()


def fit_budget(net, criterion, loader, selected_tasks: Sequence[str], input_shape: Sequence[int],
               budget_mb: float | None = None, budget_ms: float | None = None,
               structure: str = "structured", dtype: str = "float32",
               engine: str = "onnxruntime", threads: int | None = None, repeats: int = 5,
               num_batches: int = 2, ranking: str = "uniform", method: str = "cut",
               tasks: Sequence[str] | None = None, calibration=None,
               calibration_batches: int = DEFAULT_CALIBRATION_BATCHES, dataset: str | None = None,
               iterations: int = 6, out_dir: str | os.PathLike | None = None,
               seed: int = 0, verbose: bool = True) -> BudgetResult:
    """The notebook call: score ``net`` for ``selected_tasks`` once, then :func:`solve_budget`.

    ``loader`` (batch dicts) scores; int8 calibrates on ``calibration`` (default: ``loader``).
    Everything is checked before any scoring starts.
    """
    check_budget(budget_mb, budget_ms)
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    measurer = Measurer(input_shape, dtype, engine, threads, repeats,
                        calibration=calibration if calibration is not None else loader,
                        calibration_batches=calibration_batches, dataset=dataset)
    if structure == "structured":
        build = structured_builder(net, criterion, loader, selected_tasks, num_batches,
                                   ranking=ranking, tasks=tasks)
    else:
        build = unstructured_builder(net, criterion, loader, selected_tasks, num_batches,
                                     method=method, tasks=tasks, seed=seed)
    return solve_budget(build, measurer, budget_mb, budget_ms, structure,
                        iterations=iterations, out_dir=out_dir,
                        stem=f"{structure}_{'-'.join(selected_tasks)}",
                        progress=print if verbose else None)
