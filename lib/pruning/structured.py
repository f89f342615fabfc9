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
4. Per-task decision: in every group, task ``t`` keeps its top ``n - floor(n * channel_sparsity)``
   channels (uniform per group, so the kept width is predictable).
5. Fusion over channels of the shared backbone: vote = number of selected tasks keeping the
   channel; keep iff vote >= the rule's threshold (``min_votes`` int, ``"all"``, ``"any"``,
   ``"majority"``); with one selected task, its own decision (as CUT does for weights). A group
   always keeps at least one channel (its best by summed normalised scores). Task-owned groups
   (the hidden channels of a kept head) follow that task's own decision.
6. The channels are removed (Torch-Pruning prunes every coupled layer and BatchNorm), giving a
   plain, smaller network of the same class without masks that the training engine
   fine-tunes like any network.

Saving: a structurally pruned network no longer matches ``architecture()`` alone. Its
per-layer channel counts are :func:`lib.models.channel_spec`; ``architecture()`` +
``channel_spec`` + ``state_dict()`` rebuild it (:func:`lib.models.build_structured`), with no
pickled module. The edge artifact of :mod:`lib.export` stores exactly that. Registered in
:data:`lib.pruning.METHODS` as ``"structured_cut"``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn

from lib.masks import has_masks, remove_masks
from lib.models import (PRUNABLE_TYPES, MultiTaskModel, apply_channel_spec, build_structured,
                        channel_spec, layer_owner, shared_layers, task_layers)
from lib.tasks import network_input

from .compact import select_tasks
from .errors import PruningError
from .fusion import MinVotes, required_votes
from .scores import task_scores

__all__ = ["structured_cut_prune", "count_channels", "output_layers", "channel_spec",
           "apply_channel_spec", "build_structured"]


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
def _top_channels(score: torch.Tensor, keep: int) -> torch.Tensor:
    order = torch.argsort(score, descending=True, stable=True)
    kept = torch.zeros_like(score, dtype=torch.bool)
    kept[order[:keep]] = True
    return kept


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


# ----------------------------------------------------------------------------- main entry
def structured_cut_prune(net: MultiTaskModel, criterion, loader: Iterable,
                         selected_tasks: Sequence[str], channel_sparsity: float, num_batches: int,
                         min_votes: MinVotes = 2, tasks: Sequence[str] | None = None,
                         mode: str = "eval") -> MultiTaskModel:
    """Structured CUT (see module docstring): a plain network with only ``selected_tasks``
    (outputs in that order) and ``channel_sparsity`` of each channel group removed per task
    decision, fused over the shared layers by ``min_votes``.

    ``criterion`` is a :class:`lib.losses.TaskLosses` knowing the selected tasks;
    ``loader`` yields batch dicts (``img`` + targets); ``num_batches`` of them are scored.
    Rebuild/save metadata: ``net.architecture()`` + :func:`lib.models.channel_spec`.
    """
    import torch_pruning as tp

    if not 0.0 <= channel_sparsity < 1.0:
        raise ValueError(f"channel_sparsity must be in [0, 1), got {channel_sparsity}")
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
    inputs = network_input(next(iter(loader)))
    if not isinstance(inputs, torch.Tensor):   # one input per task: any task's traces the graph
        inputs = next(iter(inputs.values()))
    example = inputs[:1].to(next(compact.parameters()).device)
    was_training = compact.training
    compact.eval()
    graph = tp.DependencyGraph().build_dependency(compact, example_inputs=example)
    outputs = output_layers(graph, compact)

    decisions = []
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
        keep = n - int(n * channel_sparsity)
        if "backbone" in owners:
            voters, votes_needed = selected, needed
        else:
            voters, votes_needed = sorted(owners), 1
        votes = sum(_top_channels(per_task[t], keep).int() for t in voters)
        kept = votes >= votes_needed
        if not kept.any():
            total = sum(per_task[t] / per_task[t].sum().clamp_min(1e-30) for t in voters)
            kept[int(torch.argmax(total))] = True
        prune_idxs = torch.nonzero(~kept).flatten().tolist()
        if prune_idxs:
            decisions.append((root, group[0].dep.handler, prune_idxs))

    for root, handler, prune_idxs in decisions:
        group = graph.get_pruning_group(root, handler, idxs=prune_idxs)
        if not graph.check_pruning_group(group):
            raise RuntimeError(f"torch-pruning refused to prune {len(prune_idxs)} channels of "
                               f"{names[root]}")
        group.prune()
    _check_forward(compact, example, type(net).__name__)
    compact.zero_grad(set_to_none=True)
    return compact.train(was_training)
