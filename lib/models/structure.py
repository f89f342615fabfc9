"""Which parameters belong to the shared backbone and which to each task's head.

Decided by module structure (``net.backbone`` and ``net.head(task_id)``), never by substring
tests on parameter names.
"""
from __future__ import annotations

from typing import Iterator

import torch.nn as nn

from .contract import PRUNABLE_TYPES
from .scene_net import SceneNet, head_branch_names


def check_scene_net(net: nn.Module) -> SceneNet:
    """Return ``net`` if it has SceneNet's structure, else raise a one-line TypeError."""
    if not isinstance(net, SceneNet):
        raise TypeError(f"expected a lib.models.SceneNet, got {type(net).__name__}")
    return net


def backbone_modules(net: SceneNet, prefix: str = "backbone") -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the prunable (Conv2d/Linear) layers of the backbone."""
    check_scene_net(net)
    return {f"{prefix}.{n}" if n else prefix: m for n, m in net.backbone.named_modules()
            if isinstance(m, PRUNABLE_TYPES)}


def head_modules(net: SceneNet, task_id: int) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the prunable layers of head ``task{task_id}``."""
    check_scene_net(net)
    out = {}
    for branch_name, branch in zip(head_branch_names(task_id), net.head(task_id)):
        for n, m in branch.named_modules():
            if isinstance(m, PRUNABLE_TYPES):
                out[f"{branch_name}.{n}"] = m
    return out


def task_model_modules(net: SceneNet, task_id: int) -> dict[str, nn.Module]:
    """Prunable layers of task model ``task_id``: the backbone plus that task's head."""
    return {**backbone_modules(net), **head_modules(net, task_id)}


def prunable_modules(net: SceneNet) -> dict[str, nn.Module]:
    """Every prunable layer of the network, backbone first, then heads in ``task_ids`` order."""
    out = backbone_modules(net)
    for t in net.task_ids:
        out.update(head_modules(net, t))
    return out


def backbone_parameters(net: SceneNet) -> Iterator[nn.Parameter]:
    check_scene_net(net)
    return net.backbone.parameters()


def head_parameters(net: SceneNet, task_id: int) -> Iterator[nn.Parameter]:
    for branch in net.head(task_id):
        yield from branch.parameters()
