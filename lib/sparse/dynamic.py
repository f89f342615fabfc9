"""Dynamic sparse training by drop and grow: DiSparse's dynamic scheme and plain RigL.

Both are :class:`lib.training.hooks.TrainingHook` s: ``train(..., hook=DisparseDynamic(90, ...))``
trains a network from scratch with masks that change every ``interval`` iterations until
``end``, then stay fixed until the run's last iteration. Masks are ``torch.nn.utils.prune``
masks on every prunable layer of the model (:func:`lib.models.prunable_layers`), so they, the
schedule (a function of the iteration) and the optimiser state survive resume bit for bit.

The drop fraction at iteration ``t`` is ``rate * (1 + cos(pi t / end)) / 2`` (DiSparse's
``CosineDecay`` stepped once per iteration; RigL's cosine annealing).

**disparse_dynamic** (DiSparse ``train.py`` / ``dynamic_prune.py``):
- ERK densities (power 0.9, as ``googleAI_ERK``) over every prunable layer; the first layer
  (``backbone.conv1`` for SceneNet) dense and paid for by the others (``first_layer="dense"``).
  ``first_layer="reference"`` is the original: the first layer is ERK-solved like the others,
  left out of the random initial masks (dense), and cut to its ERK density by the first drop;
- random initial masks of exactly each layer's ERK count, seeded by the run's seed;
- at every ``interval`` iterations before ``end``, before that iteration's forward pass: each
  layer keeps the ``round(k (1 - dr))`` alive weights of largest ``|w|`` (``k`` its ERK count)
  and grows back ``k - round(k (1 - dr))`` dead positions with the largest per-task
  ``sum |dL_t/dw|`` over ``grad_chunks`` pieces of the current batch, taken with every weight at
  its stored value (masks set to one, as the original's copy does; ``L_t`` unweighted). A head
  (task-owned layer) grows its own task's choice; a shared layer grows the union of every
  task's choice, so its density after the grow step lies between ``k`` and ``k + (T - 1) *
  grown`` (DiSparse's rule). Regrown weights restart from their stored ``weight_orig`` values.
  ``grow_count="reference"`` grows what the original does instead (:func:`reference_grow_count`:
  ``int(d n - keep)``, and the whole layer where that truncates to 0, its ``IndexError``);
- at iteration ``end``: a final drop to exactly the ERK counts (the original's drop rate is 0
  there); masks stay fixed to the last iteration, and from then on pruned weights are zeroed
  after every step. The original crashes at ``end`` (it calls an undefined ``copy_v2``); this
  is what its code does up to that call, then trains on with the masks held. With ``end`` equal
  to the run's length the final drop happens after the last step, before the model is saved.

**rigl** (Evci et al. 2020): ERK (power 1.0) or ``distribution="global"`` (one density for
every layer, drop and grow ranked over the whole network), first layer dense; drop the
``round(alpha_t * k)`` smallest ``|w|`` of a layer (``alpha`` 0.3 at the start), grow as many
dead positions with the largest ``|dL/dw|`` of the run's weighted loss at the sparse network;
dropped and grown weights are zero; updates every ``interval`` (100) iterations until ``end``
(75 % of the run).
"""
from __future__ import annotations

import abc
import fnmatch
import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn as nn

from lib.models import layer_owner, prunable_layers
from lib.masks import weight_parameter
from lib.training.hooks import RunContext, TrainingHook

from . import masking
from .erk import check_density, erk_densities, keep_counts, uniform_densities
from .probe import all_reduce_sums, weight_gradients


def drop_fraction(rate: float, iteration: int, end: int) -> float:
    """``rate * (1 + cos(pi * iteration / end)) / 2``: ``rate`` at 0, 0 at ``end``."""
    if end <= 0:
        return 0.0
    return rate * (1 + math.cos(math.pi * min(iteration, end) / end)) / 2


