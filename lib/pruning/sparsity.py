"""Sparsity targets: the keep ratio that reaches a requested deployed sparsity, the reference's
nominal keep ratios (the deployed figures themselves: :func:`lib.masks.sparsity_report`).

All sparsities are percentages of zero weights among Conv2d/Linear ``weight`` tensors (biases
and BatchNorm are never pruned, as in the reference).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from lib.masks import Masks

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
        zeros += int(dropped.sum())
    return 100.0 * zeros / max(total, 1)


def keep_ratio_for_sparsity(masks_for: Callable[[float], Masks], sparsity: float,
                            weights: Mapping[str, torch.Tensor] | None = None,
                            tolerance: float = SPARSITY_TOLERANCE, max_steps: int = 40) -> float:
    """Bisect the keep ratio whose masks give ``sparsity`` % deployed sparsity (± ``tolerance`` pp).

    ``masks_for(keep_ratio)`` must return the masks of every prunable layer of the deployed
    network; deployed sparsity falls monotonically as the keep ratio grows (per-task top-k
    sets are nested and vote fusion preserves nesting). Raises a one-line ValueError naming
    the closest reachable sparsity when ties in the scores make the target unreachable.
    """
    target = check_sparsity(sparsity)
    zero_weights = None if weights is None else {n: w == 0 for n, w in weights.items()}
    lo, hi = 0.0, 1.0
    best: tuple[float, float] | None = None  # (|error|, keep ratio)
    achieved = {}
    for _ in range(max_steps):
        keep = hi if best is None else (lo + hi) / 2
        try:
            value = _dropped_percent(masks_for(keep), zero_weights)
        except ValueError as exc:
            if "keeps no weight" not in str(exc):
                raise
            value = 100.0
        achieved[keep] = value
        error = abs(value - target)
        if best is None or error < best[0]:
            best = (error, keep)
        if error <= tolerance / 4:
            break
        if value > target:
            lo = keep
        else:
            hi = keep
        if hi - lo < 1e-9:
            break
    if best[0] > tolerance:
        raise ValueError(f"cannot reach {target}% deployed sparsity within {tolerance} pp: "
                         f"closest is {achieved[best[1]]:.2f}% at keep ratio {best[1]:.6f} "
                         f"(ties in the scores)")
    return best[1]


def reference_keep_ratio(cfg, sparsity: float) -> float:
    """The reference's keep ratio for a nominal sparsity: ``cfg.KEEP_RATIO_TABLE`` (DiSparse's
    per-dataset tuning for 90/70/50/30 %), else ``(100 - S) / 100``."""
    value = check_sparsity(sparsity)
    table = getattr(cfg, "KEEP_RATIO_TABLE", {}) or {}
    if float(value).is_integer() and int(value) in table:
        return float(table[int(value)])
    return (100.0 - value) / 100.0
