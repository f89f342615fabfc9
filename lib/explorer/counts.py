"""What a mask dict means for one network, counted from the masks alone (nothing installed).

:class:`MaskCounter` is built once per scored network; for any masks it gives the figures the
installed masks would give: :func:`lib.masks.sparsity_report`'s ``layers`` / ``backbone`` /
``heads`` / ``deployed``, :func:`lib.export.parameter_counts` and the effective MACs of
:func:`lib.export.conv_macs` (tests check all three against the real functions on the network
with the masks installed). A slider move therefore costs one sum per layer, not a copy of the
network.
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.masks import Masks, layer_weights
from lib.models import PRUNABLE_TYPES, MultiTaskModel, shared_layers, task_layers


def mac_calls(net: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, int]]:
    """``[(layer, MACs)]`` of every Conv2d/Linear call of one forward of ``input_shape``, in
    forward order: :func:`lib.export.conv_macs`'s count (same formula, same order), by call.

    Shapes come from a forward of a copy on the ``meta`` device (no arithmetic).
    """
    shadow = copy.deepcopy(net).to("meta").eval()
    calls: list[tuple[str, int]] = []

    def counter(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = ((module.in_channels // module.groups)
                              * int(np.prod(module.kernel_size)))
            else:
                per_output = module.in_features
            calls.append((name, output.numel() * per_output))
        return hook

    for name, module in shadow.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            module.register_forward_hook(counter(name))
    with torch.no_grad():
        shadow(torch.zeros(tuple(int(s) for s in input_shape), device="meta"))
    return calls


class MaskCounter:
    """Counts for masks on ``net`` (a compact, unmasked network as a pruning plan holds it).

    Weights that are already zero count as zeros wherever they are kept, as
    :func:`lib.masks.sparsity_report` counts them.
    """

    def __init__(self, net: MultiTaskModel, input_shape: Sequence[int]):
        weights = layer_weights(net)
        self.layers = list(weights)
        self.numel = {n: w.numel() for n, w in weights.items()}
        # Only layers holding exact zeros need an AND with the mask; usually there are none.
        self.zero_weights = {n: w == 0 for n, w in weights.items() if bool((w == 0).any())}
        # Masks that keep everything (keep ratio 1.0) leave exactly these zeros.
        self.zero_percent = (100.0 * sum(int(z.sum()) for z in self.zero_weights.values())
                             / max(sum(self.numel.values()), 1))
        self.shared = list(shared_layers(net))
        self.own = {t: list(task_layers(net, t)) for t in net.tasks}
        prunable_keys = {f"{n}.weight" for n in self.layers}
        params = dict(net.named_parameters())
        self.params_total = sum(p.numel() for p in params.values())
        self.other_nonzero = sum(int(torch.count_nonzero(p.detach())) for k, p in params.items()
                                 if k not in prunable_keys)
        self.mac_calls = mac_calls(net, input_shape)
        self.macs_dense = sum(macs for _, macs in self.mac_calls)
        # Conv2d/Linear modules outside the task models (none in the registered families)
        # keep their own density whatever the masks.
        modules = dict(net.named_modules())
        self.fixed_density = {
            n: float(torch.count_nonzero(modules[n].weight)) / modules[n].weight.numel()
            for n, _ in self.mac_calls if n not in self.numel}

    def kept(self, masks: Masks) -> dict[str, int]:
        """``{layer: weights kept and non-zero}``; ``masks`` must cover every prunable layer."""
        missing = [n for n in self.layers if n not in masks]
        if missing:
            raise KeyError(f"masks lack layer(s) {missing[:3]}; a counter needs every layer")
        out = {}
        for name in self.layers:
            mask = masks[name].bool()
            if name in self.zero_weights:
                mask = mask & ~self.zero_weights[name].to(mask.device)
            out[name] = int(torch.count_nonzero(mask))  # ~20x a bool tensor's sum()
        return out

    def report(self, kept: Mapping[str, int]) -> dict:
        """:func:`lib.masks.sparsity_report`'s ``layers``, ``backbone``, ``heads`` and
        ``deployed`` for the per-layer kept counts ``kept``."""
        def part(names):
            total = sum(self.numel[n] for n in names)
            zeros = total - sum(kept[n] for n in names)
            return {"total": total, "zeros": zeros, "sparsity": 100.0 * zeros / max(total, 1)}
        return {"layers": {n: part([n]) for n in self.layers},
                "backbone": part(self.shared),
                "heads": {t: part(names) for t, names in self.own.items()},
                "deployed": part(self.layers)}

    def params(self, kept: Mapping[str, int]) -> dict[str, int]:
        """:func:`lib.export.parameter_counts` (``total``, ``nonzero``) of the masked network."""
        return {"total": self.params_total,
                "nonzero": self.other_nonzero + sum(kept[n] for n in self.layers)}

    def effective_macs(self, kept: Mapping[str, int]) -> int:
        """MACs scaled per layer by its fraction of non-zero weights (``conv_macs``'s
        ``effective``), summed in forward order as ``conv_macs`` sums them."""
        total = 0.0
        for name, macs in self.mac_calls:
            density = (kept[name] / self.numel[name] if name in self.numel
                       else self.fixed_density[name])
            total += macs * density
        return int(round(total))


def deployed_sparsity(counter: MaskCounter, kept: Mapping[str, int]) -> float:
    """Percent of the prunable weights that are zero under the masks with counts ``kept``."""
    total = sum(counter.numel.values())
    return 100.0 * (total - sum(kept.values())) / max(total, 1)


__all__ = ["MaskCounter", "deployed_sparsity", "mac_calls"]
