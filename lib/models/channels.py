"""Per-layer channel counts of a network, so a structurally pruned one rebuilds without pickle.

A structurally pruned network (channels removed, e.g. by :mod:`lib.pruning.structured`) no
longer matches what ``architecture()`` alone builds. :func:`channel_spec` records the width of
every Conv2d, Linear and BatchNorm2d; ``architecture()`` + :func:`channel_spec` +
``state_dict()`` rebuild it exactly (:func:`build_structured`). The edge artifact of
:mod:`lib.export` stores exactly that.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .contract import MultiTaskModel, architecture_of, build_model

# spec kind -> layer type; a kind is only recorded when the network has such a layer.
LAYER_KINDS = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "linear": nn.Linear}


def channel_spec(net: nn.Module) -> dict[str, dict[str, Any]]:
    """``{"conv": {name: [out, in]}, "bn": {name: num_features}}``, plus ``"linear": {name:
    [out, in]}`` when the network has Linear layers."""
    spec: dict[str, dict[str, Any]] = {"conv": {}, "bn": {}}
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):   # int(): a model may count channels in numpy ints
            spec["conv"][name] = [int(module.out_channels), int(module.in_channels)]
        elif isinstance(module, nn.BatchNorm2d):
            spec["bn"][name] = int(module.num_features)
        elif isinstance(module, nn.Linear):
            spec.setdefault("linear", {})[name] = [int(module.out_features),
                                                   int(module.in_features)]
    return spec


def changed_channels(net: nn.Module) -> dict[str, dict[str, Any]] | None:
    """``channel_spec(net)`` when it differs from what ``net.architecture()`` builds (channels
    were removed), else None: what a file needs besides the architecture to rebuild ``net``."""
    record = architecture_of(net)
    if record is None:
        return None
    spec = channel_spec(net)
    built = build_without_weights(record, source=f"{type(net).__name__}.architecture()")
    return None if spec == channel_spec(built) else spec


def apply_channel_spec(net: nn.Module, spec: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Resize ``net``'s layers in place to ``spec`` (fresh weights where a layer changes).

    Every layer named in ``spec`` must exist with the same type; layers whose counts already
    match are kept as they are.
    """
    unknown = sorted(set(spec) - set(LAYER_KINDS))
    if unknown:
        raise KeyError(f"channel spec kinds {unknown} are not among {sorted(LAYER_KINDS)}")
    for kind, layer_type in LAYER_KINDS.items():
        for name, counts in dict(spec.get(kind, {})).items():
            try:
                old = net.get_submodule(name)
            except AttributeError:
                raise KeyError(f"layer {name!r} of the channel spec is not in this network") from None
            if not isinstance(old, layer_type):
                raise TypeError(f"layer {name!r} is {type(old).__name__}, spec says {layer_type.__name__}")
            new = _resized(old, counts)
            if new is not old:
                parent_name, _, attr = name.rpartition(".")
                setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
    return net


def _resized(old: nn.Module, counts: Any) -> nn.Module:
    if isinstance(old, (nn.Conv2d, nn.Linear)):
        out_c, in_c = (int(c) for c in counts)
        if isinstance(old, nn.Linear):
            if (out_c, in_c) == (old.out_features, old.in_features):
                return old
            if out_c < 1 or in_c < 1:
                raise ValueError(f"cannot resize {old} to out={out_c}, in={in_c}")
            return nn.Linear(in_c, out_c, bias=old.bias is not None)
        if (out_c, in_c) == (old.out_channels, old.in_channels):
            return old
        if out_c < 1 or in_c < 1 or old.groups != 1:
            raise ValueError(f"cannot resize {old} to out={out_c}, in={in_c}")
        return nn.Conv2d(in_c, out_c, old.kernel_size, old.stride, old.padding, old.dilation,
                         bias=old.bias is not None, padding_mode=old.padding_mode)
    num = int(counts)
    if num == old.num_features:
        return old
    if num < 1:
        raise ValueError(f"cannot resize {old} to {num} features")
    return nn.BatchNorm2d(num, old.eps, old.momentum, old.affine, old.track_running_stats)


def build_without_weights(architecture: Mapping[str, Any],
                          spec: Mapping[str, Mapping[str, Any]] | None = None,
                          source: str = "architecture") -> MultiTaskModel:
    """:func:`build_structured` without weights, for its layer shapes: on the ``meta`` device
    (no memory, however large the record), or on the CPU for a model whose constructor
    cannot run there (one that calls ``.to()`` or reads tensor values). Errors as
    :func:`build_structured`'s, naming ``source``."""
    try:
        with torch.device("meta"):
            return build_structured(architecture, spec, source=source)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        if "meta" not in str(exc):   # a bad record: no real build of it
            raise
        return build_structured(architecture, spec, source=source)


def build_structured(architecture: Mapping[str, Any],
                     spec: Mapping[str, Mapping[str, Any]] | None = None,
                     state_dict: Mapping[str, torch.Tensor] | None = None,
                     source: str = "architecture") -> MultiTaskModel:
    """Rebuild a (structurally pruned) network from its architecture, channel spec (None: as
    the architecture builds it) and weights; one-line ValueErrors name ``source``."""
    net = build_model(architecture, source)
    if spec:
        try:
            apply_channel_spec(net, spec)
        except (KeyError, TypeError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ValueError(f"{source}: bad per-layer channel counts: {message}") from None
    if state_dict is not None:
        net.load_state_dict(dict(state_dict), strict=True)
    return net
