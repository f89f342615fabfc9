"""Masks during sparse training: read, write, count, and choose exact numbers of positions.

Masks live where the rest of the workspace keeps them (``torch.nn.utils.prune``'s
``weight_orig`` parameter + ``weight_mask`` buffer, installed by
:func:`lib.masks.install_masks`), so they are in the state dict, and therefore in every
checkpoint, and the saved models load with :func:`lib.pruning.load_pruned`. Selections are
exact: "the k largest" picks exactly k positions, ties broken by position (lower flat index
first), so a layer's density is what its schedule says and the same seed gives the same masks.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from lib.masks import install_masks, refresh_masked_weights


def install(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Install bool ``masks`` (all-ones on every other prunable layer) as prune masks."""
    install_masks(model, {n: m.bool() for n, m in masks.items()})
    refresh_masked_weights(model)   # no autograd history left in .weight (deepcopy-safe)


def mask_of(module: nn.Module) -> torch.Tensor:
    """The module's installed mask as bool."""
    return module.weight_mask.detach().bool()


@torch.no_grad()
def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Replace the module's mask in place (same buffer, so optimisers and hooks still see it)
    and recompute ``weight``."""
    module.weight_mask.copy_(mask.to(module.weight_mask.dtype))
    module.weight = module.weight_orig * module.weight_mask


@torch.no_grad()
def zero_dead(modules: Mapping[str, nn.Module]) -> None:
    """``weight_orig = 0`` wherever the mask is 0 (the stored value is forgotten)."""
    for module in modules.values():
        module.weight_orig.mul_(module.weight_mask)
        module.weight = module.weight_orig * module.weight_mask


def top_k(scores: torch.Tensor, candidates: torch.Tensor, k: int, label: str = "") -> torch.Tensor:
    """Bool mask of exactly ``k`` positions among ``candidates`` with the largest ``scores``
    (ties: lower flat index first). ``k`` larger than the candidates is an error."""
    available = int(candidates.sum())
    if not 0 <= k <= available:
        raise ValueError(f"{label}: cannot choose {k} of {available} candidate positions")
    flat = scores.detach().flatten().double()
    if not bool(torch.isfinite(flat[candidates.flatten()]).all()):
        raise FloatingPointError(f"{label}: non-finite scores (gradients or weights are nan/inf)")
    flat = torch.where(candidates.flatten(), flat, torch.full_like(flat, -torch.inf))
    chosen = torch.zeros_like(candidates, dtype=torch.bool).flatten()
    if k:
        order = torch.argsort(flat, descending=True, stable=True)
        chosen[order[:k]] = True
    return chosen.view_as(candidates)


def keep_largest(module: nn.Module, k: int, label: str = "") -> torch.Tensor:
    """The mask keeping exactly the ``k`` alive weights of largest ``|weight_orig|``."""
    alive = mask_of(module)
    return top_k(module.weight_orig.detach().abs(), alive, min(k, int(alive.sum())), label)


def counts(modules: Mapping[str, nn.Module]) -> dict[str, int]:
    """Kept weights per layer."""
    return {n: int(mask_of(m).sum()) for n, m in modules.items()}


def random_mask(shape, k: int, generator: torch.Generator) -> torch.Tensor:
    """Exactly ``k`` positions chosen uniformly at random (seeded, on the CPU)."""
    n = 1
    for s in shape:
        n *= int(s)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask.view(*shape)
