"""Every file this workspace writes or reads a network from, and the one way to load them.

Files:
- a *plain state dict* ``X.pth`` (``base_model.pth``, the reference's checkpoints; a
  ``{"state_dict"|"model": ...}`` wrapper and DataParallel's ``module.`` prefix are accepted);
- a *pruned / fine-tuned model* ``X.pth`` + its JSON *sidecar* ``X.json`` (``{"architecture",
  "meta", "sparsity", "layer_sparsity"}``, and ``"channels"`` for a structurally pruned
  network): the state dict holds ``weight_orig``/``weight_mask`` for masked layers, which is
  what the reference's loading code reads after ``prune.identity``;
- a *training checkpoint* (``last.pth``/``best.pth``): a plain dict of tensors and primitives
  with ``"format": "cut-training-checkpoint"``, the model's state dict and architecture, and
  (``last``) everything needed to resume exactly (optimiser, scheduler, scaler, RNG, data).

Everything is read with ``weights_only=True`` (:func:`lib.utils.safe_torch_load`): a file that
would need arbitrary unpickling is refused, never executed. :func:`load_network` rebuilds a
network from any of them (architecture from the checkpoint, its sidecar or a config, without
pickle), masks included. Before anything is loaded (one-line ValueErrors naming the file and
the tensor, key or layer):

- the architecture record is checked against the task table (a ``depth`` head has 1 channel,
  ``sn`` 3, ...) and the network it describes is built on the ``meta`` device and compared
  key by key, shape by shape, with the state dict (so an edited record never allocates a
  network of another size, and a head never carries another task's name);
- every floating-point tensor must be finite; every ``*_mask`` must be binary (0/1) and shaped
  like its ``*_orig``;
- a sidecar's record is compared with the file: the task selection, each layer's share of zero
  weights and (files written by this version) each mask's kept count, with pruned weights
  stored as exact zeros under a 0 mask (:func:`check_sidecar`), so a mask edited to ones
  cannot bring pruned weights back and a sidecar never describes another file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from lib.masks import (count_zeros, install_masks_for_state, layer_weights, masked_modules,
                       masks_of, refresh_masked_weights, sparsity_report)
from lib.models.channels import build_structured, build_without_weights, changed_channels
from lib.models.contract import (LEGACY_MODEL, MultiTaskModel, architecture_of,
                                 model_from_config, model_name, prunable_layers)
from lib.tasks import TASKS
from lib.utils import (atomic_torch_save, atomic_write_text, check_finite_tensors, plain_json,
                       rng_state, safe_torch_load, set_rng_state)

CHECKPOINT_FORMAT = "cut-training-checkpoint"
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------- paths
def pruned_filename(method: str, tasks: Sequence[str], sparsity: float | None = None,
                    keep_ratio: float | None = None) -> str:
    """``{method}_{sparsity}_{task-task}.pth`` (``{method}_keep{ratio}_...`` for a keep ratio)."""
    if sparsity is not None:
        tag = f"{sparsity:g}"
    elif keep_ratio is not None:
        tag = f"keep{keep_ratio:g}"
    else:
        raise ValueError("pruned_filename needs sparsity or keep_ratio")
    return f"{method}_{tag}_{'-'.join(tasks)}.pth"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the JSON sidecar of ``path`` is written: ``X.json`` beside ``X.pth``."""
    return Path(path).with_suffix(".json")


def find_sidecar(path: str | os.PathLike) -> Path | None:
    """The existing sidecar of ``path`` (``X.json``, else ``X.pth.json``), or None."""
    for candidate in (sidecar_path(path), Path(f"{path}.json")):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object of a sidecar (or architecture) file; one-line errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"sidecar {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"sidecar {path} holds {type(data).__name__}, expected a JSON object")
    return dict(data)


def read_architecture(path: str | os.PathLike) -> tuple[dict[str, Any], dict | None]:
    """What rebuilds the network of a sidecar: its architecture record (the ``"architecture"``
    entry, or the whole JSON when the file is a bare ``net.architecture()`` record) and its
    channel spec (``"channels"``; None unless channels were removed)."""
    return architecture_in(read_sidecar(path), path)


