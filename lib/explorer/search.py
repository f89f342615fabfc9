"""The keep ratio that gives a target deployed sparsity, found from few exact evaluations.

Deployed sparsity falls monotonically as the keep ratio grows (per-task top-k sets are nested
and vote fusion keeps them nested), so a target is bracketed by the points already evaluated.
:class:`KeepRatioSearch` remembers every point it evaluated, so a slider that moves to a nearby
target starts from a tight bracket. Inside it, the next keep ratio is where the curve through
the points closest to the target meets it (inverse interpolation; else regula falsi),
with a bisection step whenever two steps did not halve the bracket, so nothing stalls it. A
sparsity interval a search could not enter (a jump of the curve: a plateau of tied scores) is
remembered, and a later target inside it fails at once. Each evaluation is exact (the
method's real masks, counted), so the answer meets :func:`lib.pruning.prune`'s tolerance; a
move of the slider by a point or two usually costs one evaluation.
"""
from __future__ import annotations

from typing import Callable

from lib.pruning.errors import UnreachableSparsityError
from lib.pruning.sparsity import SPARSITY_TOLERANCE, check_sparsity


class KeepRatioSearch:
    """``keep_for(target)``: a keep ratio whose deployed sparsity is within ``tolerance``
    percentage points of ``target`` (stopping early within a quarter of it, as ``prune``'s
    search does). ``sparsity_at(keep)`` must return the deployed sparsity (percent) of the
    masks at ``keep``; it is never asked below ``min_keep`` (the smallest keep ratio that keeps
    a weight of every ranking). ``known``: points already known without evaluating (keeping
    every weight, keep ratio 1.0, leaves only the weights that are zero). ``resolution``: keep
    ratios closer than this give the same masks (one weight of the largest ranking), so a
    bracket that narrow is a jump in the curve (a plateau of tied scores) no ratio crosses."""

    def __init__(self, sparsity_at: Callable[[float], float], min_keep: float,
                 resolution: float = 1e-9, tolerance: float = SPARSITY_TOLERANCE,
                 max_steps: int = 40, known: dict[float, float] | None = None):
        self._sparsity_at = sparsity_at
        self.min_keep = float(min_keep)
        self.resolution = float(resolution)
        self.tolerance = tolerance
        self.max_steps = max_steps
        self.points: dict[float, float] = dict(known or {})
        self.gaps: list[tuple[float, float]] = []  # sparsity intervals a search could not enter
        self.evaluations = 0

    def at(self, keep: float) -> float:
        """Deployed sparsity at ``keep`` (evaluated once, then remembered)."""
        keep = max(float(keep), self.min_keep)
        if keep not in self.points:
            self.points[keep] = float(self._sparsity_at(keep))
            self.evaluations += 1
        return self.points[keep]

    def keep_for(self, target: float) -> float:
        target = check_sparsity(target)
        close = self.tolerance / 4
        for low, high in self.gaps:
            if low + self.tolerance < target < high - self.tolerance:
                raise self._unreachable(target)
        self.at(1.0)
        widths: list[float] = []  # the bracket's width before each step
        for _ in range(self.max_steps):
            found = self._closest(target)
            if abs(self.points[found] - target) <= close:
                return found
            lo, hi = self._bracket(target)
            if lo is None or hi - lo < self.resolution:  # lo None: keeping all is too sparse
                break
            widths.append(hi - lo)
            if len(widths) >= 3 and widths[-1] > 0.5 * widths[-3]:
                keep = (lo + hi) / 2  # two steps did not halve the bracket: bisect once
            else:
                keep = self._guess(target, lo, hi)
            self.at(keep)
        found = self._closest(target)
        if abs(self.points[found] - target) > self.tolerance:
            lo, hi = self._bracket(target)
            if lo is not None:
                self.gaps.append((self.points[hi], 100.0 if lo == 0.0 else self.points[lo]))
            raise self._unreachable(target)
        return found

    def _unreachable(self, target: float) -> UnreachableSparsityError:
        found = self._closest(target)
        return UnreachableSparsityError(
            f"cannot reach {target}% deployed sparsity within {self.tolerance} pp: closest is "
            f"{self.points[found]:.2f}% at keep ratio {found:.6f} (ties in the scores)",
            closest=self.points[found], keep_ratio=found)

    def _guess(self, target: float, lo: float, hi: float) -> float:
        """Where the curve through the points closest to ``target`` (three, else two: inverse
        interpolation, keep ratio as a polynomial in sparsity) meets it, if that lies inside
        the bracket; else the interpolation between the bracket's ends."""
        near = sorted(self.points, key=lambda k: abs(self.points[k] - target))[:3]
        for chosen in (near, near[:2]):
            values = [self.points[k] for k in chosen]
            if len(chosen) < 2 or len(set(values)) < len(values):
                continue
            keep = 0.0
            for i, (k_i, s_i) in enumerate(zip(chosen, values)):
                weight = 1.0
                for j, s_j in enumerate(values):
                    if j != i:
                        weight *= (target - s_j) / (s_i - s_j)
                keep += k_i * weight
            if lo < keep < hi:
                return keep
        lo_s = 100.0 if lo == 0.0 else self.points[lo]
        keep = lo + (hi - lo) * (lo_s - target) / max(lo_s - self.points[hi], 1e-12)
        return min(max(keep, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))

    def _closest(self, target: float) -> float:
        return min(self.points, key=lambda k: (abs(self.points[k] - target), -k))

    def _bracket(self, target: float) -> tuple[float | None, float]:
        """The largest keep ratio still sparser than ``target`` (0.0: keep nothing, 100 %) and
        the smallest one at or below it; ``(None, 1.0)`` when even keeping all is sparser."""
        below = [k for k, s in self.points.items() if s <= target]
        if not below:
            return None, 1.0
        hi = min(below)
        above = [k for k, s in self.points.items() if s > target and k < hi]
        return (max(above) if above else 0.0), hi
