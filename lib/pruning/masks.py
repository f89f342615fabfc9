"""Masks from scores: per-task top-k, global top-k.

A mask dict is ``{qualified module name: bool tensor shaped like the module's weight}``, True =
keep (:data:`lib.masks.Masks`); installing, reading and holding masks on a network is
:mod:`lib.masks`.
"""
from __future__ import annotations

from typing import Mapping

import torch

from lib.masks import Masks


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
