"""Task selection: the compact network holding the shared modules and the selected tasks only."""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any

import torch

from lib.models import MultiTaskModel, check_model
from lib.tasks import network_input

# Samples of the first batch the contract checks run on (eval mode: one image is enough).
PROBE_SAMPLES = 1


def network_tasks(net: MultiTaskModel, tasks: Sequence[str] | None = None) -> list[str]:
    """``net.tasks``; ``tasks``, when given (the reference's ``cut_prune`` argument naming the
    network's outputs), must be exactly those names in that order."""
    check_model(net)
    if tasks is not None and list(tasks) != list(net.tasks):
        raise ValueError(f"tasks {list(tasks)} do not match the network's tasks {net.tasks} "
                         f"(its outputs, in order)")
    return list(net.tasks)


def probe_from(loader: Iterable | None) -> tuple[Any, Iterable | None]:
    """(probe input, loader to use from then on): the network input of the loader's first
    batch cut to :data:`PROBE_SAMPLES` samples (None without a loader or batches).

    Taking it costs the loader nothing: a list is indexed; any other loader's first pass is
    started here and handed back with that batch in front (:class:`Replay`), so a sampler
    that moves to its next epoch per pass (``lib.data``'s) is iterated exactly as often as
    without the probe and the method sees the same batches."""
    if loader is None:
        return None, loader
    if isinstance(loader, Sequence):
        first = loader[0] if len(loader) else None
    else:
        rest = iter(loader)
        first = next(rest, None)
        if first is None:
            return None, (iter(()) if rest is loader else loader)
        loader = (itertools.chain([first], rest) if rest is loader
                  else (SizedReplay if isinstance(loader, Sized) else Replay)(loader, first, rest))
    if first is None:
        return None, loader
    x = network_input(first)
    if isinstance(x, torch.Tensor):
        return x[:PROBE_SAMPLES], loader
    return {task: v[:PROBE_SAMPLES] for task, v in x.items()}, loader


class Replay:
    """``loader`` whose first pass is the one already started (``first`` + ``rest``); later
    passes iterate ``loader`` afresh. Other attributes are ``loader``'s."""

    def __init__(self, loader: Iterable, first: Any, rest: Iterator) -> None:
        self.loader, self._started = loader, (first, rest)

    def __iter__(self) -> Iterator:
        if self._started is None:
            return iter(self.loader)
        (first, rest), self._started = self._started, None
        return itertools.chain([first], rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)


class SizedReplay(Replay):
    """:class:`Replay` of a loader with a length."""

    def __len__(self) -> int:
        return len(self.loader)


def select_tasks(net: MultiTaskModel, selected_tasks: Sequence[str],
                 tasks: Sequence[str] | None = None, probe: Any = None) -> MultiTaskModel:
    """``net.select(selected_tasks)``: a compact copy with the shared modules and only the
    selected tasks' modules, outputs in the order given (see
    :meth:`lib.models.MultiTaskModel.select`); ``net`` is left untouched. Masks, weights,
    device and mode are copied; kept modules keep their names (``task3_fc1_c0`` stays
    ``task3_fc1_c0`` in a SceneNet). ``tasks`` is checked against ``net.tasks``. With
    ``probe`` (:func:`probe_from`), the network's outputs on it are checked against the
    contract and the compact network's against the full one's.
    """
    network_tasks(net, tasks)
    if probe is not None:
        check_model(net, probe)
    return net.select(selected_tasks, probe=probe)