def check_schedule(method: str, interval: int, end: int, max_iters: int) -> None:
    """One-line errors for an update schedule the run cannot hold."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"{method}: interval must be a positive number of iterations, got "
                         f"{interval!r}")
    if isinstance(end, bool) or not isinstance(end, int) or end < 0:
        raise ValueError(f"{method}: end must be an iteration >= 0, got {end!r}")
    if end > max_iters:
        raise ValueError(f"{method}: end={end} exceeds max_iters={max_iters}; pass end in "
                         f"[0, {max_iters}] (CLI: --sparse-option end=N)")


class DynamicSparse(TrainingHook):
    """Shared machinery: layers, exact per-layer counts, random initial masks, the schedule."""

    name: ClassVar[str]

    def __init__(self, sparsity: float, *, interval: int, end: int,
                 exclude: Sequence[str] = ()):
        self.sparsity = float(sparsity)
        self.density = check_density(sparsity)
        self.interval, self.end = interval, end
        self.exclude = list(exclude)
        self.counts: dict[str, int] = {}
        self.finalised = False
        self.updates = 0
        self.run: RunContext | None = None

    # ------------------------------------------------------------------ TrainingHook
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "sparsity": self.sparsity, "interval": self.interval,
                "end": self.end, "exclude": list(self.exclude), **self._options()}

    def check(self, model: nn.Module, max_iters: int) -> None:
        check_schedule(self.name, self.interval, self.end, max_iters)
        shapes = {n: tuple(weight_parameter(m).shape) for n, m in self.layers(model).items()}
        if not shapes:
            raise ValueError(f"{self.name}: the model has no prunable layers left to mask "
                             f"(exclude={self.exclude})")
        self._densities(shapes, model)   # an unreachable sparsity fails here, before any file

    def setup(self, model: nn.Module, run: RunContext) -> None:
        self.run = run
        layers = self.layers(model)
        shapes = {n: tuple(weight_parameter(m).shape) for n, m in layers.items()}
        self.counts = keep_counts(shapes, self._densities(shapes, model), self.density)
        generator = torch.Generator().manual_seed(int(run.seed))
        masking.install(model, {n: self._initial_mask(n, shapes[n], generator)
                                for n in layers})
        self._after_install(model)

    def before_forward(self, model, batch, iteration):
        if iteration < self.end and iteration % self.interval == 0:
            self.update(model, batch, iteration)
            self.updates += 1
        elif iteration >= self.end and not self.finalised:
            self.finalise(model)

    def after_step(self, model, iteration):
        if self.finalised or self.zero_dead_always:
            masking.zero_dead(self.layers(model))

    def finish(self, model):
        if not self.finalised:
            self.finalise(model)

    def summary(self) -> dict[str, Any]:
        return {**self.spec(), "updates": self.updates, "kept": sum(self.counts.values())}

    def state_dict(self):
        return {"finalised": self.finalised, "updates": self.updates}

    def load_state_dict(self, state):
        self.finalised, self.updates = bool(state["finalised"]), int(state["updates"])

    # ------------------------------------------------------------------ the method's parts
    zero_dead_always: ClassVar[bool] = True   # RigL: dead weights are zero all along

    def _options(self) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def _densities(self, shapes, model) -> dict[str, float]:
        """``{layer: density}`` for this method's distribution."""

    def _initial_mask(self, name, shape, generator) -> torch.Tensor:
        return masking.random_mask(shape, self.counts[name], generator)

    def _after_install(self, model) -> None:
        if self.zero_dead_always:
            masking.zero_dead(self.layers(model))

    def update(self, model: nn.Module, batch: Mapping[str, Any], iteration: int) -> None:
        """One drop-and-grow step before the forward pass of ``iteration``."""
        grown = self.drop(model, iteration)
        self.grow(model, batch, grown)

    def finalise(self, model: nn.Module) -> None:
        """Masks to exactly the per-layer counts (largest ``|w|``), dead weights zeroed, fixed."""
        for name, module in self.layers(model).items():
            masking.set_mask(module, masking.keep_largest(module, self.counts[name], name))
        masking.zero_dead(self.layers(model))
        self.finalised = True

    # ------------------------------------------------------------------ helpers
    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        """The prunable layers this method masks (``exclude``: fnmatch patterns left dense)."""
        return {n: m for n, m in prunable_layers(model).items()
                if not any(fnmatch.fnmatchcase(n, p) for p in self.exclude)}

    def sparse_layers(self, model: nn.Module) -> dict[str, nn.Module]:
        """The layers that keep fewer weights than they have (dense ones never change)."""
        return {n: m for n, m in self.layers(model).items()
                if self.counts[n] < weight_parameter(m).numel()}

    def first_layer(self, model: nn.Module) -> str:
        return next(iter(self.layers(model)))

    def weighted_loss(self):
        run = self.run
        return lambda preds, batch: run.weighting.total(run.criterion.per_task(preds, batch))


GROW_COUNTS = ("exact", "reference")
GROW_ALL = -1   # reference_grow_count's "the whole layer grows back"


