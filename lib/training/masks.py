"""Pruning masks (``torch.nn.utils.prune``: ``weight_orig`` + ``weight_mask``) held fixed."""
from __future__ import annotations

import torch
import torch.nn as nn


def masked_modules(net: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of every module carrying a ``weight_mask`` buffer."""
    return {name: m for name, m in net.named_modules()
            if hasattr(m, "weight_mask") and hasattr(m, "weight_orig")}


def mask_snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every mask, to prove later that none changed."""
    return {name: m.weight_mask.detach().clone() for name, m in masked_modules(net).items()}


@torch.no_grad()
def zero_pruned(net: nn.Module) -> None:
    """Set ``weight_orig`` to exactly zero wherever the mask is 0.

    The effective weight ``weight_orig * weight_mask`` is already zero there; zeroing the
    stored value too means the weights stay zero however they are read (``weight``,
    ``weight_orig``, or after ``prune.remove``), whatever the optimiser's weight decay did.
    """
    for m in masked_modules(net).values():
        m.weight_orig.mul_(m.weight_mask)


def check_masks_unchanged(net: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raise if a mask changed, appeared or vanished since :func:`mask_snapshot`."""
    after = masked_modules(net)
    if set(after) != set(before):
        raise RuntimeError(f"the set of masked layers changed during fine-tuning: "
                           f"{sorted(set(after) ^ set(before))[:4]}")
    changed = [n for n, m in after.items() if not torch.equal(m.weight_mask.cpu(), before[n].cpu())]
    if changed:
        raise RuntimeError(f"pruning masks changed during fine-tuning in {changed[:4]}")
    leaked = [n for n, m in after.items()
              if bool((m.weight_orig.detach()[m.weight_mask == 0] != 0).any())]
    if leaked:
        raise RuntimeError(f"pruned weights are no longer zero in {leaked[:4]}")
