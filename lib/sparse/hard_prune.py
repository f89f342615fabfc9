"""One-shot per-layer hard pruning at a fixed ratio (the min-max code's ``hard_prune``).

``irregular``: a layer keeps its ``n - round(ratio * n)`` weights of largest ``|w|``;
``filter``: it keeps its ``R - round(ratio * R)`` output rows (filters) of largest L2 norm,
whole. Every layer keeps at least one weight (one filter). Counts are exact (ties broken by
position), where the original thresholds at ``np.percentile`` and so may keep one more or
fewer; the ratio a layer reaches is therefore exactly ``round(ratio * n) / n``.
``counts="percentile"`` keeps the original's rule instead: ``irregular`` keeps the weights with
``|w| >= np.percentile(|w|, 100 * ratio)``, ``filter`` the rows with norm ``> percentile``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from lib.masks import effective_weight

from . import masking

KINDS = ("irregular", "filter")
COUNTS = ("exact", "percentile")


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


def check_counts(counts: str) -> str:
    if counts not in COUNTS:
        raise ValueError(f"counts must be one of {list(COUNTS)}, got {counts!r}")
    return counts


def kept(size: int, ratio: float) -> int:
    """How many of ``size`` weights (or filters) survive pruning at ``ratio``."""
    return max(1, size - round(ratio * size))


def hard_prune_mask(weight: torch.Tensor, ratio: float, kind: str = "irregular",
                    candidates: torch.Tensor | None = None, counts: str = "exact"
                    ) -> torch.Tensor:
    """The bool mask of ``weight`` after pruning at ``ratio`` (see the module docstring);
    ``candidates`` (default: every position) limits which weights may be kept."""
    check_kind(kind)
    weight = weight.detach()
    if candidates is None:
        candidates = torch.ones_like(weight, dtype=torch.bool)
    if check_counts(counts) == "percentile":
        return _percentile_mask(weight, ratio, kind) & candidates
    if kind == "irregular":
        return masking.top_k(weight.abs(), candidates, min(kept(weight.numel(), ratio),
                                                           int(candidates.sum())))
    rows = weight.flatten(1) if weight.dim() > 1 else weight.view(-1, 1)
    norms = rows.mul(candidates.view_as(rows)).norm(dim=1)
    keep_rows = masking.top_k(norms, torch.ones_like(norms, dtype=torch.bool),
                              kept(rows.shape[0], ratio))
    return (keep_rows.view(-1, 1) & candidates.view_as(rows)).view_as(weight)


def _percentile_mask(weight: torch.Tensor, ratio: float, kind: str) -> torch.Tensor:
    """The min-max code's ``weight_pruning``: a threshold at ``np.percentile`` (linear
    interpolation), ``|w| < t`` zeroed (``irregular``) or rows of norm ``<= t`` (``filter``);
    what is zero already stays zero (its mask is ``weight != 0``)."""
    values = weight.float().cpu().numpy()          # the original's float32 numpy arrays
    if kind == "irregular":
        keep = np.abs(values) >= np.percentile(np.abs(values), 100 * ratio)
    else:
        rows = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(-1, 1)
        norms = np.linalg.norm(rows, 2, axis=1)
        keep = np.broadcast_to((norms > np.percentile(norms, 100 * ratio))[:, None],
                               rows.shape).reshape(values.shape)
    return torch.from_numpy(keep & (values != 0)).to(weight.device)


def hard_prune_masks(layers: Mapping[str, nn.Module], ratio: float,
                     kind: str = "irregular", counts: str = "exact"
                     ) -> dict[str, torch.Tensor]:
    """:func:`hard_prune_mask` of every layer's effective weight (masks already installed are
    respected: a pruned weight is never revived)."""
    ratio = check_ratio(ratio)
    out = {}
    for name, module in layers.items():
        alive = masking.mask_of(module) if hasattr(module, "weight_mask") else None
        out[name] = hard_prune_mask(effective_weight(module), ratio, kind, alive, counts)
    return out
