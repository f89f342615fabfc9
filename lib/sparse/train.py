"""Train a sparse multi-task network from scratch: one entry point for every method that does.

    result = train_sparse("disparse_dynamic", 90, criterion, loaders.train, cfg, "runs/dd",
                          options={"end": 200, "interval": 10})

``method`` is a dynamic method (:data:`lib.sparse.registry.SPARSE_METHODS`: masks change during
training) or ``disparse_static`` (DiSparse's static protocol: masks from ``disparse_static``
scores on the fresh network, held while it trains with the base schedule). The network is
``lib.models.model_from_config(cfg)`` seeded by ``seed``, restricted to ``selected_tasks`` (default: all
of ``cfg.TASKS``). The result's ``final_model`` is a pruned checkpoint (masks included) that
``lib.pruning.load_pruned`` reads.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from lib.tasks import check_task_selection
from lib.training.engine import TrainResult

from .registry import SPARSE_METHODS, make_sparse

STATIC_PROTOCOL = "disparse_static"
FROM_SCRATCH_METHODS = tuple(sorted(SPARSE_METHODS)) + (STATIC_PROTOCOL,)


def check_method(method: str) -> str:
    if method not in FROM_SCRATCH_METHODS:
        raise ValueError(f"unknown sparse training method {method!r}; expected one of "
                         f"{list(FROM_SCRATCH_METHODS)}")
    return method


def train_sparse(method: str, sparsity: float, criterion, train_loader, cfg,
                 run_dir: str | os.PathLike, *, selected_tasks: Sequence[str] | None = None,
                 options: Mapping[str, Any] | None = None, seed: int = 0,
                 num_batches: int | None = None, max_iters: int | None = None,
                 device=None, **train_kwargs: Any) -> TrainResult:
    """Train ``method`` at ``sparsity`` percent from a fresh network; ``options`` go to the
    method (``make_sparse``, or ``lib.pruning.prune`` for ``disparse_static``), everything
    else to :func:`lib.training.train` (the base schedule: ``MAX_ITERS``, ``INIT_LR``, ...).
    Settings are checked before anything is written."""
    from lib.models import model_from_config
    from lib.training import train
    from lib.utils import seed_everything

    check_method(method)
    tasks = check_task_selection(selected_tasks or cfg.TASKS, cfg.TASKS, "selected_tasks")
    criterion = criterion.restricted_to(tasks)
    iters = int(cfg.MAX_ITERS if max_iters is None else max_iters)
    if method == STATIC_PROTOCOL:
        from .disparse import static_from_scratch, train_from_scratch

        pruned = static_from_scratch(cfg, criterion, train_loader, selected_tasks=tasks,
                                     sparsity=sparsity, num_batches=num_batches, seed=seed,
                                     device=device, **dict(options or {}))
        return train_from_scratch(pruned, criterion, train_loader, cfg, run_dir,
                                  max_iters=iters, seed=seed, device=device, **train_kwargs)
    hook = make_sparse(method, sparsity, cfg, max_iters=iters, **dict(options or {}))
    seed_everything(seed)
    net = model_from_config(cfg)
    if tasks != list(cfg.TASKS):
        net = net.select(tasks)
    return train(net, criterion, train_loader, cfg, run_dir, max_iters=iters, seed=seed,
                 device=device, hook=hook, **train_kwargs)
