"""Masks: per-task top-k, global top-k, and installing them as ``torch.nn.utils.prune`` hooks.

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


class ScoreRanking:
    """Scores ranked once, so masks for many keep ratios (the sparsity search) are cheap.

    ``masks(keep_ratio)`` keeps the top ``int(n * keep_ratio)`` of all scores together, ties at
    the threshold kept. With ``normalise`` the scores are divided by their sum first, exactly
    as the reference does before thresholding (so its tie behaviour is reproduced bit for bit).

    ``masks(keep_ratio, exact=True)`` keeps exactly ``int(n * keep_ratio)``: ties are broken by
    ``tie_break`` (larger first, e.g. ``|w|``), then by position. Needed where many scores tie
    (exact zeros: dead ReLUs, dilated taps that only see padding) and a target sparsity must be
    met; the reference's keep-ties rule stays the default.
    """

    def __init__(self, scores: Mapping[str, torch.Tensor], normalise: bool = True,
                 label: str = "scores", tie_break: Mapping[str, torch.Tensor] | None = None):
        if not scores:
            raise ValueError(f"{label}: no scores to threshold")
        self.label = label
        self.scores = {n: s.detach().float() for n, s in scores.items()}
        flat = torch.cat([s.flatten() for s in self.scores.values()])
        if normalise:
            norm = flat.sum()
            if not torch.isfinite(norm) or norm <= 0:
                raise ValueError(f"{label}: importance scores sum to {norm.item()}, cannot "
                                 f"normalise (all gradients zero or non-finite?)")
            flat = flat / norm
            self.scores = {n: s / norm for n, s in self.scores.items()}
        self.ranked = flat.sort(descending=True).values
        self.numel = flat.numel()
        self._tie_break = tie_break
        self._rank: torch.Tensor | None = None

    def threshold(self, keep_ratio: float) -> torch.Tensor:
        keep_ratio = check_keep_ratio(keep_ratio)
        num_keep = int(self.numel * keep_ratio)
        if num_keep < 1:
            raise ValueError(f"{self.label}: keep_ratio {keep_ratio} keeps no weight of "
                             f"{self.numel}")
        return self.ranked[num_keep - 1]

    def masks(self, keep_ratio: float, exact: bool = False) -> Masks:
        threshold = self.threshold(keep_ratio)
        if not exact:
            return {name: s >= threshold for name, s in self.scores.items()}
        keep = self._exact_rank() < int(self.numel * keep_ratio)
        out, start = {}, 0
        for name, s in self.scores.items():
            out[name] = keep[start:start + s.numel()].view_as(s)
            start += s.numel()
        return out

    def _exact_rank(self) -> torch.Tensor:
        """Position of every weight in a strict total order (score, then tie_break, then index)."""
        if self._rank is None:
            flat = torch.cat([s.flatten() for s in self.scores.values()])
            order = torch.arange(self.numel, device=flat.device)
            if self._tie_break is not None:
                secondary = torch.cat([self._tie_break[n].detach().flatten().float().to(flat.device)
                                       for n in self.scores])
                order = torch.argsort(secondary, descending=True, stable=True)
            order = order[torch.argsort(flat[order], descending=True, stable=True)]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(self.numel, device=flat.device)
            self._rank = rank
        return self._rank


def topk_mask(scores: Mapping[str, torch.Tensor], keep_ratio: float, normalise: bool = True,
              label: str = "scores") -> Masks:
    """Keep the top ``int(n * keep_ratio)`` of all scores together; ties at the threshold are kept.

    With ``normalise`` the scores are divided by their sum first (the reference's order of
    operations). For many keep ratios over the same scores use :class:`ScoreRanking`.
    """
    check_keep_ratio(keep_ratio)
    return ScoreRanking(scores, normalise, label).masks(keep_ratio)


def task_masks(scores: Mapping[str, Mapping[str, torch.Tensor]],
               keep_ratio: float) -> dict[str, Masks]:
    """Per task: normalise its scores by their sum and keep its top ``int(n * keep_ratio)``.

    ``scores`` is ``{task: {module name: score}}`` over each task model (backbone + own head),
    as :func:`lib.pruning.task_scores` returns; so is the result, with bool masks.
    """
    return {task: topk_mask(s, keep_ratio, normalise=True, label=f"task {task!r}")
            for task, s in scores.items()}


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
