"""Training checkpoints: atomic, complete, and loaded without arbitrary unpickling.

A *full* checkpoint (``last.pth``) holds everything a run needs to continue bit-for-bit:
model, optimiser, scheduler, AMP scaler, the RNG states of Python / NumPy / torch (CPU and
CUDA), the data position (epoch, batch within epoch), iteration, the config dict, the
hyper-parameters, the loss history and the model-selection record. A *best* checkpoint holds
the model and the bookkeeping only. Both are plain dicts of tensors and primitive containers,
so :func:`lib.utils.safe_torch_load` (``weights_only=True``) reads them; a file that would need
arbitrary unpickling is refused, never executed.

:func:`load_checkpoint` also reads a plain reference state dict (``base_model.pth`` or the
original code's ``best_*.pth``, with or without DataParallel's ``module.`` prefix).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from lib.utils import atomic_torch_save, safe_torch_load

from lib.pruning.masks import refresh_masked_weights

CHECKPOINT_FORMAT = "cut-training-checkpoint"
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU, every CUDA device) as tensors/primitives."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------- save / load
def unwrap(net: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel (or ``net`` itself)."""
    return net.module if hasattr(net, "module") and isinstance(net.module, nn.Module) else net


def architecture_of(net: nn.Module) -> dict | None:
    net = unwrap(net)
    return net.architecture() if hasattr(net, "architecture") else None


def save_checkpoint(path: str | os.PathLike, net: nn.Module, *, optimizer=None, scheduler=None,
                    scaler=None, iteration: int = 0, config: Mapping[str, Any] | None = None,
                    rng: Any = None, data_state: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None, kind: str = "last") -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path.

    ``rng`` defaults to this process's :func:`rng_state`; pass a list (one state per rank)
    under DistributedDataParallel. ``extra`` holds further primitive bookkeeping (history,
    hyper-parameters, selection record).
    """
    model = unwrap(net)
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "iteration": int(iteration),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "architecture": architecture_of(model),
        "tasks": list(model.tasks) if getattr(model, "tasks", None) is not None else None,
        "config": dict(config) if config is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state() if rng is None else rng,
        "data": dict(data_state) if data_state is not None else None,
    }
    ckpt.update(extra or {})
    return atomic_torch_save(ckpt, path)


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint or a plain state dict safely; always returns the checkpoint form.

    A plain state dict becomes ``{"model": state_dict, "kind": "state_dict", ...}``.
    """
    obj = safe_torch_load(path)
    if is_training_checkpoint(obj):
        obj["source"] = str(path)
        return obj
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = {_strip_module(k): v for k, v in obj.items()}
        return {"format": None, "kind": "state_dict", "model": state, "iteration": None,
                "tasks": None, "architecture": None, "source": str(path)}
    raise ValueError(f"checkpoint {path} is neither a training checkpoint nor a state dict "
                     f"(got {type(obj).__name__})")


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def check_compatible(state: Mapping[str, torch.Tensor], net: nn.Module, source: str,
                     tasks: list[str] | None = None) -> None:
    """Raise a one-line ValueError if ``state`` does not fit ``net`` (tasks, keys or shapes)."""
    model = unwrap(net)
    net_tasks = getattr(model, "tasks", None)
    if tasks is not None and net_tasks is not None and list(tasks) != list(net_tasks):
        raise ValueError(f"checkpoint {source} was trained for tasks {list(tasks)} but the "
                         f"network has tasks {list(net_tasks)}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs network) {_short(shapes)}")
    if problems:
        raise ValueError(f"checkpoint {source} does not fit this network "
                         f"(different architecture or task list): {'; '.join(problems)}")


def _short(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


def load_checkpoint(path: str | os.PathLike | Mapping[str, Any], net: nn.Module | None = None, *, optimizer=None,
                    scheduler=None, scaler=None, restore_rng: bool = False,
                    rank: int = 0) -> dict[str, Any]:
    """Load ``path`` (``weights_only=True``) into whatever is given; return the checkpoint dict.

    ``path`` may also be a dict :func:`read_checkpoint` returned (to avoid reading twice).

    The network must match exactly (same tasks, keys and shapes) or a one-line ValueError
    names the differences; nothing is loaded in that case. ``restore_rng`` restores the RNG
    states saved for ``rank`` (a per-rank list under DDP).
    """
    ckpt = read_checkpoint(path) if not isinstance(path, Mapping) else path
    path = ckpt.get("source", path) if isinstance(path, Mapping) else path
    if net is not None:
        check_compatible(ckpt["model"], net, str(path), ckpt.get("tasks"))
        unwrap(net).load_state_dict(ckpt["model"], strict=True)
        refresh_masked_weights(unwrap(net))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if ckpt.get(name) is None:
            raise ValueError(f"checkpoint {path} holds no {name} state (kind "
                             f"{ckpt.get('kind')!r}); resume from a full 'last' checkpoint")
        obj.load_state_dict(ckpt[name])
    if restore_rng:
        rng = ckpt.get("rng")
        if rng is None:
            raise ValueError(f"checkpoint {path} holds no RNG state; cannot resume exactly")
        if isinstance(rng, list):
            if rank >= len(rng):
                raise ValueError(f"checkpoint {path} holds RNG states for {len(rng)} processes, "
                                 f"this is rank {rank}: resume with the same number of processes")
            rng = rng[rank]
        set_rng_state(rng)
    return ckpt
