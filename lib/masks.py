"""Pruning masks on a network: install, inspect, hold, make permanent. The one home of masks.

A mask dict is ``{layer name: bool tensor shaped like the layer's weight}``, True = keep. An
installed mask is a ``torch.nn.utils.prune`` hook, stored where the reference keeps it
(``weight_orig`` parameter + ``weight_mask`` buffer), so checkpoints load in the original code.
Layers are the Conv2d/Linear layers of :func:`lib.models.prunable_layers` for a
:class:`~lib.models.MultiTaskModel`, or every Conv2d/Linear module of any other module.

    install_masks / remove_masks / plain_copy      put masks on, make them permanent
    masks_of / prune_masks / masked_modules       read them back (by layer / by tensor key)
    mask_snapshot / zero_pruned / check_masks_unchanged   hold them fixed while training
    effective_state_dict / refresh_masked_weights the weights the forward really uses
    sparsity_report / layer_weights               how many weights are zero, per layer and part
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from lib.models.contract import (PRUNABLE_TYPES, MultiTaskModel, copy_network, prunable_layers,
                                 shared_layers, task_layers)

Masks = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- inspect
def layers_of(net: nn.Module) -> dict[str, nn.Module]:
    """The maskable layers: :func:`prunable_layers` of a MultiTaskModel, else every
    Conv2d/Linear module in ``named_modules`` order."""
    if isinstance(net, MultiTaskModel):
        return prunable_layers(net)
    return {n: m for n, m in net.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def weight_parameter(module: nn.Module) -> nn.Parameter:
    """The trainable weight tensor: ``weight_orig`` when a mask is installed, else ``weight``."""
    return module.weight_orig if hasattr(module, "weight_orig") else module.weight


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses (``weight_orig * weight_mask`` when masked)."""
    if hasattr(module, "weight_orig"):
        return module.weight_orig * module.weight_mask
    return module.weight


def _hooked_tensors(module: nn.Module) -> list[str]:
    """Names of the tensors of ``module`` that carry a prune hook (usually ``["weight"]``)."""
    names = []
    for hook in module._forward_pre_hooks.values():
        methods = hook._pruning_methods if isinstance(hook, torch_prune.PruningContainer) else [hook]
        for method in methods:
            if isinstance(method, torch_prune.BasePruningMethod) and method._tensor_name not in names:
                names.append(method._tensor_name)
    return names


def has_masks(net: nn.Module) -> bool:
    """True when any module of ``net`` carries a ``torch.nn.utils.prune`` hook."""
    return any(_hooked_tensors(m) for m in net.modules())


def masked_modules(net: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of every module carrying a ``weight_orig``/``weight_mask`` pair."""
    return {name: m for name, m in net.named_modules()
            if hasattr(m, "weight_mask") and hasattr(m, "weight_orig")}


def masks_of(net: nn.Module) -> Masks:
    """``{layer name: bool mask}`` of every layer that carries a weight mask."""
    return {name: m.weight_mask.detach().bool() for name, m in layers_of(net).items()
            if hasattr(m, "weight_mask")}


def prune_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{state-dict key of the effective tensor: bool mask}`` for every hooked tensor."""
    masks = {}
    for module_name, module in net.named_modules():
        for tensor_name in _hooked_tensors(module):
            key = f"{module_name}.{tensor_name}" if module_name else tensor_name
            masks[key] = getattr(module, f"{tensor_name}_mask").detach().bool()
    return masks


def same_masks(a: nn.Module, b: nn.Module) -> bool:
    """True when two networks carry masks on the same layers and every mask is equal."""
    ma, mb = masks_of(a), masks_of(b)
    return ma.keys() == mb.keys() and all(torch.equal(ma[n].cpu(), mb[n].cpu()) for n in ma)


def ones_masks(net: nn.Module) -> Masks:
    """All-keep masks for every maskable layer."""
    return {n: torch.ones_like(weight_parameter(m), dtype=torch.bool)
            for n, m in layers_of(net).items()}


# ----------------------------------------------------------------------------- install / remove
def install_masks(net: nn.Module, masks: Mapping[str, torch.Tensor], fill: bool = True) -> nn.Module:
    """Install ``masks`` on ``net`` in place as ``torch.nn.utils.prune`` masks; returns ``net``.

    A layer that already has a mask gets it replaced. With ``fill`` (default), every other
    maskable layer gets an all-ones mask if it has none, so the state dict has the same
    ``weight_orig``/``weight_mask`` keys everywhere, as the reference's checkpoints do.
    """
    modules = layers_of(net)
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


def install_masks_for_state(net: nn.Module, state_keys) -> nn.Module:
    """Give ``net`` an all-ones prune hook on every tensor ``T`` of a module ``M`` for which
    ``state_keys`` hold ``M.T_orig`` and ``M.T_mask``, so that a masked state dict loads."""
    keys = set(state_keys)
    for key in keys:
        if not key.endswith("_mask"):
            continue
        plain = key[: -len("_mask")]
        if f"{plain}_orig" not in keys:
            raise ValueError(f"mask {key!r} has no matching {plain}_orig")
        module_name, _, tensor_name = plain.rpartition(".")
        try:
            module = net.get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"the state dict masks layer {module_name!r}, which this network "
                             f"lacks") from None
        if tensor_name not in _hooked_tensors(module):
            torch_prune.identity(module, tensor_name)
    return net


