"""Reweighted-L1 regularisation (the min-max code's ``--stage rew``), as a training hook.

The penalty added to the weighted loss is ``penalty * sum_l sum |W_l| / (|W_l,old| + eps)``
over the regularised layers, with ``W_old`` the weights at the start and refreshed at the
iterations ``refresh_at``. Small weights are pushed harder towards zero, so a one-shot
magnitude prune afterwards removes little that matters (Candès et al.'s reweighting).
Defaults are the original's: ``penalty`` 1e-7, ``eps`` 1e-6.

The original divides by ``W_old + eps`` (no absolute value) inside ``|.|``; for a negative
weight within ``eps`` of ``-eps`` that divides by (nearly) zero. ``reference_eps=True`` keeps
that form; the default uses ``|W_old| + eps``, the reweighting the method describes.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import torch
import torch.nn as nn

from lib.models import prunable_layers, shared_layers
from lib.masks import effective_weight
from lib.training.hooks import RunContext, TrainingHook

LAYER_SCOPES = ("reference", "shared", "all")
DEFAULT_SCOPE = "reference"


def scoped_layers(model: nn.Module, layers: str, exclude: Sequence[str] = ()
                  ) -> dict[str, nn.Module]:
    """The layers a min-max method regularises and prunes, minus ``exclude`` (fnmatch patterns).

    ``"reference"`` (default): ``prune_apgda``'s rule, every prunable layer whose weight is 4-D
    (a convolution) and whose name lacks ``task`` (it tests ``'task' not in name`` on the
    parameter names). On SegNet-MTAN that is the shared convs and the per-task attention
    convs (``encoder_att.*``, ``decoder_att.*``), only the ``pred_task*`` heads left dense; on
    SceneNet (heads ``task*_fc*``) it is the shared layers. On a model whose names carry no
    ``task`` it is every conv layer, heads included. ``"shared"``: the contract's shared
    layers; ``"all"``: every prunable layer (the journal trainer's scope). An empty scope is a
    one-line ValueError."""
    if layers not in LAYER_SCOPES:
        raise ValueError(f"layers must be one of {list(LAYER_SCOPES)}, got {layers!r}")
    if layers == "reference":
        chosen = {n: m for n, m in prunable_layers(model).items()
                  if "task" not in n and getattr(m, "weight_orig", m.weight).dim() == 4}
    else:
        chosen = shared_layers(model) if layers == "shared" else prunable_layers(model)
    chosen = {n: m for n, m in chosen.items() if not any(fnmatch.fnmatchcase(n, p)
                                                         for p in exclude)}
    if not chosen:
        rule = {"reference": "conv layers whose names lack 'task'",
                "shared": "shared layers", "all": "prunable layers"}[layers]
        raise ValueError(f"layers={layers!r} selects no layer of {type(model).__name__} (it "
                         f"takes the {rule}{', minus exclude' if exclude else ''}); use "
                         f"another scope")
    return chosen


class ReweightedL1(TrainingHook):
    """``penalty * sum |W| / (|W_old| + eps)``, ``W_old`` refreshed at ``refresh_at``."""

    name = "reweighted_l1"

    def __init__(self, *, penalty: float = 1e-7, eps: float = 1e-6,
                 refresh_at: Sequence[int] = (), layers: str = DEFAULT_SCOPE,
                 exclude: Sequence[str] = (), reference_eps: bool = False):
        if not float(penalty) >= 0:
            raise ValueError(f"reweighted-L1 penalty must be >= 0, got {penalty}")
        if not float(eps) > 0:
            raise ValueError(f"reweighted-L1 eps must be > 0, got {eps}")
        if layers not in LAYER_SCOPES:
            raise ValueError(f"layers must be one of {list(LAYER_SCOPES)}, got {layers!r}")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in refresh_at):
            raise ValueError(f"refresh_at must list iterations >= 0, got {list(refresh_at)}")
        self.penalty_weight, self.eps = float(penalty), float(eps)
        self.refresh_at = sorted(set(refresh_at))
        self.layer_scope, self.exclude = layers, list(exclude)
        self.reference_eps = bool(reference_eps)
        self.scales: dict[str, torch.Tensor] = {}

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "penalty": self.penalty_weight, "eps": self.eps,
                "refresh_at": list(self.refresh_at), "layers": self.layer_scope,
                "exclude": list(self.exclude), "reference_eps": self.reference_eps}

    def check(self, model: nn.Module, max_iters: int) -> None:
        late = [i for i in self.refresh_at if i >= max_iters]
        if late:
            raise ValueError(f"reweighted_l1: refresh_at {late} lie beyond the run's "
                             f"{max_iters} iterations; use iterations in [0, {max_iters})")

    def setup(self, model: nn.Module, run: RunContext) -> None:
        self.refresh(model)

    def refresh(self, model: nn.Module) -> None:
        """``1 / (|W| + eps)`` (or ``1 / (W + eps)``, reference) from the current weights."""
        with torch.no_grad():
            self.scales = {}
            for name, module in self.layers(model).items():
                w = effective_weight(module).detach()
                self.scales[name] = 1.0 / ((w if self.reference_eps else w.abs()) + self.eps)

    def before_forward(self, model, batch, iteration):
        if iteration in self.refresh_at and iteration > 0:   # iteration 0: setup's values
            self.refresh(model)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        layers = self.layers(model)
        total = sum((effective_weight(m) * self.scales[n]).abs().sum() for n, m in layers.items())
        return self.penalty_weight * total

    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        return scoped_layers(model, self.layer_scope, self.exclude)

    def state_dict(self):
        return {"scales": {n: s.detach().cpu().clone() for n, s in self.scales.items()}}

    def load_state_dict(self, state):
        device = next(iter(self.scales.values())).device if self.scales else "cpu"
        self.scales = {n: s.to(device) for n, s in state["scales"].items()}
