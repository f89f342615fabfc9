"""Structured CUT: per-task importance turned into channel decisions, channels physically removed.

Unstructured masks leave dense CPU kernels as slow as before. This variant keeps CUT's steps
(dismantle, select, per-task data-driven scores, fusion by votes) but decides over *channels*:

1. Select: a copy of the network holding only the selected tasks, outputs in selected order.
2. Score: per-task weight scores ``s_t(w) = sum_batches |w * dL_t/dw|`` over task model
   ``t`` (shared layers + its own), at the given weights (:func:`lib.pruning.task_scores`).
3. Channel scores: Torch-Pruning's ``DependencyGraph`` groups every set of coupled channels
   (a residual stage's channels are one group: the stage's block outputs, its shortcut, the
   next convolutions' inputs and, for the last stage, every head's first layer inputs).
   A channel's score for task ``t`` is the sum of ``s_t`` over all weights the group would
   remove with it (output filters of the producing convolutions, input slices of the consuming
   Conv2d / Linear layers). The layers that produce the network's outputs keep their channels.
4. Per-task decision. ``ranking="uniform"`` (default): in every group, task ``t`` keeps its top
   ``n - floor(n * channel_sparsity)`` channels (so the kept width is predictable).
   ``ranking="global"``: task ``t`` ranks the channels of all the groups it decides together,
   each group's scores divided by their mean (Torch-Pruning's "mean" group normalisation: a
   channel competes on how much it matters relative to its peers, not on its layer's scale),
   and keeps ``N - floor(N * channel_sparsity)`` of all ``N`` channels, at least one per group.
5. Fusion over channels of the shared backbone: vote = number of selected tasks keeping the
   channel; keep iff vote >= the rule's threshold (``min_votes`` int, ``"all"``, ``"any"``,
   ``"majority"``); with one selected task, its own decision (as CUT does for weights). A group
   always keeps at least one channel (its best by summed normalised scores). Task-owned groups
   (the hidden channels of a kept head) follow that task's own decision.
6. The channels are removed (Torch-Pruning prunes every coupled layer and BatchNorm), giving a
   plain, smaller network of the same class without masks that the training engine
   fine-tunes like any network.

Scoring (steps 1-3) is done once by :func:`structured_cut_plan`; its :meth:`ChannelPlan.prune`
decides and prunes at any channel sparsity (a search over sparsities re-scores nothing).

Saving: a structurally pruned network no longer matches ``architecture()`` alone. Its
per-layer channel counts are :func:`lib.models.channel_spec`; ``architecture()`` +
``channel_spec`` + ``state_dict()`` rebuild it (:func:`lib.models.build_structured`), with no
pickled module. The edge artifact of :mod:`lib.export` stores exactly that. Registered in
:data:`lib.pruning.METHODS` as ``"structured_cut"``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from lib.masks import has_masks, remove_masks
from lib.models import (PRUNABLE_TYPES, MultiTaskModel, apply_channel_spec, build_structured,
                        channel_spec, layer_owner, shared_layers, task_layers)
from lib.tasks import INPUT_KEY

from .compact import select_tasks
from .errors import PruningError
from .fusion import MinVotes, required_votes
from .scores import task_scores

__all__ = ["structured_cut_prune", "structured_cut_plan", "ChannelPlan", "RANKINGS",
           "count_channels", "output_layers", "channel_spec", "apply_channel_spec",
           "build_structured"]


def count_channels(net: MultiTaskModel) -> dict[str, int]:
    """Total output channels of the shared (``"backbone"``) and the tasks' own (``"heads"``)
    convolutions."""
    backbone = sum(m.out_channels for m in shared_layers(net).values() if isinstance(m, nn.Conv2d))
    heads = sum(m.out_channels for t in net.tasks for m in task_layers(net, t).values()
                if isinstance(m, nn.Conv2d))
    return {"backbone": backbone, "heads": heads}


def output_layers(graph, net: nn.Module) -> list[nn.Module]:
    """The Conv2d/Linear layers whose output channels are the network's output channels: those
    reached from an output of the traced graph through parameter-free operations (sums,
    reshapes, activations, BatchNorm). Their output channels must not be pruned."""
    import torch_pruning as tp

    found, seen = [], set()
    stack = [node for node in graph.module2node.values()
             if isinstance(node.module, tp.ops._OutputOp)]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, PRUNABLE_TYPES):
            if node.module not in found:
                found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found


# ----------------------------------------------------------------------------- helpers
RANKINGS = ("uniform", "global")


def _top_channels(score: torch.Tensor, keep: int) -> torch.Tensor:
    order = torch.argsort(score, descending=True, stable=True)
    kept = torch.zeros_like(score, dtype=torch.bool)
    kept[order[:keep]] = True
    return kept


def _normalised(score: torch.Tensor) -> torch.Tensor:
    """A group's channel scores over their mean (Torch-Pruning's "mean" group normaliser)."""
    return score / score.mean().clamp_min(1e-30)


def _global_top_channels(scores: Sequence[torch.Tensor], channel_sparsity: float
                         ) -> list[torch.Tensor]:
    """Kept channels of several groups ranked together on normalised scores.

    Keeps ``N - floor(N * channel_sparsity)`` of the ``N`` channels of all groups: first each
    group's best channel (a group never loses all of them), then the best of the rest by
    normalised score, whatever group they are in (ties: earlier group, lower index first).
    """
    sizes = [len(s) for s in scores]
    total = sum(sizes)
    budget = total - int(total * channel_sparsity)
    kept = [torch.zeros(n, dtype=torch.bool, device=s.device) for n, s in zip(sizes, scores)]
    for k, s in zip(kept, scores):
        k[int(torch.argmax(s))] = True
    flat = torch.cat([_normalised(s.float()) for s in scores])
    taken = torch.cat(kept)
    flat[taken] = -float("inf")
    extra = max(0, budget - len(scores))
    order = torch.argsort(flat, descending=True, stable=True)[:extra]
    chosen = torch.zeros(total, dtype=torch.bool, device=flat.device)
    chosen[order] = True
    chosen &= ~taken
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    return [k | chosen[a:b] for k, a, b in zip(kept, offsets[:-1], offsets[1:])]


def _check_forward(net: nn.Module, example: torch.Tensor, name: str) -> None:
    """A one-line PruningError when the pruned network no longer runs: its channels were
    coupled in a way the traced graph does not show (e.g. max-unpooling indices)."""
    try:
        with torch.no_grad():
            net(example)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruningError(f"structured_cut cannot prune {name}: after removing channels its "
                           f"forward fails ({first}); its channels are coupled in a way "
                           f"Torch-Pruning does not trace (e.g. max-unpooling indices)") from None


@dataclass
class ChannelGroup:
    """One set of coupled channels: its root convolution, voters and per-task channel scores."""

    root: str                          # qualified name of the convolution whose filters go
    size: int                          # channels in the group
    voters: list[str]                  # tasks deciding it (all selected for shared groups)
    votes_needed: int
    scores: dict[str, torch.Tensor]    # {task: score per channel}


class ChannelPlan:
    """Structured CUT with the scores computed once; :meth:`prune` decides at any sparsity.

    Build it with :func:`structured_cut_plan`. ``prune`` never modifies the plan's network.
    """

    def __init__(self, compact: MultiTaskModel, groups: list[ChannelGroup],
                 example: torch.Tensor, info: dict[str, Any]) -> None:
        self.compact, self.groups, self.example, self.info = compact, groups, example, info

    def decide(self, channel_sparsity: float, ranking: str = "uniform") -> dict[str, torch.Tensor]:
        """``{root conv name: bool kept channels}`` at ``channel_sparsity`` (steps 4-5).

        ``ranking="uniform"``: each task keeps its top ``n - floor(n * channel_sparsity)`` of
        every group. ``"global"``: each task ranks the channels of all the groups it decides
        together on normalised scores (:func:`_global_top_channels`), keeping the same fraction
        of channels overall but not of each group.
        """
        if not 0.0 <= channel_sparsity < 1.0:
            raise ValueError(f"channel_sparsity must be in [0, 1), got {channel_sparsity}")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        per_task: dict[str, dict[str, torch.Tensor]] = {}
        for task in self.info["selected"]:
            mine = [g for g in self.groups if task in g.voters]
            if ranking == "uniform":
                kept = [_top_channels(g.scores[task], g.size - int(g.size * channel_sparsity))
                        for g in mine]
            else:
                kept = _global_top_channels([g.scores[task] for g in mine], channel_sparsity)
            per_task[task] = {g.root: k for g, k in zip(mine, kept)}
        decisions = {}
        for g in self.groups:
            votes = sum(per_task[t][g.root].int() for t in g.voters)
            kept = votes >= g.votes_needed
            if not kept.any():
                total = sum(g.scores[t] / g.scores[t].sum().clamp_min(1e-30) for t in g.voters)
                kept[int(torch.argmax(total))] = True
            decisions[g.root] = kept
        return decisions

    def prune(self, channel_sparsity: float, ranking: str = "uniform") -> MultiTaskModel:
        """A pruned copy of the plan's network (step 6), in the plan network's train/eval mode."""
        import torch_pruning as tp

        decisions = self.decide(channel_sparsity, ranking)
        net = copy.deepcopy(self.compact)
        was_training = net.training
        net.eval()
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=self.example)
        for root, kept in decisions.items():
            prune_idxs = torch.nonzero(~kept).flatten().tolist()
            if not prune_idxs:
                continue
            group = graph.get_pruning_group(net.get_submodule(root), tp.prune_conv_out_channels,
                                            idxs=prune_idxs)
            if not graph.check_pruning_group(group):
                raise RuntimeError(f"torch-pruning refused to prune {len(prune_idxs)} channels "
                                   f"of {root}")
            group.prune()
        _check_forward(net, self.example, type(net).__name__)
        net.zero_grad(set_to_none=True)
        net.structured_meta = {**self.info, "channel_sparsity": float(channel_sparsity),
                               "ranking": ranking}
        return net.train(was_training)


# ----------------------------------------------------------------------------- main entry
def structured_cut_plan(net: MultiTaskModel, criterion, loader: Iterable,
                        selected_tasks: Sequence[str], num_batches: int,
                        min_votes: MinVotes = 2, tasks: Sequence[str] | None = None,
                        mode: str = "eval") -> ChannelPlan:
    """Steps 1-3 of structured CUT: select, score, group coupled channels and score them.

    ``criterion`` is a :class:`lib.losses.TaskLosses` knowing the selected tasks;
    ``loader`` yields batch dicts (``img`` + targets); ``num_batches`` of them are scored.
    """
    import torch_pruning as tp

    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    compact = select_tasks(net, selected_tasks, tasks)
    if has_masks(compact):  # a masked input: its zeros become ordinary weights
        remove_masks(compact)
    selected = list(selected_tasks)
    # One selected task uses its own decision whatever the rule (as CUT's weight fusion does).
    needed = 1 if len(selected) == 1 else required_votes(min_votes, len(selected))
    if needed > len(selected):
        raise ValueError(f"min_votes={min_votes} exceeds the {len(selected)} selected tasks "
                         f"{selected}: it would prune every shared channel")
    scores = task_scores(compact, criterion, loader, selected, num_batches, mode=mode)

    names = {m: n for n, m in compact.named_modules()}
    modules = dict(compact.named_modules())
    head_owner = {modules[n]: t for n, t in layer_owner(compact).items() if t is not None}
    example = next(iter(loader))[INPUT_KEY][:1].to(next(compact.parameters()).device)
    was_training = compact.training
    compact.eval()
    graph = tp.DependencyGraph().build_dependency(compact, example_inputs=example)
    outputs = output_layers(graph, compact)

    groups = []
    for group in graph.get_all_groups(ignored_layers=outputs, root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        n = root.out_channels
        per_task = {t: torch.zeros(n, device=example.device) for t in selected}
        owners = set()
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if not isinstance(module, PRUNABLE_TYPES):
                continue
            idxs = [int(getattr(i, "idx", i)) for i in item.idxs]
            if len(idxs) != n:
                raise RuntimeError(f"channel group of {names[root]} maps {n} channels to "
                                   f"{len(idxs)} in {names[module]}; unsupported coupling")
            owners.add(head_owner.get(module, "backbone"))
            dim = 0 if graph.is_out_channel_pruning_fn(handler) else 1
            for t in selected:
                s = scores[t].get(names[module])
                if s is None:
                    continue
                s = s.index_select(dim, torch.tensor(idxs, device=s.device))
                per_task[t] += s.transpose(0, dim).reshape(n, -1).sum(dim=1).to(example.device)
        if "backbone" in owners:
            voters, votes_needed = list(selected), needed
        else:
            voters, votes_needed = sorted(owners), 1
        groups.append(ChannelGroup(names[root], n, voters, votes_needed,
                                   {t: per_task[t] for t in voters}))
    compact.zero_grad(set_to_none=True)
    compact.train(was_training)
    info = {"method": "structured_cut", "selected": selected, "min_votes": min_votes,
            "num_batches": num_batches, "mode": mode}
    return ChannelPlan(compact, groups, example, info)


def structured_cut_prune(net: MultiTaskModel, criterion, loader: Iterable,
                         selected_tasks: Sequence[str], channel_sparsity: float, num_batches: int,
                         min_votes: MinVotes = 2, tasks: Sequence[str] | None = None,
                         mode: str = "eval", ranking: str = "uniform") -> MultiTaskModel:
    """Structured CUT (see module docstring): a plain network with only ``selected_tasks``
    (outputs in that order) and ``channel_sparsity`` of the channels removed per task decision
    (``ranking``: ``"uniform"`` per group, or ``"global"`` across groups on normalised scores),
    fused over the shared layers by ``min_votes``.

    ``criterion`` is a :class:`lib.losses.TaskLosses` knowing the selected tasks;
    ``loader`` yields batch dicts (``img`` + targets); ``num_batches`` of them are scored.
    Rebuild/save metadata: ``net.architecture()`` + :func:`lib.models.channel_spec`.
    """
    if not 0.0 <= channel_sparsity < 1.0:
        raise ValueError(f"channel_sparsity must be in [0, 1), got {channel_sparsity}")
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    plan = structured_cut_plan(net, criterion, loader, selected_tasks, num_batches, min_votes,
                               tasks, mode)
    return plan.prune(channel_sparsity, ranking)
