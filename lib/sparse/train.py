"""Train a sparse multi-task network from scratch: one entry point for every method that does.

    result = train_sparse("disparse_dynamic", 90, criterion, loaders.train, cfg, "runs/dd",
                          options={"end": 200, "interval": 10})

``method`` is a dynamic method (:data:`lib.sparse.registry.SPARSE_METHODS`: masks change during
training) or ``disparse_static`` (DiSparse's static protocol: masks from ``disparse_static``
scores on the fresh network, held while it trains with the base schedule). The network is
``lib.models.model_from_config(cfg)`` seeded by ``seed``, restricted to ``selected_tasks`` (default: all
of ``cfg.TASKS``). The result's ``final_model`` is a pruned checkpoint (masks included) that
``lib.pruning.load_pruned`` reads.

It also registers the dynamic methods for the study (:mod:`lib.pruning.registry`: kind
``trained_from_scratch``, their study schedules) and holds :func:`scratch_with_hook`, the
``train`` hook of any from-scratch method whose masks a training hook keeps.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from lib.pruning.registry import like, register_method
from lib.tasks import check_task_selection
from lib.training.engine import TrainResult

from .registry import SPARSE_METHODS, make_sparse, sparse_options
from .study import TrainJob, disparse_schedule, resume_or_start

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
    return train_hooked(hook, criterion, train_loader, cfg, run_dir, selected_tasks=tasks,
                        max_iters=iters, seed=seed, device=device, **train_kwargs)


def train_hooked(hook, criterion, train_loader, cfg, run_dir: str | os.PathLike, *,
                 selected_tasks: Sequence[str] | None = None, max_iters: int | None = None,
                 seed: int = 0, device=None, **train_kwargs: Any) -> TrainResult:
    """A fresh network (``model_from_config(cfg)`` seeded by ``seed``, restricted to
    ``selected_tasks``) trained with the training hook ``hook``; other keywords go to
    :func:`lib.training.train`."""
    from lib.models import model_from_config
    from lib.training import train
    from lib.utils import seed_everything

    tasks = check_task_selection(selected_tasks or cfg.TASKS, cfg.TASKS, "selected_tasks")
    criterion = criterion.restricted_to(tasks)
    iters = int(cfg.MAX_ITERS if max_iters is None else max_iters)
    seed_everything(seed)
    net = model_from_config(cfg)
    if tasks != list(cfg.TASKS):
        net = net.select(tasks)
    return train(net, criterion, train_loader, cfg, run_dir, max_iters=iters, seed=seed,
                 device=device, hook=hook, **train_kwargs)


def scratch_with_hook(job: TrainJob, hook) -> tuple[Any, None, os.PathLike]:
    """The ``train`` hook of a from-scratch method whose masks a training hook keeps: a fresh
    network of the job's tasks trained for ``base_iters`` with ``hook``
    (:class:`lib.training.hooks.TrainingHook`), resuming an interrupted run."""
    result = train_hooked(hook, job.criterion, job.loaders.train, job.cfg, job.run_dir,
                          selected_tasks=job.selection, max_iters=job.base_iters,
                          weighting=job.weighting, **resume_or_start(job.run_dir), **job.common())
    return result.net, None, result.final_model


# ------------------------------------------------------------------- the dynamic methods
def _dynamic(job: TrainJob):
    """Train with the method's hook (:func:`lib.sparse.registry.make_sparse`) from scratch."""
    return scratch_with_hook(job, make_sparse(job.method, job.sparsity, job.cfg,
                                              max_iters=job.base_iters, **job.options))


def _hook_options(method: str) -> dict:
    """The options of a dynamic method: its hook's keywords, defaults from its signature
    (None where the study's schedule sets it)."""
    import inspect

    cls, _ = SPARSE_METHODS[method]
    params = inspect.signature(cls.__init__).parameters
    return {name: like(None if params[name].default is inspect.Parameter.empty
                       else params[name].default, "default: the study's schedule"
                       if params[name].default is inspect.Parameter.empty else "")
            for name in sparse_options(method)}


def _disparse_dynamic_schedule(base_iters, finetune_iters, dataset):
    from .registry import DISPARSE_DYNAMIC
    defaults = DISPARSE_DYNAMIC[dataset]   # an unknown dataset: one line naming it
    return {**disparse_schedule(base_iters), "grad_chunks": defaults["grad_chunks"]}


register_method("disparse_dynamic", _dynamic, kind="trained_from_scratch",
                summary="DiSparse dynamic: masks pruned by per-task |w * grad| and regrown "
                        "during training from scratch",
                options=_hook_options("disparse_dynamic"), schedule=_disparse_dynamic_schedule)
register_method("minmax_dst", _dynamic, kind="trained_from_scratch",
                summary="min-max dynamic sparse training: per-layer prune and grow every few "
                        "epochs, from scratch",
                options=_hook_options("minmax_dst"),
                schedule=lambda base_iters, finetune_iters, dataset: {
                    "epoch_iters": max(1, base_iters // 200), "every_epochs": 10,
                    "stop_epoch": 150})
register_method("rigl", _dynamic, kind="trained_from_scratch",
                summary="RigL: ERK densities, magnitude drop and gradient regrowth, from scratch",
                options=_hook_options("rigl"),
                schedule=lambda base_iters, finetune_iters, dataset: disparse_schedule(base_iters))
