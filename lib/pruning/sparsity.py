"""Sparsity targets: the keep ratio that reaches a requested deployed sparsity, the reference's
nominal keep ratios (the deployed figures themselves: :func:`lib.masks.sparsity_report`).

All sparsities are percentages of zero weights among Conv2d/Linear ``weight`` tensors (biases
and BatchNorm are never pruned, as in the reference).
"""
from __future__ import annotations

import abc
from typing import Callable, Iterator, Mapping

import torch

from lib.masks import Masks

from .errors import KeepsNoWeightError, UnreachableSparsityError

SPARSITY_TOLERANCE = 0.5  # percentage points a target-sparsity search may miss by


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` (percent) as float if it lies in [0, 100), else a one-line ValueError."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a percentage in [0, 100), got {sparsity!r}") from None
    if not 0.0 <= value < 100.0:
        raise ValueError(f"sparsity must be a percentage in [0, 100), got {sparsity}")
    return value


def mask_sparsity(masks: Masks, weights: Mapping[str, torch.Tensor] | None = None) -> float:
    """Percent of weights zero after installing ``masks`` (counting already-zero weights)."""
    return _dropped_percent(masks, None if weights is None else
                            {n: w == 0 for n, w in weights.items()})


def _dropped_percent(masks: Masks, zero_weights: Mapping[str, torch.Tensor] | None) -> float:
    total = zeros = 0
    for name, mask in masks.items():
        dropped = ~mask.bool()
        if zero_weights is not None:
            dropped = dropped | zero_weights[name]
        total += mask.numel()
        zeros += int(torch.count_nonzero(dropped))
    return 100.0 * zeros / max(total, 1)


class SparsityCurve(abc.ABC):
    """Deployed sparsity (percent) as a function of the keep ratio, for the target search.

    ``at(keep)`` must not increase with ``keep`` and may raise KeepsNoWeightError (counted as
    100 %). ``intervals(keep)`` may yield cheaper intervals holding ``at(keep)``, each tighter
    than the last, the last one the value itself; the search stops asking as soon as one
    decides its step. After each step the search calls ``narrow(lo, hi)``: it will mostly ask
    inside [lo, hi] from now on, and one of them was its last question; a curve may use that to
    look at fewer weights.
    """

    @abc.abstractmethod
    def at(self, keep: float) -> float:
        """Deployed sparsity in percent at keep ratio ``keep``."""

    def intervals(self, keep: float) -> Iterator[tuple[float, float]]:
        """Intervals holding ``at(keep)``, tightening to the value (by default just that)."""
        value = self.at(keep)
        yield value, value

    def narrow(self, lo: float, hi: float) -> None:
        """The search will mostly ask inside [lo, hi] from now on."""

    def restart(self) -> None:
        """A new search begins: forget what earlier ``narrow`` calls said."""


class MaskSparsityCurve(SparsityCurve):
    """The curve of any ``masks_for(keep)`` (masks of every prunable layer of the deployed
    network), counted on the masks themselves with ``weights``' zeros: O(n) per step."""

    def __init__(self, masks_for: Callable[[float], Masks],
                 weights: Mapping[str, torch.Tensor] | None = None):
        self.masks_for = masks_for
        self.zero_weights = None if weights is None else {n: w == 0 for n, w in weights.items()}

    def at(self, keep: float) -> float:
        return _dropped_percent(self.masks_for(keep), self.zero_weights)


class RememberedCurve(SparsityCurve):
    """``curve`` remembering every value and the tightest interval it gave, by keep ratio, so a
    later search on it (another target on the same plan: the explorer's slider) counts only
    the points it has not seen. The values are ``curve``'s, so every search's answer is the one
    it gives on ``curve`` itself. ``evaluations``: points counted on ``curve`` so far."""

    def __init__(self, curve: SparsityCurve):
        self.curve = curve
        self.values: dict[float, float | KeepsNoWeightError] = {}
        self.bounds: dict[float, tuple[float, float]] = {}
        self.evaluations = 0

    def at(self, keep: float) -> float:
        if keep not in self.values:
            self.evaluations += 1
            try:
                self.values[keep] = self.curve.at(keep)
            except KeepsNoWeightError as exc:
                self.values[keep] = exc
        return self._known(keep)

    def intervals(self, keep: float) -> Iterator[tuple[float, float]]:
        if keep in self.values:
            value = self._known(keep)
            yield value, value
            return
        if keep in self.bounds:
            yield self.bounds[keep]
        self.evaluations += 1
        try:
            for low, high in self.curve.intervals(keep):
                if low == high:
                    self.values[keep] = low
                elif high - low < _width(self.bounds.get(keep)):
                    self.bounds[keep] = (low, high)
                yield low, high
        except KeepsNoWeightError as exc:
            self.values[keep] = exc
            raise

    def narrow(self, lo: float, hi: float) -> None:
        self.curve.narrow(lo, hi)

    def restart(self) -> None:
        self.curve.restart()

    def _known(self, keep: float) -> float:
        value = self.values[keep]
        if isinstance(value, KeepsNoWeightError):
            raise value
        return value


def _width(bounds: tuple[float, float] | None) -> float:
    return float("inf") if bounds is None else bounds[1] - bounds[0]


def _value(curve: SparsityCurve, keep: float) -> float:
    try:
        return curve.at(keep)
    except KeepsNoWeightError:
        return 100.0


def _decided(curve: SparsityCurve, keep: float, target: float, band: float
             ) -> tuple[float, float]:
    """The first of the curve's intervals at ``keep`` that is the value or lies off the band
    ``target ± band`` (the value then lies off it too)."""
    try:
        for low, high in curve.intervals(keep):
            if low == high or low > target + band or high < target - band:
                return low, high
    except KeepsNoWeightError:
        return 100.0, 100.0
    raise ValueError(f"{type(curve).__name__}.intervals({keep}) ended before the value")


def keep_ratio_for_sparsity(masks_for: Callable[[float], Masks] | SparsityCurve, sparsity: float,
                            weights: Mapping[str, torch.Tensor] | None = None,
                            tolerance: float = SPARSITY_TOLERANCE, max_steps: int = 40) -> float:
    """Bisect the keep ratio whose masks give ``sparsity`` % deployed sparsity (± ``tolerance``).

    ``masks_for(keep_ratio)`` must return the masks of every prunable layer of the deployed
    network (``weights`` gives its already-zero weights), or be a :class:`SparsityCurve` that
    counts the deployed sparsity itself (``weights`` is then its business); deployed sparsity
    falls monotonically as the keep ratio grows (per-task top-k sets are nested and vote fusion
    preserves nesting). The bisection stops within ``tolerance / 4`` and returns the keep ratio
    whose sparsity came closest (the first such). A step whose interval (``curve.intervals``)
    lies off that band goes the way its value would, so only steps near the target need the
    value itself, and the result is the one exact values at every step give. Raises a one-line
    UnreachableSparsityError naming the closest reachable sparsity when ties in the scores
    make the target unreachable.
    """
    target = check_sparsity(sparsity)
    curve = (masks_for if isinstance(masks_for, SparsityCurve)
             else MaskSparsityCurve(masks_for, weights))
    band = tolerance / 4
    lo, hi = 0.0, 1.0
    steps: list[list[float]] = []  # [keep, low, high]: the sparsity at keep lies in [low, high]
    for _ in range(max_steps):
        keep = hi if not steps else (lo + hi) / 2
        low, high = _decided(curve, keep, target, band)
        steps.append([keep, low, high])
        if low == high and abs(low - target) <= band:
            break
        if low > target:
            lo = keep
        else:
            hi = keep
        if hi - lo < 1e-9:
            break
        curve.narrow(lo, hi)
    best = _closest(steps, target, curve)
    if abs(steps[best][1] - target) > tolerance:
        keep, achieved = steps[best][0], steps[best][1]
        raise UnreachableSparsityError(
            f"cannot reach {target}% deployed sparsity within {tolerance} pp: closest is "
            f"{achieved:.2f}% at keep ratio {keep:.6f} (ties in the scores)",
            closest=achieved, keep_ratio=keep)
    return steps[best][0]


def _closest(steps: list[list[float]], target: float, curve: SparsityCurve) -> int:
    """The first step whose sparsity is closest to ``target``, evaluating exactly any step known
    only by an interval that could still hold it."""
    while True:
        exact = [(abs(low - target), i) for i, (_, low, high) in enumerate(steps) if low == high]
        best_error, best = min(exact, default=(float("inf"), len(steps)))
        for i, (keep, low, high) in enumerate(steps):
            closest = max(0.0, low - target, target - high)
            if low != high and (closest < best_error or (closest == best_error and i < best)):
                steps[i][1:] = [_value(curve, keep)] * 2
                break
        else:
            return best


def reference_keep_ratio(cfg, sparsity: float) -> float:
    """The reference's keep ratio for a nominal sparsity: ``cfg.KEEP_RATIO_TABLE`` (DiSparse's
    per-dataset tuning for 90/70/50/30 %), else ``(100 - S) / 100``."""
    value = check_sparsity(sparsity)
    table = getattr(cfg, "KEEP_RATIO_TABLE", {}) or {}
    if float(value).is_integer() and int(value) in table:
        return float(table[int(value)])
    return (100.0 - value) / 100.0