def architecture_in(data: Mapping[str, Any], path: str | os.PathLike
                    ) -> tuple[dict[str, Any], dict | None]:
    """:func:`read_architecture` of a sidecar's JSON object ``data`` read from ``path``."""
    arch = data.get("architecture", data)
    if not isinstance(arch, Mapping) or not arch or (arch is data and "meta" in data):
        raise ValueError(f"sidecar {path} holds no architecture record (expected an "
                         f"'architecture' entry written by net.architecture())")
    channels = data.get("channels") if arch is not data else None
    return dict(arch), channels


# ----------------------------------------------------------------------------- state dicts
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


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel (or ``net`` itself)."""
    return net.module if hasattr(net, "module") and isinstance(net.module, nn.Module) else net


def _show(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{items[:limit]}{more}"


def check_state_fits(net: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                     tasks: list[str] | None = None) -> None:
    """Raise a one-line ValueError unless ``state`` loads strictly into ``net``: same tasks (when
    ``tasks`` is given), same keys, same shapes; the differences are named."""
    check_shapes_fit(net, {k: tuple(v.shape) for k, v in state.items()}, source, tasks)


def check_shapes_fit(net: nn.Module, shapes: Mapping[str, Sequence[int]], source: str,
                     tasks: list[str] | None = None) -> None:
    """:func:`check_state_fits` for ``{key: shape}`` (a state dict not read yet, e.g. an
    artifact's manifest); the first differing keys are named."""
    model = unwrap(net)
    net_tasks = getattr(model, "tasks", None)
    if tasks is not None and net_tasks is not None and list(tasks) != list(net_tasks):
        raise ValueError(f"checkpoint {source} was trained for tasks {list(tasks)} but the "
                         f"network has tasks {list(net_tasks)}")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = {k: tuple(v) for k, v in shapes.items()}
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    mismatched = [f"{k} {shapes[k]} vs {own[k]}" for k in own if k in shapes and shapes[k] != own[k]]
    problems = []
    if missing or unexpected:
        problems.append(f"missing keys {_show(missing)}, unexpected keys {_show(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs network) {_show(mismatched)}")
    if problems:
        raise ValueError(f"{source} does not match the network (different architecture or task "
                         f"list): {'; '.join(problems)}")


def check_state_values(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line ValueError naming the tensor unless every floating-point tensor of
    ``state`` is finite and every prune mask (``X_mask`` beside ``X_orig``) is binary and shaped
    like ``X_orig``: a 0.25 mask would scale weights, a NaN would pass for a result."""
    check_finite_tensors(state, source)
    for key, mask in state.items():
        orig = state.get(f"{key[:-len('_mask')]}_orig") if key.endswith("_mask") else None
        if orig is None:
            continue
        if tuple(mask.shape) != tuple(orig.shape):
            raise ValueError(f"{source}: mask {key!r} has shape {tuple(mask.shape)} but its "
                             f"weights have {tuple(orig.shape)}; a mask must match its weight")
        binary = (mask == 0) | (mask == 1)
        if not bool(binary.all()):
            odd = torch.unique(mask[~binary].float())[:4].tolist()
            raise ValueError(f"{source}: mask {key!r} is not binary: it holds "
                             f"{int((~binary).sum())} value(s) other than 0 and 1 (e.g. "
                             f"{', '.join(f'{v:g}' for v in odd)}); masks keep (1) or prune (0)")


def check_task_channels(architecture: Mapping[str, Any], source: str) -> None:
    """Raise a one-line ValueError when a record's ``tasks`` / ``tasks_num_class`` give a task of
    the task table another number of output channels than its head has (``depth`` 1, ``sn`` 3,
    ``keypoint`` / ``edge`` 1): a record whose task names were swapped would label one head
    with another task's name."""
    tasks, counts = architecture.get("tasks"), architecture.get("tasks_num_class")
    if not (isinstance(tasks, list) and isinstance(counts, list) and len(tasks) == len(counts)):
        return
    for task, count in zip(tasks, counts):
        spec = TASKS.get(task) if isinstance(task, str) else None
        if spec is not None and spec.channels is not None and count != spec.channels:
            raise ValueError(f"{source}: the architecture gives task {task!r} a head of {count} "
                             f"output channel(s), but a {task} head has {spec.channels} (tasks "
                             f"{tasks} vs channels {counts}: task names and heads do not match)")


def check_record_fits(architecture: Mapping[str, Any], channels: Mapping[str, Any] | None,
                      shapes: Mapping[str, Sequence[int]], source: str) -> None:
    """Check an architecture record (and channel spec) against the tensors of a file before
    anything real is built: :func:`check_task_channels`, then the network is built without
    weights (``lib.models.build_without_weights``: on the ``meta`` device, no memory however
    large the record says it is), given the prune masks ``shapes``' keys name, and compared
    key by key and shape by shape (:func:`check_shapes_fit`)."""
    check_task_channels(architecture, source)
    net = build_without_weights(architecture, channels, source=source)
    try:
        install_masks_for_state(net, shapes.keys())   # masks go where the weights are
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    check_shapes_fit(net, shapes, source)


def load_state(net: nn.Module, state: Mapping[str, torch.Tensor], source: str,
               tasks: list[str] | None = None) -> nn.Module:
    """Load ``state`` strictly into ``net`` after :func:`check_state_fits` and
    :func:`check_state_values` (nothing is loaded when either fails); masked weights are
    recomputed at once. Returns ``net``."""
    check_state_fits(net, state, source, tasks)
    check_state_values(state, source)
    unwrap(net).load_state_dict(dict(state), strict=True)
    refresh_masked_weights(unwrap(net))
    return net


def net_from_state(state: Mapping[str, torch.Tensor], architecture: Mapping[str, Any],
                   source: str = "state dict",
                   channels: Mapping[str, Any] | None = None) -> MultiTaskModel:
    """The registered network ``architecture`` describes (resized to ``channels``, a
    :func:`lib.models.channel_spec`, when given), with ``state`` loaded strictly.

    Keys ``X.weight_orig`` / ``X.weight_mask`` become a prune mask on ``X`` first, so a masked
    state dict gives the same masked network; one without them gives a plain one. The record
    is checked against ``state`` first (:func:`check_record_fits`), then the values
    (:func:`load_state`).
    """
    check_record_fits(architecture, channels, {k: tuple(v.shape) for k, v in state.items()},
                      source)
    net = build_structured(architecture, channels, source=source)
    install_masks_for_state(net, state.keys())
    return load_state(net, state, source)


# ----------------------------------------------------------------------------- sidecar record
# A layer's share of zero weights is recomputed from the same tensors the sidecar's figure was
# computed from; the tolerance only absorbs a JSON round trip.
_PERCENT_TOLERANCE = 1e-9


def sidecar_record(net: MultiTaskModel, full_net: MultiTaskModel | None = None
                   ) -> dict[str, Any]:
    """What a sidecar records about the file beside it: the sparsity report (with the
    reference's figure when ``full_net`` is given), each layer's share of zero weights and
    each mask's kept count (what :func:`check_sidecar` compares on every load)."""
    report = sparsity_report(net, full_net)
    return {"sparsity": {k: v for k, v in report.items() if k != "layers"},
            "layer_sparsity": {n: v["sparsity"] for n, v in report["layers"].items()},
            "mask_kept": {n: int(m.sum()) for n, m in masks_of(net).items()}}


def check_sidecar(net: MultiTaskModel, record: Mapping[str, Any], side: str | os.PathLike,
                  source: str) -> None:
    """Raise a one-line ValueError when the network read from ``source`` is not the one its
    sidecar ``side`` recorded: another task selection (``meta.selected_tasks``), another share
    of zero weights in a layer (``layer_sparsity``: a mask edited, pruned weights revived, the
    sidecar of another file), another kept count per mask (``mask_kept``), or a pruned weight
    not stored as 0 under its 0 mask (files whose sidecar has ``mask_kept``: written by
    :func:`save_pruned`, which stores them so). Records lacking an entry skip its check."""
    where = f"{source} and its sidecar {side}"
    selected = (record.get("meta") or {}).get("selected_tasks")
    if isinstance(selected, list) and list(selected) != list(getattr(net, "tasks", selected)):
        raise ValueError(f"{where} do not match: the sidecar records the task selection "
                         f"{selected}, the network has tasks {list(net.tasks)}")
    recorded = record.get("layer_sparsity")
    if isinstance(recorded, Mapping):
        found = {n: count_zeros({n: w})["sparsity"] for n, w in layer_weights(net).items()}
        if set(recorded) != set(found):
            extra, lacking = sorted(set(recorded) - set(found)), sorted(set(found) - set(recorded))
            raise ValueError(f"{where} do not match: layers {_show(extra)} are recorded but "
                             f"not in the network, {_show(lacking)} are in the network but "
                             f"not recorded")
        for name, value in found.items():
            if not isinstance(recorded[name], (int, float)) or \
                    abs(float(recorded[name]) - value) > _PERCENT_TOLERANCE:
                raise ValueError(f"{where} do not match: layer {name} has {value:.6g}% zero "
                                 f"weights, the sidecar records {recorded[name]}% (a mask or "
                                 f"weight was changed, or the sidecar belongs to another file)")
    kept = record.get("mask_kept")
    if isinstance(kept, Mapping):
        masks = masks_of(net)
        if set(kept) != set(masks):
            raise ValueError(f"{where} do not match: the sidecar records masks on "
                             f"{_show(sorted(kept))}, the file has masks on "
                             f"{_show(sorted(masks))}")
        for name, mask in masks.items():
            if kept[name] != int(mask.sum()):
                raise ValueError(f"{where} do not match: mask of layer {name} keeps "
                                 f"{int(mask.sum())} weights, the sidecar records {kept[name]}")
        for name, module in masked_modules(net).items():
            if bool((module.weight_orig.detach()[module.weight_mask == 0] != 0).any()):
                raise ValueError(f"{source}: layer {name} stores non-zero weights under its 0 "
                                 f"mask; a pruned model file stores pruned weights as 0 (see "
                                 f"lib.checkpoints.save_pruned)")


# ----------------------------------------------------------------------------- read / load
def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a training checkpoint or a (wrapped) state dict safely, always in the checkpoint
    form; a state dict becomes ``{"model": state_dict, "kind": "state_dict", ...}``."""
    obj = safe_torch_load(path, map_location)
    if is_training_checkpoint(obj):
        obj["source"] = str(path)
        return obj
    try:
        state = unwrap_state_dict(obj, path)
    except ValueError:
        raise ValueError(f"checkpoint {path} is neither a training checkpoint nor a state dict "
                         f"(got {type(obj).__name__})") from None
    return {"format": None, "kind": "state_dict", "model": state, "iteration": None,
            "tasks": None, "architecture": None, "source": str(path)}


def architecture_for(path: str | os.PathLike, ckpt: Mapping[str, Any],
                     cfg=None) -> tuple[dict, dict | None]:
    """The architecture record of ``path`` and its channel spec (None unless channels were
    removed): inside the checkpoint, in its sidecar, else the network ``cfg`` describes."""
    if ckpt.get("architecture"):
        return dict(ckpt["architecture"]), ckpt.get("channels")
    side = find_sidecar(path)
    if side is not None:
        return read_architecture(side)
    if cfg is None:
        raise ValueError(f"{path} holds no architecture and has no sidecar "
                         f"{sidecar_path(path).name}: pass the config it was trained with")
    return model_from_config(cfg).architecture(), None


def load_network(path: str | os.PathLike, cfg=None, *, sidecar: str | os.PathLike | None = None,
                 architecture: Mapping | None = None, channels: Mapping | None = None,
                 map_location: str | torch.device = "cpu") -> MultiTaskModel:
    """A network with the architecture, masks and weights of any file this workspace writes.

    The architecture (and channel spec of a structurally pruned network) is ``architecture``
    (``channels``) if given, else the one in ``sidecar`` (a JSON file) if given, else the
    checkpoint's, its sidecar's (``X.json`` / ``X.pth.json``), or (a plain reference state
    dict) the one ``cfg`` describes. A record without task names (written before SceneNet had
    them) takes ``cfg.TASKS`` when they align. Every check of this module's docstring is made
    before anything is loaded; a sidecar the architecture was read from is then compared with
    the file (:func:`check_sidecar`).
    """
    ckpt = read_checkpoint(path, map_location)
    source = f"checkpoint {path}"
    record = side = None
    if architecture is not None:
        arch = dict(architecture)
    else:
        if sidecar is not None:
            side = Path(sidecar)
        elif not ckpt.get("architecture"):
            side = find_sidecar(path)
        if side is not None:
            record = read_sidecar(side)
            arch, channels = architecture_in(record, side)
        else:
            arch, channels = architecture_for(path, ckpt, cfg)
    if arch.get("tasks") is None and cfg is not None:
        unnamed = build_without_weights(arch, source=source)
        if len(unnamed.tasks) == len(cfg.TASKS):
            arch = {**arch, "tasks": list(cfg.TASKS)}
    net = net_from_state(ckpt["model"], arch, source, channels)
    if record is not None:
        check_sidecar(net, record, side, source)
    return net


def load_pruned(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                ) -> tuple[MultiTaskModel, dict]:
    """A pruned / fine-tuned model written by :func:`save_pruned`, and its sidecar's ``meta``.

    The network gets masks on exactly the layers the checkpoint has masks for; outputs are
    identical to the saved network's. The sidecar is checked against the file
    (:func:`check_sidecar`).
    """
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side} not found: a pruned checkpoint needs its JSON sidecar "
                                f"(architecture) next to {Path(path).name}")
    net = load_network(path, sidecar=side, map_location=map_location)
    return net, dict(read_sidecar(side).get("meta", {}))


def load_base_model(path: str | os.PathLike, cfg=None, net: nn.Module | None = None,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Read a dense (reference) checkpoint strictly into ``net``, or into the network ``cfg``
    describes (``lib.models.model_from_config``). Masked checkpoints are refused."""
    state = unwrap_state_dict(safe_torch_load(path, map_location), path)
    if any(k.endswith(".weight_orig") for k in state):
        raise ValueError(f"{path} is a pruned checkpoint (weight_orig/weight_mask keys); read it "
                         f"with lib.pruning.load_pruned")
    if net is None:
        if cfg is None:
            raise ValueError("load_base_model needs the config or the network to load into")
        _check_recorded_model(path, cfg)
        net = model_from_config(cfg)
    return load_state(net, state, str(path))


def _check_recorded_model(path: str | os.PathLike, cfg) -> None:
    """A one-line ValueError when ``path``'s sidecar records a network of another registered
    model than ``cfg.MODEL`` (a base trained with ``--set MODEL=...``), naming the fix."""
    side = find_sidecar(path)
    record = read_sidecar(side).get("architecture") if side is not None else None
    if not isinstance(record, Mapping):
        return
    recorded, configured = model_name(record), str(getattr(cfg, "MODEL", LEGACY_MODEL))
    if recorded != configured:
        raise ValueError(f"{path} holds a {recorded} network (recorded in {side}) but the "
                         f"config builds {configured}; give --set MODEL={recorded} (or "
                         f"MODEL={recorded!r} to load_config)")


def load_checkpoint(path: str | os.PathLike | Mapping[str, Any], net: nn.Module | None = None, *,
                    optimizer=None, scheduler=None, scaler=None, restore_rng: bool = False,
                    rank: int = 0) -> dict[str, Any]:
    """Load a checkpoint into whatever is given; return the checkpoint dict.

    ``path`` may also be a dict :func:`read_checkpoint` returned (to avoid reading twice). The
    network must match exactly (same tasks, keys and shapes) or a one-line ValueError names the
    differences; nothing is loaded in that case. ``restore_rng`` restores the RNG states saved
    for ``rank`` (a per-rank list under DDP).
    """
    ckpt = read_checkpoint(path) if not isinstance(path, Mapping) else path
    path = ckpt.get("source", path) if isinstance(path, Mapping) else path
    if net is not None:
        load_state(net, ckpt["model"], f"checkpoint {path}", ckpt.get("tasks"))
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


# ----------------------------------------------------------------------------- save
def save_checkpoint(path: str | os.PathLike, net: nn.Module, *, optimizer=None, scheduler=None,
                    scaler=None, iteration: int = 0, config: Mapping[str, Any] | None = None,
                    rng: Any = None, data_state: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None, kind: str = "last") -> Path:
    """Write a training checkpoint atomically (temporary file, then rename); returns its path.

    ``rng`` defaults to this process's :func:`lib.utils.rng_state`; pass a list (one state per
    rank) under DistributedDataParallel. ``extra`` holds further primitive bookkeeping
    (history, hyper-parameters, selection record).
    """
    model = unwrap(net)
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "iteration": int(iteration),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "architecture": architecture_of(model),
        **({"channels": spec} if (spec := changed_channels(model)) else {}),
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


def save_pruned(net: MultiTaskModel, path: str | os.PathLike,
                meta: Mapping[str, Any] | None = None,
                full_net: MultiTaskModel | None = None) -> Path:
    """Write ``net``'s state dict to ``path`` (``.pth``) and its JSON sidecar, both atomically.

    The sidecar holds ``net.architecture()`` (and the channel spec when channels were
    removed), ``meta`` (e.g. a :class:`lib.pruning.PruneResult`'s ``meta``) and
    :func:`sidecar_record` (the sparsity report, with the reference's figure when ``full_net``
    is given; each layer's zero share and each mask's kept count). Pruned weights are stored as
    exact zeros (``weight_orig`` is 0 wherever ``weight_mask`` is 0: the weights the forward
    pass uses, and what the reference's code reads, are unchanged), so no later change to a
    mask can bring them back. A non-finite weight or a bad ``meta`` value fails before anything
    is written.
    """
    path = Path(path)
    if path.suffix != ".pth":
        raise ValueError(f"pruned checkpoint path must end in .pth, got {path}")
    state = net.state_dict()
    check_finite_tensors(state, f"network to save as {path}")
    for name, module in masked_modules(net).items():
        state[f"{name}.weight_orig"] = (module.weight_orig * module.weight_mask).detach()
    text = sidecar_text(net, path, meta, full_net)
    atomic_torch_save(state, path)
    atomic_write_text(text, sidecar_path(path))
    return path


def sidecar_text(net: MultiTaskModel, path: str | os.PathLike,
                 meta: Mapping[str, Any] | None = None,
                 full_net: MultiTaskModel | None = None) -> str:
    """The JSON sidecar of ``net`` saved at ``path``: its architecture (and channel spec),
    ``meta`` and :func:`sidecar_record`; a ValueError naming the file for a ``meta`` value
    JSON cannot hold."""
    channels = changed_channels(net)
    sidecar = {"architecture": plain_json(net.architecture()),
               **({"channels": channels} if channels else {}),
               "meta": dict(meta or {}), **sidecar_record(net, full_net)}
    try:
        return json.dumps(sidecar, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta for {Path(path).name} is not JSON-serialisable: {exc}") from None


def write_sidecar(net: MultiTaskModel, path: str | os.PathLike,
                  meta: Mapping[str, Any] | None = None) -> Path:
    """Write (atomically) the sidecar of the file ``path`` already holding ``net``'s weights
    (e.g. a trained ``base_model.pth``), so that later commands read its architecture and the
    settings ``meta`` records; returns the sidecar's path."""
    side = sidecar_path(path)
    atomic_write_text(sidecar_text(net, path, meta), side)
    return side


def save_initial_model(cfg, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save the state dict of a freshly initialised network of ``cfg`` (seeded).

    For pipelines that must run before any base model is trained (CI's fast mode): the
    result is an untrained *stand-in*, never a substitute for a real base checkpoint.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = model_from_config(cfg)
    return atomic_torch_save(net.state_dict(), path)


def reference_state_dict(net: MultiTaskModel, full_net: MultiTaskModel) -> dict[str, torch.Tensor]:
    """``net``'s state dict completed to the full network's keys, for the original code.

    The reference's fine-tuning notebook builds the *full* network, puts ``prune.identity`` on
    every Conv2d/Linear and loads strictly; a compact checkpoint lacks the removed tasks'
    modules. This adds them from ``full_net`` as they are (dense weights, all-ones masks), so the
    result loads there strictly; their losses are dropped during the reference's fine-tuning.
    """
    missing = [t for t in net.tasks if t not in full_net.tasks]
    if missing:
        raise ValueError(f"full_net has no task(s) {missing}; it is not the network with "
                         f"tasks {net.tasks} was cut from")
    state = dict(net.state_dict())
    held = {k[: -len("_orig")] if k.endswith("_orig") else k for k in state
            if not k.endswith("_mask")}
    layers = prunable_layers(full_net)
    for key, value in full_net.state_dict().items():
        if key in held:
            continue
        module_name, _, attr = key.rpartition(".")
        if module_name in layers and attr == "weight":
            state[f"{module_name}.weight_orig"] = value.clone()
            state[f"{module_name}.weight_mask"] = torch.ones_like(value)
        else:
            state[key] = value.clone()
    return state
