"""CUT beyond the paper: variants with the method signature ``(net, ctx, **options) -> plan``,
each registered (:func:`lib.pruning.registry.register_method`) under its name when this module
is imported (``lib.pruning`` imports it, so the registry is whole whatever one imports).

The paper's CUT (``methods.cut``) scores every weight once per task at the pre-trained
weights, keeps each task model's top weights and fuses the shared layers by votes (a weight
kept by >= 2 tasks). The variants, each a plan the shared :func:`lib.pruning.prune` pipeline
(target-sparsity search included) uses unchanged:

``cut_union``       the other fusion rule: a shared weight is kept when any task keeps it
                    (DiSparse's union; with two tasks the paper's ">= 2" is the intersection).

``cut_iterative``   reach the target over ``rounds`` rounds; each round re-scores every task
                    on the network masked by the previous round and prunes to the round's
                    deployed density ``keep ** (r / rounds)`` (no training in between: the
                    iterative-SNIP lesson that one-shot saliency misjudges weights whose
                    neighbours are about to go).
``cut_floor``       CUT, then every layer keeps at least ``min_density`` of its weights (the
                    best by score), since one-shot saliency can empty whole layers at high
                    sparsity.
``cut_layer_norm``  scores normalised per layer (divided by the layer's mean score) instead of
                    per task model, so every layer's top weights compete on their importance
                    relative to their own layer.
"""
from __future__ import annotations

import copy
import math
from typing import Mapping

import torch

from lib.masks import Masks, install_masks, layer_weights
from lib.models import MultiTaskModel, shared_layers, task_layers

from .errors import PruningError, UnreachableSparsityError
from .fusion import MinVotes, required_votes
from .methods import PruneContext, PruningPlan, cut, per_task_plan, require_data
from .registry import integer, number, register_method, votes
from .scores import task_scores
from .sparsity import keep_ratio_for_sparsity

Scores = dict[str, dict[str, torch.Tensor]]


def _scores(net: MultiTaskModel, ctx: PruneContext) -> Scores:
    return task_scores(net, ctx.criterion, ctx.loader, net.tasks, ctx.num_batches, ctx.mode,
                       ctx.device)


def masked_copy(net: MultiTaskModel, masks: Masks) -> MultiTaskModel:
    """A copy of ``net`` carrying ``masks`` (pruned weights are zero in its forward pass)."""
    return install_masks(copy.deepcopy(net), masks)


def reach_density(masks_for, density: float, weights: Mapping[str, torch.Tensor]) -> Masks:
    """The masks of ``masks_for(keep, exact)`` whose deployed density is ``density`` (bisection
    on ``keep``; ties in the scores broken by ``|w|`` when keeping them misses the target)."""
    sparsity = 100.0 * (1.0 - density)
    try:
        keep = keep_ratio_for_sparsity(lambda k: masks_for(k, False), sparsity, weights)
        return masks_for(keep, False)
    except UnreachableSparsityError:
        pass
    keep = keep_ratio_for_sparsity(lambda k: masks_for(k, True), sparsity, weights)
    return masks_for(keep, True)


def iterative_masks(net: MultiTaskModel, ctx: PruneContext, keep: float, rounds: int,
                    min_votes: MinVotes, first_scores: Scores | None = None) -> Masks:
    """Masks of deployed density ``keep`` reached over ``rounds`` re-scored CUT rounds.

    Round r scores every task on ``net`` masked by round r - 1 (``first_scores``: round 1's,
    at the unmasked weights) and keeps the CUT masks of deployed density ``keep ** (r/rounds)``
    among the weights round r - 1 kept.
    """
    weights = layer_weights(net)
    kept: Masks | None = None
    for r in range(1, rounds + 1):
        if r == 1 and first_scores is not None:
            scores = first_scores
        else:
            scores = _scores(net if kept is None else masked_copy(net, kept), ctx)
        plan = per_task_plan(net, scores, min_votes)

        def within(k: float, exact: bool, plan=plan, kept=kept) -> Masks:
            masks = plan.masks_for(k, exact)
            return masks if kept is None else {n: m & kept[n] for n, m in masks.items()}

        kept = reach_density(within, keep ** (r / rounds), weights)
    return kept


@register_method("cut_union", kind="mask",
                 summary="CUT with the union fusion rule: a shared weight kept by any task")
def cut_union(net: MultiTaskModel, ctx: PruneContext) -> PruningPlan:
    """CUT with the union fusion rule (``min_votes="any"``)."""
    return cut(net, ctx, min_votes="any")


@register_method("cut_iterative", kind="mask",
                 summary="CUT over rounds, each re-scoring every task on the masked network",
                 options={"rounds": integer(3, 1), "min_votes": votes(2)})
def cut_iterative(net: MultiTaskModel, ctx: PruneContext, *, rounds: int = 3,
                  min_votes: MinVotes = 2) -> PruningPlan:
    """Iterative CUT: ``rounds`` rounds of per-task re-scoring on the masked network.

    The plan's keep ratio is the deployed density itself (each round reaches its density by
    search), so a target sparsity S is one call at keep ``1 - S/100``.
    """
    require_data(ctx, net, "cut_iterative")
    required_votes(min_votes, len(net.tasks))
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise PruningError(f"rounds must be a positive integer, got {rounds!r}")
    first = _scores(net, ctx)       # round 1 does not depend on the target: scored once

    def masks_for(keep: float, exact: bool = False) -> Masks:
        return iterative_masks(net, ctx, keep, rounds, min_votes, first)

    return PruningPlan(net, masks_for, True, None,
                       {"rounds": rounds, "min_votes": min_votes, "mode": ctx.mode})


