"""What a run may add to the plain training loop: mask updates, a penalty, per-step upkeep.

:mod:`lib.sparse` implements them (dynamic sparse training, reweighted-L1 training); the loop
(:func:`lib.training.engine.run_loop`, ``hook=``) calls them in this order::

    hook.check(model, max_iters)           first, before anything is written
    hook.setup(model, run)                 once, before the optimiser is built, fresh or resumed
                                           (a resumed run then loads masks and state over it)
    for every iteration i (0-based):
        hook.before_forward(model, batch, i)   may change masks; sees the batch it trains on
        forward; total = weighting.total(losses) + hook.penalty(model)
        backward; optimizer.step(); scheduler.step()
        hook.after_step(model, i)
    hook.finish(model)                     once after the last iteration, before the final save

Checkpoints record ``hook.spec()`` and ``hook.state_dict()``; resuming with another spec is
refused (:func:`check_same_spec`), and the state is restored exactly.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn


@dataclass
class RunContext:
    """What the loop tells a hook at :meth:`TrainingHook.setup`."""
    criterion: Any                 # per_task(preds, batch) -> {task: loss}
    weighting: Any                 # lib.training.weighting.TaskWeighting
    device: torch.device
    seed: int
    max_iters: int
    epoch_iters: int               # iterations per epoch (batches of one pass, per process)
    dist: Any                      # lib.training.distributed.DistInfo


class TrainingHook(abc.ABC):
    """Base class of the loop's hooks; every method but :meth:`spec` defaults to nothing."""

    name: ClassVar[str]

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """Name and settings (JSON-able), recorded in checkpoints and compared on resume."""

    def check(self, model: nn.Module, max_iters: int) -> None:
        """Raise a one-line ValueError if the hook cannot run on ``model`` for ``max_iters``
        iterations (schedule, reachable sparsity); called before anything is written."""

    def setup(self, model: nn.Module, run: RunContext) -> None:
        """Before the optimiser is built (install masks, check the schedule against the run)."""

    def before_forward(self, model: nn.Module, batch: Mapping[str, Any], iteration: int) -> None:
        """Before the forward pass of 0-based ``iteration``, on the batch it will train on."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the weighted loss (``None``: nothing)."""
        return None

    def after_step(self, model: nn.Module, iteration: int) -> None:
        """After the optimiser and scheduler steps of ``iteration``."""

    def finish(self, model: nn.Module) -> None:
        """After the last iteration, before the final model is written (idempotent)."""

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for the final model's sidecar (default: the spec)."""
        return self.spec()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def check_same_spec(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                    what: str, source: str) -> None:
    """Refuse to resume when a recorded spec differs from this run's (one-line ValueError)."""
    saved = None if saved is None else dict(saved)
    current = None if current is None else dict(current)
    if saved == current:
        return
    keys = set(saved or {}) | set(current or {})
    diff = sorted(k for k in keys if (saved or {}).get(k) != (current or {}).get(k))
    raise ValueError(f"cannot resume from {source}: it was written with {what} {saved}, this run "
                     f"has {current} (differs in {diff}); resume with the same settings or start "
                     f"a new run")
