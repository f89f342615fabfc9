"""Evaluate any network (dense, pruned, compact, any MultiTaskModel) with its task metrics."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from lib.checkpoints import unwrap
from lib.utils import atomic_write_json, resolve_device


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, cfg=None,
             device: str | torch.device | None = None, out_path: str | os.PathLike | None = None,
             progress: bool = True, metric_options: Mapping[str, str] | None = None, *,
             metrics: Any = None) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``net`` over ``loader`` (eval mode, no gradients).

    ``metrics`` chooses the evaluator: ``None`` (default) is the reference tasks'
    ``lib.metrics.SceneNetEval.from_config(cfg, tasks=net.tasks, **metric_options)``, so a
    compact network is scored on its own tasks only; ``metric_options`` picks corrected metric
    variants (e.g. ``{"miou": "present"}``; default: the reference's definitions, see
    docs/METRICS.md). For other tasks pass ``{task: fn(pred, batch) -> {metric: value}}``
    (wrapped in ``lib.metrics.TaskMetrics``) or any evaluator with ``reset`` / ``update`` /
    ``compute``; ``cfg`` is then not needed. The loop is ``lib.metrics.evaluate``. With
    ``out_path`` the metrics are also written there as JSON, atomically. The network's
    train/eval mode is restored afterwards.
    """
    from lib.metrics import SceneNetEval, TaskMetrics
    from lib.metrics import evaluate as run_evaluator

    model = unwrap(net)
    device = resolve_device(device)
    if len(loader.dataset) == 0:
        raise ValueError("the evaluation dataset is empty (0 items)")
    if metrics is None:
        if cfg is None:
            raise ValueError("evaluate needs the config (reference-task metrics) or metrics=...")
        tasks = getattr(model, "tasks", None) or list(cfg.TASKS)
        evaluator = SceneNetEval.from_config(cfg, tasks=tasks, **dict(metric_options or {}))
    elif isinstance(metrics, Mapping):
        evaluator = TaskMetrics(metrics)
    else:
        evaluator = metrics
    values = run_evaluator(model.to(device), loader, evaluator, device=device, progress=progress)
    values = {t: {m: float(v) for m, v in vals.items()} for t, vals in values.items()}
    if out_path is not None:
        atomic_write_json(values, out_path)
    return values


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
