"""Reading base checkpoints and writing / reading pruned compact networks.

A pruned checkpoint is two files with the same stem:
- ``NAME.pth``: the plain ``state_dict`` with ``weight_orig``/``weight_mask`` keys (what the
  reference's loading code reads after ``prune.identity`` on every Conv2d/Linear);
- ``NAME.json``: ``{"architecture": net.architecture(), "meta": {...}, "sparsity": {...}}``,
  enough to rebuild the compact network without knowing how it was made.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from lib.models import SceneNet, build_model, check_scene_net, prunable_modules
from lib.utils import atomic_torch_save, atomic_write_text, safe_torch_load

from .masks import install_masks, refresh_masked_weights
from .sparsity import sparsity_report


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_pruned(net: SceneNet, path: str | os.PathLike, meta: Mapping[str, Any] | None = None,
                full_net: SceneNet | None = None) -> Path:
    """Write ``net``'s state dict to ``path`` and its JSON sidecar, both atomically.

    ``meta`` is merged over ``net.pruning_meta`` (set by :func:`lib.pruning.prune`). The sidecar
    also holds the sparsity report (with the reference's figure when ``full_net`` is given).
    """
    check_scene_net(net)
    path = Path(path)
    if path.suffix != ".pth":
        raise ValueError(f"pruned checkpoint path must end in .pth, got {path}")
    info = {**(getattr(net, "pruning_meta", None) or {}), **dict(meta or {})}
    report = sparsity_report(net, full_net)
    sidecar = {"architecture": net.architecture(), "meta": info,
               "sparsity": {k: v for k, v in report.items() if k != "layers"},
               "layer_sparsity": {n: v["sparsity"] for n, v in report["layers"].items()}}
    try:  # serialise first: a bad meta value fails before anything is written
        text = json.dumps(sidecar, indent=2) + "\n"
    except TypeError as exc:
        raise ValueError(f"meta for {path.name} is not JSON-serialisable: {exc}") from None
    atomic_torch_save(net.state_dict(), path)
    atomic_write_text(text, sidecar_path(path))
    return path


def load_pruned(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                ) -> tuple[SceneNet, dict]:
    """Rebuild a compact network saved by :func:`save_pruned`; returns ``(net, meta)``.

    The network gets masks on exactly the layers the checkpoint has masks for, and the state
    dict loads strictly, so outputs are identical to the saved network's.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side} not found: a pruned checkpoint needs its JSON sidecar "
                                f"(architecture) next to {path.name}")
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
        arch = sidecar["architecture"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{side} is not a pruned-checkpoint sidecar ({exc})") from None
    state = safe_torch_load(path, map_location)
    net = build_model(arch, str(side))
    masked = {n: torch.ones_like(m.weight, dtype=torch.bool)
              for n, m in prunable_modules(net).items() if f"{n}.weight_mask" in state}
    install_masks(net, masked, fill=False)
    _load_strict(net, state, path)
    refresh_masked_weights(net)   # .weight is exact before the first forward too
    meta = dict(sidecar.get("meta", {}))
    net.pruning_meta = meta
    return net, meta


def unwrap_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from ``obj``: itself, or its ``"state_dict"``/``"model"`` entry; a
    uniform ``module.`` prefix (DataParallel) is stripped."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (nor a {{'state_dict'|'model': ...}} "
                         f"wrapper of one)")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_strict(net: SceneNet, state: Mapping[str, torch.Tensor], path) -> None:
    expected = set(net.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        def show(keys):
            return f"{keys[:3]}{f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''}"
        raise ValueError(f"{path} does not match the network: missing keys {show(missing)}, "
                         f"unexpected keys {show(unexpected)}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"{path} does not match the network: {detail[:300]}") from None


def load_base_model(path: str | os.PathLike, cfg, map_location: str | torch.device = "cpu"
                    ) -> SceneNet:
    """Read a dense (reference) checkpoint strictly into ``SceneNet.from_config(cfg)``.

    Accepts a plain state dict or a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper; keys
    that differ from the network's give a one-line error naming them.
    """
    state = unwrap_state_dict(safe_torch_load(path, map_location), path)
    if any(k.endswith(".weight_orig") for k in state):
        raise ValueError(f"{path} is a pruned checkpoint (weight_orig/weight_mask keys); read it "
                         f"with lib.pruning.load_pruned")
    net = SceneNet.from_config(cfg)
    _load_strict(net, state, path)
    return net


def pruned_filename(method: str, tasks, sparsity: float | None = None,
                    keep_ratio: float | None = None) -> str:
    """``{method}_{sparsity}_{task-task}.pth`` (``{method}_keep{ratio}_...`` for a keep ratio)."""
    if sparsity is not None:
        tag = f"{sparsity:g}"
    elif keep_ratio is not None:
        tag = f"keep{keep_ratio:g}"
    else:
        raise ValueError("pruned_filename needs sparsity or keep_ratio")
    return f"{method}_{tag}_{'-'.join(tasks)}.pth"


def save_initial_model(cfg, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save the state dict of a freshly initialised ``SceneNet.from_config(cfg)`` (seeded).

    For pipelines that must run before any base model is trained (CI's fast mode): the
    result is an untrained *stand-in*, never a substitute for a real base checkpoint.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SceneNet.from_config(cfg)
    return atomic_torch_save(net.state_dict(), path)


def reference_state_dict(net: SceneNet, full_net: SceneNet) -> dict[str, torch.Tensor]:
    """``net``'s state dict completed to the full network's keys, for the original code.

    The reference's fine-tuning notebook builds the *full* SceneNet, puts ``prune.identity`` on
    every Conv2d/Linear and loads strictly; a compact checkpoint lacks the removed heads. This
    adds them from ``full_net`` as they are (dense weights, all-ones masks), so the result
    loads there strictly; their losses are dropped during the reference's fine-tuning anyway.
    """
    check_scene_net(net)
    check_scene_net(full_net)
    missing = [t for t in net.task_ids if t not in full_net.task_ids]
    if missing:
        raise ValueError(f"full_net has no head(s) {missing}; it is not the network "
                         f"{net.task_ids} was cut from")
    state = dict(net.state_dict())
    layers = prunable_modules(full_net)
    for key, value in full_net.state_dict().items():
        module_name, _, attr = key.rpartition(".")
        head_id = int(key[4:key.index("_")]) if key.startswith("task") else None
        if head_id is None or head_id in net.task_ids:
            continue
        if module_name in layers and attr == "weight":
            state[f"{module_name}.weight_orig"] = value.clone()
            state[f"{module_name}.weight_mask"] = torch.ones_like(value)
        else:
            state[key] = value.clone()
    return state
