"""Lottery-ticket baselines: one-shot global magnitude pruning and iterative magnitude pruning
with weight rewinding.

Iterative pruning needs training between rounds. The caller passes a ``train_fn(net) -> None``
that trains ``net`` in place with its installed masks held (``torch.nn.utils.prune`` hooks keep
pruned weights at zero); :func:`per_round_runs` adapts ``lib.training.finetune`` to it.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable

import torch

from lib.masks import Masks, install_masks, ones_masks, remove_masks
from lib.models import MultiTaskModel

from .masks import topk_mask
from .scores import magnitude_scores

TrainFn = Callable[[MultiTaskModel], None]


def per_round_runs(fn: Callable[..., object], run_dir: str | os.PathLike, **kwargs) -> TrainFn:
    """Adapt a fine-tune function ``fn(net, *, run_dir, **kwargs)`` into a ``train_fn``.

    Round r trains in ``run_dir/round{r}``, so per-run checkpoints never collide; e.g.
    ``per_round_runs(lib.training.finetune, out, criterion=c, train_loader=l, cfg=cfg)``.
    """
    rounds = itertools.count(1)

    def train_fn(net: MultiTaskModel) -> None:
        fn(net, run_dir=Path(run_dir) / f"round{next(rounds)}", **kwargs)
    return train_fn


def global_magnitude_masks(net: MultiTaskModel, keep_ratio: float) -> Masks:
    """Keep the globally largest ``int(n * keep_ratio)`` |w| of every prunable layer (ties kept)."""
    return topk_mask(magnitude_scores(net), keep_ratio, normalise=False, label="global |w|")


def iterative_magnitude_masks(net: MultiTaskModel, keep_ratio: float, train_fn: TrainFn,
                              rounds: int = 3) -> Masks:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin), ``rounds`` rounds.

    Round r trains the masked network with ``train_fn``, keeps the globally largest surviving
    |w| down to ``keep_ratio ** (r / rounds)``, then rewinds every weight and buffer to the
    state ``net`` had on entry. Returns the final masks; ``net`` ends rewound and unmasked.
    """
    if not callable(train_fn):
        raise ValueError("iterative LTH needs train_fn=callable(net) that trains the masked "
                         "network in place")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    rewind = {k: v.detach().clone() for k, v in net.state_dict().items()}
    masks = ones_masks(net)
    for r in range(1, rounds + 1):
        install_masks(net, masks)
        train_fn(net)
        trained = topk_mask(magnitude_scores(net), keep_ratio ** (r / rounds), normalise=False,
                            label=f"IMP round {r}")
        masks = {n: trained[n] & masks[n] for n in masks}
        remove_masks(net)
        with torch.no_grad():
            net.load_state_dict(rewind)
    return masks
