"""Masks: installing them as ``torch.nn.utils.prune`` hooks, reading them back, removing them.

(Turning scores into masks is :mod:`lib.pruning.ranking`'s job.)

A mask dict is ``{qualified module name: bool tensor shaped like the module's weight}``, True =
keep. Installed masks live where the reference keeps them (``weight_orig`` parameter +
``weight_mask`` buffer), so checkpoints load in the original code.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from lib.models import SceneNet, prunable_modules

Masks = dict[str, torch.Tensor]


def check_keep_ratio(keep_ratio: float) -> float:
    """Return ``keep_ratio`` as float if it lies in (0, 1], else raise a one-line ValueError."""
    try:
        value = float(keep_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return value


def has_masks(net: nn.Module) -> bool:
    """True when any module carries an installed ``weight_mask``."""
    return any(hasattr(m, "weight_mask") for m in net.modules())


def weight_parameter(module: nn.Module) -> nn.Parameter:
    """The trainable weight tensor: ``weight_orig`` when a mask is installed, else ``weight``."""
    return module.weight_orig if hasattr(module, "weight_orig") else module.weight


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses (``weight_orig * weight_mask`` when masked)."""
    if hasattr(module, "weight_orig"):
        return module.weight_orig * module.weight_mask
    return module.weight


def install_masks(net: SceneNet, masks: Mapping[str, torch.Tensor], fill: bool = True) -> SceneNet:
    """Install ``masks`` on ``net`` in place as ``torch.nn.utils.prune`` masks; returns ``net``.

    A layer that already has a mask gets it replaced. With ``fill`` (default), every other
    prunable layer gets an all-ones mask if it has none, so the state dict has the same
    ``weight_orig``/``weight_mask`` keys everywhere, as the reference's checkpoints do.
    """
    modules = prunable_modules(net)
    unknown = sorted(set(masks) - set(modules))
    if unknown:
        raise KeyError(f"mask for unknown layer(s) {unknown[:3]}{'...' if len(unknown) > 3 else ''}"
                       f"; this network's prunable layers are e.g. {list(modules)[:3]}")
    for name, module in modules.items():
        if name in masks:
            mask = masks[name]
            if tuple(mask.shape) != tuple(weight_parameter(module).shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, expected "
                                 f"{tuple(weight_parameter(module).shape)}")
        elif fill and not hasattr(module, "weight_mask"):
            mask = torch.ones_like(module.weight, dtype=torch.bool)
        else:
            continue
        weight = weight_parameter(module)
        value = mask.to(device=weight.device, dtype=weight.dtype)
        if hasattr(module, "weight_mask"):
            module.weight_mask.data.copy_(value)
            module.weight = module.weight_orig * module.weight_mask
        else:
            torch_prune.custom_from_mask(module, "weight", value)
    return net


def masks_of(net: SceneNet) -> Masks:
    """``{module name: bool mask}`` of every prunable layer that carries a mask."""
    return {name: m.weight_mask.detach().bool() for name, m in prunable_modules(net).items()
            if hasattr(m, "weight_mask")}


def remove_masks(net: SceneNet) -> SceneNet:
    """Make the masks permanent (``weight = weight_orig * weight_mask``) and drop the hooks."""
    for module in prunable_modules(net).values():
        if hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return net


def ones_masks(net: SceneNet) -> Masks:
    """All-keep masks for every prunable layer."""
    return {n: torch.ones_like(weight_parameter(m), dtype=torch.bool)
            for n, m in prunable_modules(net).items()}


@torch.no_grad()
def refresh_masked_weights(net: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` on every masked module now.

    ``torch.nn.utils.prune`` recomputes ``weight`` only in a forward pre-hook, so after a
    ``load_state_dict`` or an optimiser step it is stale until the next forward.
    """
    for m in net.modules():
        if hasattr(m, "weight_orig") and hasattr(m, "weight_mask"):
            m.weight = m.weight_orig * m.weight_mask
