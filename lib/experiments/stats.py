"""Statistics that decide a method comparison: spread over seeds and paired intervals.

    summary = summarize([1.0, 2.0, 4.0])                 # n, mean, std (n - 1)
    c = compare_paired({0: 3.1, 1: 2.0}, {0: 1.0, 1: 1.5}, "cut", "snip")
    c.low, c.high, c.decided, c.verdict()

Every seed trains its own base model and prunes it with every method, so two methods are
compared *paired by seed*: the differences ``a[seed] - b[seed]`` remove the base model's share
of the spread. The interval is Student's t on those differences (two-sided, ``n - 1`` degrees
of freedom): ``mean ± t_{1-α/2, n-1} · std / √n``. A comparison is *decided* when the interval
excludes 0; its sign says which method is ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (``n - 1``; 0 for one value) of ``n`` values."""
    n: int
    mean: float
    std: float

    def format(self, digits: int = 1) -> str:
        return f"{self.mean:+.{digits}f} ± {self.std:.{digits}f}"


def _finite(values: Sequence[float], what: str) -> list[float]:
    values = [float(v) for v in values]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite value(s) {bad}; every seed needs a finite number")
    return values


def summarize(values: Sequence[float], what: str = "values") -> Summary:
    """:class:`Summary` of ``values`` (at least one, all finite)."""
    values = _finite(values, what)
    if not values:
        raise ValueError(f"{what}: no values to summarise")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(n, mean, std)


def t_interval(values: Sequence[float], confidence: float = 0.95,
               what: str = "values") -> tuple[float, float]:
    """Two-sided Student t interval for the mean of ``values`` (at least two, all finite)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s = summarize(values, what)
    if s.n < 2:
        raise ValueError(f"{what}: a confidence interval needs at least 2 values, got {s.n}")
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, s.n - 1)) * s.std / math.sqrt(s.n)
    return s.mean - half, s.mean + half


@dataclass(frozen=True)
class PairedComparison:
    """``method`` minus ``baseline``, paired by seed: mean, std and t interval of the
    differences over the ``seeds`` both have."""
    method: str
    baseline: str
    seeds: tuple[int, ...]
    mean: float
    std: float
    low: float
    high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def decided(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0

    @property
    def winner(self) -> str | None:
        """The method ahead when decided, else None."""
        if not self.decided:
            return None
        return self.method if self.low > 0 else self.baseline

    def verdict(self) -> str:
        """One line: the difference, its interval, and whether (and which way) it is decided."""
        head = (f"{self.method} - {self.baseline}: {self.mean:+.2f} "
                f"[{self.low:+.2f}, {self.high:+.2f}] ({self.confidence:.0%} CI, n={self.n})")
        if self.decided:
            return f"{head}: decided, {self.winner} ahead"
        return f"{head}: not decided"


def compare_paired(method_values: Mapping[int, float], baseline_values: Mapping[int, float],
                   method: str, baseline: str, confidence: float = 0.95) -> PairedComparison:
    """Compare two methods on the seeds both have (at least two)."""
    seeds = tuple(sorted(set(method_values) & set(baseline_values)))
    what = f"{method} - {baseline}"
    if len(seeds) < 2:
        raise ValueError(f"{what}: a paired comparison needs at least 2 common seeds, "
                         f"got {list(seeds)}")
    diffs = [float(method_values[s]) - float(baseline_values[s]) for s in seeds]
    summary = summarize(diffs, what)
    low, high = t_interval(diffs, confidence, what)
    return PairedComparison(method, baseline, seeds, summary.mean, summary.std, low, high,
                            confidence)
