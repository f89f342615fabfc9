"""One-shot per-layer hard pruning at a fixed ratio (the min-max code's ``hard_prune``).

``irregular``: a layer keeps its ``n - round(ratio * n)`` weights of largest ``|w|``;
``filter``: it keeps its ``R - round(ratio * R)`` output rows (filters) of largest L2 norm,
whole. Every layer keeps at least one weight (one filter). Counts are exact (ties broken by
position), where the original thresholds at ``np.percentile`` and so may keep one more or
fewer; the ratio a layer reaches is therefore exactly ``round(ratio * n) / n``.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from lib.masks import effective_weight

from . import masking

KINDS = ("irregular", "filter")


def check_ratio(ratio: float, option: str = "prune_ratio") -> float:
    """``ratio`` as float if in (0, 1), else a one-line ValueError naming ``option``."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"{option} must be a number in (0, 1), got {ratio!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"{option} must be in (0, 1), got {value}")
    return value


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"sparsity type must be one of {list(KINDS)}, got {kind!r}")
    return kind


def kept(size: int, ratio: float) -> int:
    """How many of ``size`` weights (or filters) survive pruning at ``ratio``."""
    return max(1, size - round(ratio * size))


def hard_prune_mask(weight: torch.Tensor, ratio: float, kind: str = "irregular",
                    candidates: torch.Tensor | None = None) -> torch.Tensor:
    """The bool mask of ``weight`` after pruning at ``ratio`` (see the module docstring);
    ``candidates`` (default: every position) limits which weights may be kept."""
    check_kind(kind)
    weight = weight.detach()
    if candidates is None:
        candidates = torch.ones_like(weight, dtype=torch.bool)
    if kind == "irregular":
        return masking.top_k(weight.abs(), candidates, min(kept(weight.numel(), ratio),
                                                           int(candidates.sum())))
    rows = weight.flatten(1) if weight.dim() > 1 else weight.view(-1, 1)
    norms = rows.mul(candidates.view_as(rows)).norm(dim=1)
    keep_rows = masking.top_k(norms, torch.ones_like(norms, dtype=torch.bool),
                              kept(rows.shape[0], ratio))
    return (keep_rows.view(-1, 1) & candidates.view_as(rows)).view_as(weight)


def hard_prune_masks(layers: Mapping[str, nn.Module], ratio: float,
                     kind: str = "irregular") -> dict[str, torch.Tensor]:
    """:func:`hard_prune_mask` of every layer's effective weight (masks already installed are
    respected: a pruned weight is never revived)."""
    ratio = check_ratio(ratio)
    out = {}
    for name, module in layers.items():
        alive = masking.mask_of(module) if hasattr(module, "weight_mask") else None
        out[name] = hard_prune_mask(effective_weight(module), ratio, kind, alive)
    return out