def floor_scores(net: MultiTaskModel, scores: Scores) -> dict[str, torch.Tensor]:
    """Per layer, the score that picks the weights a floor keeps: a task layer's own task's
    score; for a shared layer the sum over tasks of each task's score divided by that task
    model's total (so every task weighs the same)."""
    totals = {t: sum(float(s.sum()) for s in ts.values()) for t, ts in scores.items()}
    for t, total in totals.items():
        if not math.isfinite(total) or total <= 0:
            raise PruningError(f"task {t!r}: importance scores sum to {total}, cannot normalise")
    out = {n: sum(scores[t][n] / totals[t] for t in scores) for n in shared_layers(net)}
    for task in net.tasks:
        out.update({n: scores[task][n] for n in task_layers(net, task)})
    return out


def top_of_layer(score: torch.Tensor, tie_break: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` best entries of ``score`` (ties: larger ``tie_break``,
    then position)."""
    flat, tie = score.flatten(), tie_break.flatten().float()
    order = torch.argsort(tie, descending=True, stable=True)
    order = order[torch.argsort(flat[order], descending=True, stable=True)]
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:count]] = True
    return keep.view_as(score)


def with_floor(masks: Masks, scores: Mapping[str, torch.Tensor],
               weights: Mapping[str, torch.Tensor], min_density: float) -> Masks:
    """``masks`` with every layer keeping at least ``ceil(min_density * n)`` weights: a layer
    below that also keeps its best weights by ``scores`` (ties by ``|w|``)."""
    out = {}
    for name, mask in masks.items():
        need = math.ceil(min_density * mask.numel())
        kept = mask & (weights[name] != 0)
        if int(kept.sum()) >= need:
            out[name] = mask
            continue
        alive = (weights[name] != 0).float()      # an already-zero weight cannot help a floor
        best = top_of_layer(scores[name] * alive, weights[name].abs() * alive, need)
        out[name] = mask | best
    return out


@register_method("cut_floor", kind="mask",
                 summary="CUT, then every layer keeps at least min_density of its weights",
                 options={"min_density": number(0.01, above=0, below=1), "min_votes": votes(2)})
def cut_floor(net: MultiTaskModel, ctx: PruneContext, *, min_density: float = 0.01,
              min_votes: MinVotes = 2) -> PruningPlan:
    """CUT with a per-layer floor: no layer keeps fewer than ``min_density`` of its weights."""
    require_data(ctx, net, "cut_floor")
    if not 0 < min_density < 1:
        raise PruningError(f"min_density must be in (0, 1), got {min_density}")
    required_votes(min_votes, len(net.tasks))
    scores = _scores(net, ctx)
    plan = per_task_plan(net, scores, min_votes, info={"mode": ctx.mode})
    return floored(plan, floor_scores(net, scores), layer_weights(net), min_density)


def floored(plan: PruningPlan, picks: Mapping[str, torch.Tensor],
            weights: Mapping[str, torch.Tensor], min_density: float) -> PruningPlan:
    """``plan`` whose masks (for every fusion rule) get :func:`with_floor`."""
    base_masks_for, base_with_votes = plan.masks_for, plan.with_votes

    def masks_for(keep: float, exact: bool = False) -> Masks:
        return with_floor(base_masks_for(keep, exact), picks, weights, min_density)

    plan.masks_for = masks_for
    plan.sparsity_curve = None    # CUT's curve does not count the weights the floor adds back
    plan.info["min_density"] = min_density
    plan.with_votes = lambda votes: floored(base_with_votes(votes), picks, weights, min_density)
    return plan


def layer_normalised(scores: Scores) -> Scores:
    """Every layer's scores divided by that layer's mean score (a layer scoring all zeros is
    left at zero)."""
    out: Scores = {}
    for task, layers in scores.items():
        out[task] = {}
        for name, s in layers.items():
            mean = float(s.float().mean())
            if not math.isfinite(mean):
                raise PruningError(f"task {task!r} layer {name}: non-finite scores")
            out[task][name] = s / mean if mean > 0 else s
    return out


@register_method("cut_layer_norm", kind="mask",
                 summary="CUT with scores normalised per layer instead of per task model",
                 options={"min_votes": votes(2)})
def cut_layer_norm(net: MultiTaskModel, ctx: PruneContext, *, min_votes: MinVotes = 2) -> PruningPlan:
    """CUT with scores normalised per layer instead of per task model."""
    require_data(ctx, net, "cut_layer_norm")
    required_votes(min_votes, len(net.tasks))
    return per_task_plan(net, layer_normalised(_scores(net, ctx)), min_votes,
                         info={"mode": ctx.mode, "normalise": "layer"})


VARIANTS = {"cut_union": cut_union, "cut_iterative": cut_iterative, "cut_floor": cut_floor,
           "cut_layer_norm": cut_layer_norm}
