"""Task selection: the compact network holding the shared modules and the selected tasks only."""
from __future__ import annotations

from typing import Sequence

from lib.models import MultiTaskModel, check_model


def network_tasks(net: MultiTaskModel, tasks: Sequence[str] | None = None) -> list[str]:
    """``net.tasks``; ``tasks``, when given (the reference's ``cut_prune`` argument naming the
    network's outputs), must be exactly those names in that order."""
    check_model(net)
    if tasks is not None and list(tasks) != list(net.tasks):
        raise ValueError(f"tasks {list(tasks)} do not match the network's tasks {net.tasks} "
                         f"(its outputs, in order)")
    return list(net.tasks)


def select_tasks(net: MultiTaskModel, selected_tasks: Sequence[str],
                 tasks: Sequence[str] | None = None) -> MultiTaskModel:
    """``net.select(selected_tasks)``: a compact copy with the shared modules and only the
    selected tasks' modules, outputs in the order given (see
    :meth:`lib.models.MultiTaskModel.select`); ``net`` is left untouched. Masks, weights,
    device and mode are copied; kept modules keep their names (``task3_fc1_c0`` stays
    ``task3_fc1_c0`` in a SceneNet). ``tasks`` is checked against ``net.tasks``.
    """
    network_tasks(net, tasks)
    return net.select(selected_tasks)