def remove_masks(net: nn.Module) -> nn.Module:
    """Make every mask permanent (``weight = weight_orig * weight_mask``) in place, hooks gone."""
    for module in net.modules():
        for tensor_name in _hooked_tensors(module):
            torch_prune.remove(module, tensor_name)
    return net


def plain_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with every mask made permanent; ``net`` keeps its hooks."""
    return remove_masks(copy_network(net))


@torch.no_grad()
def refresh_masked_weights(net: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` on every masked module now.

    ``torch.nn.utils.prune`` recomputes ``weight`` only in a forward pre-hook, so after a
    ``load_state_dict`` or an optimiser step it is stale until the next forward.
    """
    for m in masked_modules(net).values():
        m.weight = m.weight_orig * m.weight_mask


def effective_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain network ``net`` computes: ``orig * mask`` under the plain
    key, in ``net.state_dict()`` order (each ``orig``/``mask`` pair stands where its ``orig``
    stood)."""
    hooked = {f"{name}.{t}" if name else t: module for name, module in net.named_modules()
              for t in _hooked_tensors(module)}
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("_orig") and key[: -len("_orig")] in hooked:
            plain = key[: -len("_orig")]
            mask = getattr(hooked[plain], f"{plain.rpartition('.')[2]}_mask")
            state[plain] = value.detach() * mask.detach()
        elif not (key.endswith("_mask") and key[: -len("_mask")] in hooked):
            state[key] = value.detach()
    return state


# ----------------------------------------------------------------------------- hold fixed
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


def check_masks_unchanged(net: nn.Module, before: Mapping[str, torch.Tensor]) -> None:
    """Raise a RuntimeError if a mask changed, appeared or vanished since :func:`mask_snapshot`,
    or if a pruned weight is no longer zero."""
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


# ----------------------------------------------------------------------------- sparsity
def layer_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: effective weight}`` of every maskable layer (masks applied)."""
    return {n: effective_weight(m).detach() for n, m in layers_of(net).items()}


def count_zeros(weights: Mapping[str, torch.Tensor]) -> dict:
    """``{"total", "zeros", "sparsity"}`` (percent zeros) over the given weight tensors."""
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return {"total": total, "zeros": zeros, "sparsity": 100.0 * zeros / max(total, 1)}


def sparsity_report(net: MultiTaskModel, full_net: MultiTaskModel | None = None) -> dict:
    """Deployed sparsity of ``net`` per layer, per part and overall (percent of zero weights).

    Returns ``{"layers": {name: {total, zeros, sparsity}}, "backbone": {...} (the shared
    layers), "heads": {task: {...}} (each task's own layers), "deployed": {...}}``; with
    ``full_net`` (the dense network ``net`` was cut from) also ``"reference"``: the original
    code's figure over every Conv2d/Linear weight of ``full_net``, counting the removed tasks'
    layers as they are in ``full_net`` and weights ``net`` no longer has (channels removed by
    structured pruning) as zeros.
    """
    weights = layer_weights(net)
    report = {
        "layers": {n: count_zeros({n: w}) for n, w in weights.items()},
        "backbone": count_zeros({n: weights[n] for n in shared_layers(net)}),
        "heads": {t: count_zeros({n: weights[n] for n in task_layers(net, t)}) for t in net.tasks},
        "deployed": count_zeros(weights),
    }
    if full_net is not None:
        missing = [t for t in net.tasks if t not in full_net.tasks]
        if missing:
            raise ValueError(f"full_net has no task(s) {missing}; it is not the network with "
                             f"tasks {net.tasks} was cut from")
        removed = {n: effective_weight(m).detach() for t in full_net.tasks if t not in net.tasks
                   for n, m in task_layers(full_net, t).items()}
        total = count_zeros(layer_weights(full_net))["total"]
        kept = count_zeros(weights)
        dropped = count_zeros(removed)
        nonzero = (kept["total"] - kept["zeros"]) + (dropped["total"] - dropped["zeros"])
        report["reference"] = {"total": total, "zeros": total - nonzero,
                               "sparsity": 100.0 * (total - nonzero) / max(total, 1)}
    return report
