"""Parameter decision: fuse the selected tasks' masks of the shared backbone by votes."""
from __future__ import annotations

from typing import Mapping, Union

import torch

from lib.masks import Masks

MinVotes = Union[int, str]
NAMED_RULES = ("all", "any", "majority")


def required_votes(min_votes: MinVotes, num_tasks: int) -> int:
    """Number of task votes a backbone weight needs to be kept under rule ``min_votes``.

    ``"all"`` = every task (AND), ``"any"`` = one (OR, DiSparse's union), ``"majority"`` =
    more than half, an integer = at least that many (the reference hard-codes 2).
    """
    if num_tasks < 1:
        raise ValueError("fusion needs at least one task's masks")
    if min_votes == "all":
        return num_tasks
    if min_votes == "any":
        return 1
    if min_votes == "majority":
        return num_tasks // 2 + 1
    if isinstance(min_votes, bool) or not isinstance(min_votes, int):
        raise ValueError(f"min_votes must be a positive integer or one of {NAMED_RULES}, "
                         f"got {min_votes!r}")
    if min_votes < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes}")
    return min_votes


def fuse_backbone(masks: Mapping[str, Mapping[str, torch.Tensor]], min_votes: MinVotes = 2,
                  reproduce_single_task_bug: bool = False) -> Masks:
    """Fuse per-task backbone masks ``{task: {layer: bool}}`` into ``{layer: bool}``.

    A weight is kept iff at least ``required_votes(min_votes, |tasks|)`` tasks keep it. With a
    single task its own mask is used whatever the rule. ``reproduce_single_task_bug=True``
    applies the integer rule literally even then (the reference's ``vote >= 2`` with one task
    prunes the whole backbone); it exists only to reproduce the original runs. An integer
    ``min_votes`` larger than the number of tasks is an error for the same reason.
    """
    tasks = list(masks)
    need = required_votes(min_votes, len(tasks))
    if len(tasks) == 1 and not reproduce_single_task_bug:
        return {layer: m.bool().clone() for layer, m in masks[tasks[0]].items()}
    if need > len(tasks) and not reproduce_single_task_bug:
        raise ValueError(f"min_votes={min_votes} exceeds the {len(tasks)} selected task(s) "
                         f"{tasks}: it would prune the whole backbone")
    layers = list(masks[tasks[0]])
    for t in tasks[1:]:
        if list(masks[t]) != layers:
            raise ValueError(f"task {t!r} masks cover different layers than task {tasks[0]!r}")
    fused = {}
    for layer in layers:
        votes = torch.zeros(masks[tasks[0]][layer].shape, dtype=torch.int32,
                            device=masks[tasks[0]][layer].device)
        for t in tasks:
            votes += masks[t][layer].to(torch.int32)
        fused[layer] = votes >= need
    return fused
