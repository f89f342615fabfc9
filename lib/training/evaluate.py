"""Evaluate any network (dense, pruned, compact) with the AdaShare-style metrics."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from lib.utils import atomic_write_json, resolve_device

from .checkpoint import unwrap


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, cfg, device: str | torch.device | None = None,
             out_path: str | os.PathLike | None = None,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``net`` over ``loader`` (eval mode, no gradients).

    Uses ``lib.metrics.SceneNetEval.from_config(cfg, tasks=net.tasks)``, so a compact network
    is scored on its own tasks only (the loop is ``lib.metrics.evaluate``). With ``out_path``
    the metrics are also written there as JSON, atomically. The network's train/eval mode is
    restored afterwards.
    """
    from lib.metrics import SceneNetEval
    from lib.metrics import evaluate as run_evaluator

    model = unwrap(net)
    tasks = getattr(model, "tasks", None) or list(cfg.TASKS)
    device = resolve_device(device)
    if len(loader.dataset) == 0:
        raise ValueError("the evaluation dataset is empty (0 items)")
    evaluator = SceneNetEval.from_config(cfg, tasks=tasks)
    metrics = run_evaluator(model.to(device), loader, evaluator, device=device, progress=progress)
    metrics = {t: {m: float(v) for m, v in vals.items()} for t, vals in metrics.items()}
    if out_path is not None:
        atomic_write_json(metrics, out_path)
    return metrics


def metrics_path_for(checkpoint: str | os.PathLike) -> Path:
    """Where the metrics of ``checkpoint`` are saved: ``<stem>.metrics.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.metrics.json")


def metrics_eval_fn(cfg) -> Any:
    """An ``eval_fn`` for :func:`lib.training.train` that adds the task metrics to validation."""
    def eval_fn(net: nn.Module, loader: DataLoader, device: torch.device):
        return evaluate(net, loader, cfg, device=device, progress=False)
    return eval_fn
