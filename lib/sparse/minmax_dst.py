"""The min-max framework's dynamic sparse training (``trainer_nyuv2.py --stage retrain``).

From a freshly initialised network: each layer is magnitude-pruned to ``prune_ratio`` at the
start (``hard_prune``); then at the first iteration of every ``every_epochs``-th epoch up to
``stop_epoch`` (10 and 150 of the original's 200 epochs), each layer is pruned back to its
ratio by magnitude and grows ``ceil(grow_ratio * n)`` dead positions with the largest
``|dL/dw|`` of the run's weighted loss (``layer_grow``), the grown weights set to zero. Pruned
weights are zero after every step (the original multiplies weights and gradients by the
masks). Defaults are the original's: ``prune_ratio`` 0.983 with ``grow_ratio`` 0.0051 (its
60x setting; 0.99 goes with 0.003).

Departures, each an option: the gradient is taken on the batch of the update iteration before
its own forward pass (the original reuses that iteration's backward; the weights are the same);
``final_prune=True`` (default) makes the last update a prune without growth, so the trained
network ends at exactly ``prune_ratio`` (the original's last update also grows, leaving each
layer ``grow_ratio`` denser; ``final_prune=False``); all prunable layers are pruned unless
``exclude``d (the original leaves its ``classifier`` layers dense).
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from lib.models import prunable_layers
from lib.masks import weight_parameter
from lib.training.hooks import RunContext, TrainingHook

from . import masking
from .hard_prune import check_ratio, hard_prune_mask, kept
from .probe import all_reduce_sums, weight_gradients


class MinmaxDST(TrainingHook):
    """Magnitude prune, then periodic prune-back and gradient growth (see the module doc)."""

    name = "minmax_dst"

    def __init__(self, prune_ratio: float = 0.983, *, grow_ratio: float = 0.0051,
                 every_epochs: int = 10, stop_epoch: int = 150, final_prune: bool = True,
                 epoch_iters: int | None = None, exclude: Sequence[str] = ()):
        self.prune_ratio = check_ratio(prune_ratio, "minmax_dst prune_ratio")
        self.grow_ratio = check_ratio(grow_ratio, "minmax_dst grow_ratio")
        for option, value in (("every_epochs", every_epochs), ("stop_epoch", stop_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"minmax_dst {option} must be a positive integer (epochs), got "
                                 f"{value!r}")
        if epoch_iters is not None and (not isinstance(epoch_iters, int) or epoch_iters < 1):
            raise ValueError(f"minmax_dst epoch_iters must be a positive integer, got "
                             f"{epoch_iters!r}")
        self.every_epochs, self.stop_epoch = every_epochs, stop_epoch
        self.final_prune, self.epoch_iters = bool(final_prune), epoch_iters
        self.exclude = list(exclude)
        self.counts: dict[str, int] = {}
        self.last_epoch = 0        # the last update epoch that fits the run (0: none)
        self.updates = 0
        self.run: RunContext | None = None

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "prune_ratio": self.prune_ratio, "grow_ratio": self.grow_ratio,
                "every_epochs": self.every_epochs, "stop_epoch": self.stop_epoch,
                "final_prune": self.final_prune, "epoch_iters": self.epoch_iters,
                "exclude": list(self.exclude)}

    def setup(self, model: nn.Module, run: RunContext) -> None:
        self.run = run
        self.epoch_iters = self.epoch_iters or int(run.epoch_iters)
        epochs = [e for e in range(self.every_epochs, self.stop_epoch + 1, self.every_epochs)
                  if e * self.epoch_iters < run.max_iters]
        self.last_epoch = epochs[-1] if epochs else 0
        layers = self.layers(model)
        self.counts = {n: kept(weight_parameter(m).numel(), self.prune_ratio)
                       for n, m in layers.items()}
        masking.install(model, {n: hard_prune_mask(weight_parameter(m), self.prune_ratio)
                                for n, m in layers.items()})
        masking.zero_dead(layers)

    def before_forward(self, model, batch, iteration):
        if iteration % self.epoch_iters:
            return
        epoch = iteration // self.epoch_iters
        if 0 < epoch <= self.last_epoch and epoch % self.every_epochs == 0:
            self.update(model, batch, grow=not (self.final_prune and epoch == self.last_epoch))
            self.updates += 1

    def after_step(self, model, iteration):
        masking.zero_dead(self.layers(model))

    def summary(self):
        return {**self.spec(), "updates": self.updates, "last_update_epoch": self.last_epoch}

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = int(state["updates"])

    # ------------------------------------------------------------------ the update
    def update(self, model: nn.Module, batch: Mapping[str, Any], grow: bool = True) -> None:
        """Gradients at the current weights, prune back to the ratio, then (``grow``) revive
        ``ceil(grow_ratio * n)`` dead positions per layer at zero."""
        layers = self.layers(model)
        sums = None
        if grow:
            run = self.run
            loss = (lambda preds, b: run.weighting.total(run.criterion.per_task(preds, b)),
                    list(layers))
            sums = weight_gradients(model, layers, batch, {"loss": loss}, weights="masked")
            all_reduce_sums(sums, run.dist)
        self.prune(model)
        if grow:
            self.grow(model, sums["loss"])

    def prune(self, model: nn.Module) -> None:
        """Each layer back to its count by magnitude; dead weights zeroed."""
        layers = self.layers(model)
        for name, module in layers.items():
            masking.set_mask(module, masking.keep_largest(module, self.counts[name], name))
        masking.zero_dead(layers)

    def grow(self, model: nn.Module, scores: Mapping[str, torch.Tensor]) -> None:
        for name, module in self.layers(model).items():
            alive = masking.mask_of(module)
            n_grow = min(math.ceil(self.grow_ratio * alive.numel()), int((~alive).sum()))
            grown = masking.top_k(scores[name], ~alive, n_grow, name)
            masking.set_mask(module, alive | grown)

    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        return {n: m for n, m in prunable_layers(model).items()
                if not any(fnmatch.fnmatchcase(n, p) for p in self.exclude)}