def reference_grow_count(size: int, keep: int, density: float) -> int:
    """How many positions DiSparse's ``dynamic_disparse`` grows in a layer of ``size`` weights
    with ``keep`` alive after the drop and ERK ``density``: ``grow_ratio = sparsity - (1 -
    density)`` (the sparsity a float32 ``.item()``) clamped to [0, 1], then ``int(grow_ratio *
    size)``, one fewer than ``k - keep`` whenever ``density * size`` is not whole. A ratio of
    1, or a count of 0 from a ratio above 0 (``torch.topk(.., 0)[-1]`` raises ``IndexError``,
    which a bare ``except`` turns into an all-ones grow mask), returns :data:`GROW_ALL`: the
    layer becomes fully dense."""
    sparsity = float(torch.tensor(size - keep) / size)     # torch.sum(w == 0) / nelement
    ratio = min(max(sparsity - (1 - density), 0.0), 1.0)
    if ratio == 0:
        return 0
    count = int(ratio * size)
    return GROW_ALL if ratio == 1 or count == 0 else count


class DisparseDynamic(DynamicSparse):
    """DiSparse's dynamic sparse training (see the module docstring)."""

    name = "disparse_dynamic"
    zero_dead_always = False   # dropped weights keep their stored values until ``end``

    def __init__(self, sparsity: float, *, interval: int, end: int, prune_rate: float = 0.5,
                 power_scale: float = 0.9, first_layer: str = "dense", grad_chunks: int = 2,
                 grow_count: str = "exact", exclude: Sequence[str] = ()):
        super().__init__(sparsity, interval=interval, end=end, exclude=exclude)
        if grow_count not in GROW_COUNTS:
            raise ValueError(f"{self.name}: grow_count must be one of {list(GROW_COUNTS)}, got "
                             f"{grow_count!r}")
        self.grow_count = grow_count
        if not 0.0 <= float(prune_rate) <= 1.0:
            raise ValueError(f"{self.name}: prune_rate must be in [0, 1], got {prune_rate}")
        if first_layer not in ("dense", "reference"):
            raise ValueError(f"{self.name}: first_layer must be 'dense' or 'reference', got "
                             f"{first_layer!r}")
        if isinstance(grad_chunks, bool) or not isinstance(grad_chunks, int) or grad_chunks < 1:
            raise ValueError(f"{self.name}: grad_chunks must be a positive integer, got "
                             f"{grad_chunks!r}")
        self.prune_rate, self.power_scale = float(prune_rate), float(power_scale)
        self.first_layer_rule, self.grad_chunks = first_layer, grad_chunks
        self.grow_counts: dict[str, int] = {}

    def _options(self):
        options = {"prune_rate": self.prune_rate, "power_scale": self.power_scale,
                   "first_layer": self.first_layer_rule, "grad_chunks": self.grad_chunks}
        if self.grow_count != "exact":   # recorded when set: older runs' specs stay equal
            options["grow_count"] = self.grow_count
        return options

    def _densities(self, shapes, model):
        dense = [self.first_layer(model)] if self.first_layer_rule == "dense" else []
        return erk_densities(shapes, self.density, power_scale=self.power_scale, dense=dense)

    def _initial_mask(self, name, shape, generator):
        if self.first_layer_rule == "reference" and name == self._first:
            return torch.ones(shape, dtype=torch.bool)   # erk_init skips backbone.conv1
        return super()._initial_mask(name, shape, generator)

    def setup(self, model, run):
        self._first = self.first_layer(model)
        super().setup(model, run)
        shapes = {n: tuple(weight_parameter(m).shape) for n, m in self.layers(model).items()}
        self.densities = self._densities(shapes, model)

    def drop(self, model: nn.Module, iteration: int) -> dict[str, int]:
        """Keep ``round(k (1 - dr))`` alive weights of largest ``|w|`` per layer; returns how
        many positions each layer grows back."""
        rate = drop_fraction(self.prune_rate, iteration, self.end)
        grow = {}
        for name, module in self.sparse_layers(model).items():
            k = self.counts[name]
            keep = round(k * (1 - rate))
            masking.set_mask(module, masking.keep_largest(module, keep, name))
            grow[name] = (k - keep if self.grow_count == "exact" else
                          reference_grow_count(weight_parameter(module).numel(), keep,
                                               self.densities[name]))
        return grow

    def grow(self, model: nn.Module, batch: Mapping[str, Any], grow: Mapping[str, int]) -> None:
        """Per task, the dead positions of largest ``sum |dL_t/dw|``; shared layers the union."""
        layers = self.sparse_layers(model)
        owner = layer_owner(model)
        needed = [n for n in layers if grow.get(n, 0) != 0]
        if not needed:
            return
        criterion = self.run.criterion
        losses = {t: (lambda preds, b, t=t: criterion.task_loss(preds, b, t),
                      [n for n in needed if owner[n] in (None, t)]) for t in model.tasks}
        sums = weight_gradients(model, {n: layers[n] for n in needed}, batch, losses,
                                weights="stored", chunks=self.grad_chunks)
        all_reduce_sums(sums, self.run.dist)
        for name in needed:
            module = layers[name]
            alive = masking.mask_of(module)
            if grow[name] == GROW_ALL:      # grow_count="reference": the IndexError path
                masking.set_mask(module, torch.ones_like(alive))
                continue
            choosers = model.tasks if owner[name] is None else [owner[name]]
            grown = torch.zeros_like(alive)
            for task in choosers:
                grown |= masking.top_k(sums[task][name], ~alive, grow[name], f"{name} ({task})")
            masking.set_mask(module, alive | grown)


