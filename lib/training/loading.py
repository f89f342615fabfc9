"""Rebuild a network from any checkpoint this workspace writes, masks included.

Handles: training checkpoints (``last.pth``/``best.pth``: architecture inside), plain state
dicts with a JSON sidecar holding ``net.architecture()`` (``final_model.pth`` here, and
``lib.pruning.save_pruned``'s files), and plain reference state dicts (architecture from the
config). Where the state dict holds ``<layer>.weight_orig``/``weight_mask``, an identity prune
mask is installed on that layer first, so the saved masks load into it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn as nn
import torch.nn.utils.prune as prune

from lib.models import SceneNet, build_model

from .checkpoint import load_checkpoint, read_checkpoint


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def architecture_for(path: str | os.PathLike, ckpt: dict, cfg=None) -> dict:
    """The ``SceneNet.architecture()`` dict for ``path``: checkpoint, sidecar, else ``cfg``."""
    if ckpt.get("architecture"):
        return ckpt["architecture"]
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"sidecar {side} is not valid JSON: {exc}") from None
        arch = meta.get("architecture", meta) if isinstance(meta, dict) else None
        if not isinstance(arch, dict) or "tasks_num_class" not in arch:
            raise ValueError(f"sidecar {side} holds no SceneNet architecture "
                             f"(expected a 'tasks_num_class' entry)")
        return arch
    if cfg is None:
        raise ValueError(f"{path} holds no architecture and has no sidecar {side.name}: pass "
                         f"the config it was trained with")
    return SceneNet.from_config(cfg).architecture()


def install_identity_masks(net: nn.Module, state_keys) -> int:
    """Install an all-ones prune mask on each layer whose ``weight_mask`` is in ``state_keys``."""
    masked = {k[: -len(".weight_mask")] for k in state_keys if k.endswith(".weight_mask")}
    modules = dict(net.named_modules())
    for name in sorted(masked):
        if name not in modules:
            raise ValueError(f"the checkpoint masks layer {name!r}, which this network lacks")
        if not hasattr(modules[name], "weight_mask"):
            prune.identity(modules[name], "weight")
    return len(masked)


def net_from_checkpoint(path: str | os.PathLike, cfg=None) -> SceneNet:
    """A SceneNet with the checkpoint's architecture, masks and weights (on the CPU)."""
    ckpt = read_checkpoint(path)
    arch = architecture_for(path, ckpt, cfg)
    if arch.get("tasks") is None and cfg is not None and len(cfg.TASKS) == len(
            arch.get("tasks_num_class", ())):
        arch = {**arch, "tasks": list(cfg.TASKS)}   # a record written without task names
    try:
        net = build_model(arch, str(path))
    except ValueError as exc:
        raise ValueError(f"architecture of {path} is not a SceneNet's: {exc}") from None
    install_identity_masks(net, ckpt["model"].keys())
    load_checkpoint(ckpt, net)
    return net
