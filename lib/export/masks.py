"""Reading ``torch.nn.utils.prune`` masks off a network, and making them permanent on a copy.

A masked network holds ``<name>_orig`` parameters, ``<name>_mask`` buffers and a forward
pre-hook per pruned tensor. Export works on the *effective* tensors (``orig * mask``), keyed by
the plain state-dict key (``backbone.conv1.weight``), so a masked and an unmasked network
describe the same function with the same keys.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from lib.models import SceneNet


def _pruned_tensor_names(module: nn.Module) -> list[str]:
    """Names of the tensors of ``module`` that carry a prune hook (usually ``["weight"]``)."""
    names = []
    for hook in module._forward_pre_hooks.values():
        methods = hook._pruning_methods if isinstance(hook, prune.PruningContainer) else [hook]
        for method in methods:
            if isinstance(method, prune.BasePruningMethod) and method._tensor_name not in names:
                names.append(method._tensor_name)
    return names


def has_prune_hooks(net: nn.Module) -> bool:
    """True when any module of ``net`` carries a ``torch.nn.utils.prune`` hook."""
    return any(_pruned_tensor_names(m) for m in net.modules())


def prune_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{state-dict key of the effective tensor: bool mask}`` for every pruned tensor."""
    masks = {}
    for module_name, module in net.named_modules():
        for tensor_name in _pruned_tensor_names(module):
            key = f"{module_name}.{tensor_name}" if module_name else tensor_name
            masks[key] = getattr(module, f"{tensor_name}_mask").detach().bool()
    return masks


def effective_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain network ``net`` computes: ``orig * mask`` under plain keys."""
    state = {}
    pruned = {(name, t) for name, m in net.named_modules() for t in _pruned_tensor_names(m)}
    raw = net.state_dict()
    for module_name, tensor_name in pruned:
        prefix = f"{module_name}." if module_name else ""
        module = net.get_submodule(module_name)
        raw.pop(f"{prefix}{tensor_name}_orig")
        raw.pop(f"{prefix}{tensor_name}_mask")
        # The attribute the hook maintains; recompute it so it is current even before a forward.
        orig = getattr(module, f"{tensor_name}_orig").detach()
        mask = getattr(module, f"{tensor_name}_mask").detach()
        state[f"{prefix}{tensor_name}"] = orig * mask
    state.update({k: v.detach() for k, v in raw.items()})
    return state


def deepcopy_network(net: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works after a masked forward with autograd on.

    A prune hook stores ``orig * mask`` as a plain attribute; after a forward outside
    ``no_grad`` it is a non-leaf tensor, which ``deepcopy`` refuses. It is recomputed by the
    next forward, so a detached copy stands in for it.
    """
    memo = {}
    for module in net.modules():
        for tensor_name in _pruned_tensor_names(module):
            value = module.__dict__.get(tensor_name)
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(net, memo)


def plain_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with every prune hook removed and its mask made permanent.

    ``net`` itself is left untouched (its hooks keep working for fine-tuning).
    """
    plain = deepcopy_network(net)
    for module in plain.modules():
        for tensor_name in _pruned_tensor_names(module):
            prune.remove(module, tensor_name)
    return plain


def install_state_masks(net: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Install ``{plain key: mask}`` on ``net`` in place with ``prune.custom_from_mask``."""
    for key, mask in masks.items():
        module_name, _, tensor_name = key.rpartition(".")
        module = net.get_submodule(module_name)
        prune.custom_from_mask(module, tensor_name, mask.to(getattr(module, tensor_name).device))
    return net


def net_from_pruned_state(state: Mapping[str, torch.Tensor], architecture: Mapping,
                          source: str = "state dict") -> SceneNet:
    """Rebuild a (possibly masked) SceneNet from a state dict saved with prune hooks installed.

    Keys ``X.weight_orig`` / ``X.weight_mask`` become a prune hook on ``X``; a state dict with no
    such keys gives a plain network. Errors name ``source`` and the offending keys.
    """
    from .artifact import scene_net_from_architecture  # shared argument validation
    net = scene_net_from_architecture(architecture, source)
    masks = {}
    for key, value in state.items():
        if key.endswith("_mask"):
            plain_key = key[: -len("_mask")]
            if f"{plain_key}_orig" not in state:
                raise ValueError(f"{source}: mask {key!r} has no matching {plain_key}_orig")
            masks[plain_key] = value.bool()
    install_state_masks(net, masks)
    missing, unexpected = net.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"{source} does not match architecture {dict(architecture)}: missing "
                         f"keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return net
