"""SceneNet's own names for the contract's layer enumeration, by 1-based head id.

The rest of ``lib`` works with :func:`lib.models.shared_layers` / :func:`task_layers` by task
name, for any :class:`~lib.models.MultiTaskModel`; these keep the SceneNet-flavoured helpers
(backbone = the shared layers, head ``task_id`` = that task's own layers) for code and tests
written against them.
"""
from __future__ import annotations

from typing import Iterator

import torch.nn as nn

from .contract import prunable_layers, shared_layers, task_layers
from .scene_net import SceneNet

prunable_modules = prunable_layers


def check_scene_net(net: nn.Module) -> SceneNet:
    """Return ``net`` if it has SceneNet's structure, else raise a one-line TypeError."""
    if not isinstance(net, SceneNet):
        raise TypeError(f"expected a lib.models.SceneNet, got {type(net).__name__}")
    return net


def _task_of(net: SceneNet, task_id: int) -> str:
    if task_id not in check_scene_net(net).task_ids:
        raise KeyError(f"this network has no head task{task_id}; heads: {net.task_ids}")
    return net.tasks[net.task_ids.index(task_id)]


def backbone_modules(net: SceneNet) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the prunable (Conv2d/Linear) layers of the backbone."""
    return shared_layers(check_scene_net(net))


def head_modules(net: SceneNet, task_id: int) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the prunable layers of head ``task{task_id}``."""
    return task_layers(net, _task_of(net, task_id))


def task_model_modules(net: SceneNet, task_id: int) -> dict[str, nn.Module]:
    """Prunable layers of task model ``task_id``: the backbone plus that task's head."""
    return {**backbone_modules(net), **head_modules(net, task_id)}


def backbone_parameters(net: SceneNet) -> Iterator[nn.Parameter]:
    return check_scene_net(net).backbone.parameters()


def head_parameters(net: SceneNet, task_id: int) -> Iterator[nn.Parameter]:
    for branch in net.head(task_id):
        yield from branch.parameters()
