"""Evaluate any network (dense, pruned, compact, any MultiTaskModel) with its task metrics."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from lib.checkpoints import unwrap
from lib.utils import check_output_file, resolve_device

from .precision import Precision


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, cfg=None,
             device: str | torch.device | None = None, out_path: str | os.PathLike | None = None,
             progress: bool = True, metric_options: Mapping[str, str] | None = None, *,
             metrics: Any = None, amp: str | bool | None = None,
             channels_last: bool | None = None) -> "MetricResults":
    """``{task: {metric: value}}`` of ``net`` over ``loader`` (eval mode, no gradients).

    ``metrics`` chooses the evaluator: ``None`` (default) is the config's,
    ``lib.metrics.metrics_from_config(cfg, tasks=net.tasks, **metric_options)`` (the reference
    datasets' ``SceneNetEval``, the min-max benchmarks' evaluators), so a compact network is
    scored on its own tasks only; ``metric_options`` picks other metric variants (e.g.
    ``{"miou": "present"}``; defaults and options: docs/METRICS.md). For other tasks pass
    ``{task: fn(pred, batch) -> {metric: value}}`` (wrapped in ``lib.metrics.TaskMetrics``;
    restricted to the network's tasks, so one dict serves every task selection) or any
    evaluator with ``reset`` / ``update`` / ``compute``; ``cfg`` is then not needed. The loop
    is ``lib.metrics.evaluate``. With ``out_path`` the metrics are also written there as JSON,
    atomically (:func:`lib.metrics.write_metrics`; the path is checked before the evaluation
    runs). The network's train/eval mode is restored afterwards.

    Returns :class:`lib.metrics.MetricResults`: finite floats, ``None`` for an undefined metric
    (``.undefined`` gives the reason; the file has ``null`` and the reason). A non-finite
    output or metric raises :class:`lib.utils.NonFiniteError` naming it; nothing is written.

    ``amp`` / ``channels_last`` (default: ``cfg.AMP`` / ``cfg.CHANNELS_LAST``, else float32)
    run the forward pass in that precision and layout (:mod:`lib.training.precision`); the
    metrics are computed in float32 either way.
    """
    from lib.metrics import TaskMetrics, finite_results, metrics_from_config, write_metrics
    from lib.metrics import evaluate as run_evaluator

    model = unwrap(net)
    device = resolve_device(device)
    precision = Precision.resolve(cfg, amp, channels_last)
    precision.check(device)
    if out_path is not None:
        check_output_file(out_path, "metrics file")
    if len(loader) == 0:
        raise ValueError("the evaluation loader is empty (0 items)")
    if metrics is None:
        if cfg is None:
            raise ValueError("evaluate needs the config (its task metrics) or metrics=...")
        tasks = getattr(model, "tasks", None) or list(cfg.TASKS)
        evaluator = metrics_from_config(cfg, tasks=tasks, **dict(metric_options or {}))
    elif isinstance(metrics, Mapping):
        evaluator = TaskMetrics(metrics_for(model, metrics))
    elif isinstance(metrics, TaskMetrics):
        evaluator = TaskMetrics(metrics_for(model, metrics.metrics), metrics.directions)
    else:
        evaluator = metrics
    try:
        values = run_evaluator(precision.prepare(model.to(device)), loader, evaluator,
                               device=device, progress=progress, autocast=precision.dtype)
    finally:
        precision.release(model)
    values = finite_results(values, "evaluation")
    if out_path is not None:
        write_metrics(values, out_path)
    return values


def metrics_for(net: nn.Module, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` restricted to ``net``'s tasks (a compact network scores its own tasks only,
    as its losses are restricted), in ``net.tasks`` order; a network without task names keeps
    them all. A one-line ValueError when none of ``net``'s tasks has a metric function."""
    tasks = getattr(net, "tasks", None)
    if tasks is None:
        return dict(metrics)
    kept = {task: metrics[task] for task in tasks if task in metrics}
    if not kept:
        raise ValueError(f"metrics are given for tasks {sorted(metrics)}, none of the network's "
                       f"tasks {list(tasks)}")
    return kept


def metrics_path_for(checkpoint: str | os.PathLike) -> Path:
    """Where the metrics of ``checkpoint`` are saved: ``<stem>.metrics.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.metrics.json")


def metrics_eval_fn(cfg=None, metrics: Any = None) -> Any:
    """An ``eval_fn`` for :func:`lib.training.train` that adds the task metrics to validation
    (the reference tasks' from ``cfg``, or ``metrics`` as :func:`evaluate` takes them)."""
    def eval_fn(net: nn.Module, loader: DataLoader, device: torch.device):
        return evaluate(net, loader, cfg, device=device, progress=False, metrics=metrics)
    return eval_fn
