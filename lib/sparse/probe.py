"""Gradients for growing connections, taken without disturbing the run.

:func:`weight_gradients` computes ``sum over chunks |dL_k / dw|`` for every requested layer and
loss ``k`` on one batch, by a forward pass through :func:`torch.func.functional_call` with
stand-in weights. The model's ``.grad`` fields, BatchNorm statistics (the probe works on copies
of every buffer), RNG stream and DDP hooks are untouched, so a mask update never changes the
trajectory by anything but the masks it sets.

``weights="masked"`` probes the sparse network (dead weights at zero; RigL, the min-max code's
``layer_grow``); ``weights="stored"`` probes with every mask set to one, so dead weights take
their stored ``weight_orig`` values (DiSparse's ``dynamic_disparse``, which copies the net and
sets its masks to ones before taking gradients).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from torch.func import functional_call

from lib.masks import refresh_masked_weights

LossFn = Callable[[Any, Mapping[str, Any]], torch.Tensor]


def split_batch(batch: Mapping[str, Any], chunks: int) -> list[dict[str, Any]]:
    """``batch`` cut into ``min(chunks, batch size)`` consecutive pieces along dim 0."""
    size = int(batch["img"].shape[0])
    pieces = max(1, min(int(chunks), size))
    out = [{} for _ in range(pieces)]
    for key, value in batch.items():
        parts = (torch.tensor_split(value, pieces) if isinstance(value, torch.Tensor)
                 and value.dim() > 0 and value.shape[0] == size else [value] * pieces)
        for piece, part in zip(out, parts):
            piece[key] = part
    return out


def weight_gradients(model: nn.Module, layers: Mapping[str, nn.Module],
                     batch: Mapping[str, Any], losses: Mapping[str, tuple[LossFn, list[str]]],
                     *, weights: str = "masked", chunks: int = 1
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """``{loss key: {layer: sum over chunks |d loss / d effective weight|}}``.

    ``losses`` maps a key to ``(fn(preds, batch) -> scalar, layers it needs gradients for)``;
    every layer must carry a prune mask. The model is run in its current train/eval mode.
    """
    if weights not in ("masked", "stored"):
        raise ValueError(f"weights must be 'masked' or 'stored', got {weights!r}")
    module_names = {id(m): n for n, m in model.named_modules()}
    leaves, overrides = {}, {}
    for name, module in layers.items():
        qualified = module_names[id(module)]
        value = module.weight_orig.detach()
        if weights == "masked":
            value = value * module.weight_mask
        leaves[name] = value.clone().requires_grad_(True)
        overrides[f"{qualified}.weight_orig"] = leaves[name]
        overrides[f"{qualified}.weight_mask"] = torch.ones_like(module.weight_mask)
    # Copies of every other buffer: BatchNorm statistics updated in train mode stay the run's.
    for name, buf in model.named_buffers():
        if name not in overrides:
            overrides[name] = buf.clone()
    sums = {key: {n: torch.zeros_like(leaves[n]) for n in names}
            for key, (_, names) in losses.items()}
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for piece in split_batch(batch, chunks):
            preds = functional_call(model, overrides, (piece["img"],))
            for key, (fn, names) in losses.items():
                grads = torch.autograd.grad(fn(preds, piece), [leaves[n] for n in names],
                                            retain_graph=True, allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        sums[key][n] += g.detach().abs()
    refresh_masked_weights(model)   # the prune hooks left the probe's products in .weight
    return sums


def all_reduce_sums(sums: dict[str, dict[str, torch.Tensor]], dist_info) -> None:
    """Sum the scores over DDP ranks in place, so every rank chooses the same positions."""
    if dist_info is None or not dist_info.enabled:
        return
    import torch.distributed as dist
    for per_layer in sums.values():
        for tensor in per_layer.values():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