class RigL(DynamicSparse):
    """Plain RigL: magnitude drop, gradient grow, ERK or one global ranking."""

    name = "rigl"

    def __init__(self, sparsity: float, *, interval: int = 100, end: int,
                 drop_fraction: float = 0.3, distribution: str = "erk",
                 power_scale: float = 1.0, dense_first_layer: bool = True,
                 exclude: Sequence[str] = ()):
        super().__init__(sparsity, interval=interval, end=end, exclude=exclude)
        if not 0.0 <= float(drop_fraction) < 1.0:
            raise ValueError(f"rigl: drop_fraction must be in [0, 1), got {drop_fraction}")
        if distribution not in ("erk", "global"):
            raise ValueError(f"rigl: distribution must be 'erk' or 'global', got "
                             f"{distribution!r}")
        self.drop_rate, self.distribution = float(drop_fraction), distribution
        self.power_scale, self.dense_first_layer = float(power_scale), bool(dense_first_layer)

    def _options(self):
        return {"drop_fraction": self.drop_rate, "distribution": self.distribution,
                "power_scale": self.power_scale, "dense_first_layer": self.dense_first_layer}

    def _densities(self, shapes, model):
        dense = [self.first_layer(model)] if self.dense_first_layer else []
        if self.distribution == "global":
            return uniform_densities(shapes, self.density, dense=dense)
        return erk_densities(shapes, self.density, power_scale=self.power_scale, dense=dense)

    def drop(self, model: nn.Module, iteration: int) -> int | dict[str, int]:
        """Drop the smallest alive ``|w|`` (per layer, or globally); returns the grow counts."""
        rate = drop_fraction(self.drop_rate, iteration, self.end)
        layers = self.sparse_layers(model)
        if self.distribution == "global":
            alive = {n: masking.mask_of(m) for n, m in layers.items()}
            n_drop = round(rate * sum(int(a.sum()) for a in alive.values()))
            keep = _global_top_k({n: m.weight_orig.detach().abs() for n, m in layers.items()},
                                 alive, sum(int(a.sum()) for a in alive.values()) - n_drop)
            for name, module in layers.items():
                masking.set_mask(module, keep[name])
            masking.zero_dead(layers)
            return n_drop
        grow = {}
        for name, module in layers.items():
            alive = int(masking.mask_of(module).sum())
            n_drop = round(rate * alive)
            masking.set_mask(module, masking.keep_largest(module, alive - n_drop, name))
            grow[name] = n_drop
        masking.zero_dead(layers)
        return grow

    def grow(self, model: nn.Module, batch: Mapping[str, Any], grow) -> None:
        """Dead positions with the largest ``|dL/dw|`` of the weighted loss (grown at zero)."""
        layers = self.sparse_layers(model)
        if not layers or not grow:
            return
        sums = weight_gradients(model, layers, batch,
                                {"loss": (self.weighted_loss(), list(layers))}, weights="masked")
        all_reduce_sums(sums, self.run.dist)
        scores = sums["loss"]
        dead = {n: ~masking.mask_of(m) for n, m in layers.items()}
        if self.distribution == "global":
            chosen = _global_top_k(scores, dead, int(grow))
        else:
            chosen = {n: masking.top_k(scores[n], dead[n], grow[n], n) for n in layers}
        for name, module in layers.items():
            masking.set_mask(module, masking.mask_of(module) | chosen[name])

    def finalise(self, model):   # RigL's counts never drift: just fix the masks
        masking.zero_dead(self.layers(model))
        self.finalised = True


def _global_top_k(scores: Mapping[str, torch.Tensor], candidates: Mapping[str, torch.Tensor],
                  k: int) -> dict[str, torch.Tensor]:
    """:func:`masking.top_k` over every layer at once (ties: layer order, then position)."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten().to(torch.float64) for n in names])
    cand = torch.cat([candidates[n].flatten() for n in names])
    chosen = masking.top_k(flat, cand, k, "global ranking")
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = chosen[start:start + size].view_as(scores[n]).to(candidates[n].device)
        start += size
    return out
