"""Compact edge artifact: only the network's own tensors, masked weights sparse-encoded.

``save_artifact(net, path)`` writes a :mod:`lib.export.container` file holding

- the network's architecture (``net.architecture()`` of any registered
  :class:`~lib.models.MultiTaskModel`) and its per-layer channel counts (so structurally
  pruned networks rebuild too, see :mod:`lib.models.channels`);
- every tensor of the *effective* state dict (``orig * mask`` for tensors with a prune hook),
  under the plain keys: a masked tensor as its mask (packed 1-bit bitmask or delta-coded kept
  indices, whichever compresses smaller) plus its kept values; any other tensor (biases, BN
  parameters and buffers, unmasked weights) as it is.

``load_artifact(path)`` rebuilds the plain network (no prune hooks) from the file alone, through
the model registry (:func:`lib.models.build_model`). With ``dtype="float32"`` the round trip is lossless (``torch.equal`` on every tensor,
identical outputs); ``dtype="float16"`` halves the value bytes and is lossy (report its error
separately, e.g. with :func:`max_output_difference`).

Reading checks, in order, before any tensor is decoded: the container (magic, version,
lengths, the manifest's CRC-32), the manifest against :data:`MANIFEST_SCHEMA`, and every
tensor's key and shape against the network its architecture record builds (on the ``meta``
device, :func:`lib.checkpoints.check_record_fits`); then each blob's CRC-32 and size, and
finally that every value is finite. Any failure is one :class:`ArtifactFormatError` naming the
file. Writing refuses a network with a non-finite weight.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lib import __version__
from lib.checkpoints import check_record_fits
from lib.masks import effective_state_dict, prune_masks
from lib.models import MultiTaskModel, build_structured, channel_spec, check_model
from lib.utils import NonFiniteError, atomic_write_bytes, check_finite_tensors, plain_json

from .container import (BLOB_SCHEMA, ArtifactFormatError, ArtifactReader, BlobWriter,
                        check_manifest, compress_best, encode_file)

ARTIFACT_SUFFIX = ".cutedge"
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_TORCH_TO_NAME = {torch.float32: "float32", torch.float16: "float16", torch.float64: "float64",
                  torch.int64: "int64", torch.int32: "int32", torch.uint8: "uint8",
                  torch.bool: "bool"}
_NAME_TO_TORCH = {v: k for k, v in _TORCH_TO_NAME.items()}
MASK_COMPRESSIONS = ("none", "zlib", "lzma")
VALUE_COMPRESSIONS = ("none", "zlib")
ARTIFACT_FORMAT = "cut-edge-artifact"

_COUNT = {"type": "integer", "minimum": 0}
_TENSOR_COMMON = {"key": {"type": "string", "minLength": 1},
                  "shape": {"type": "array", "items": _COUNT},
                  "dtype": {"enum": sorted(_NAME_TO_TORCH)},
                  "stored_dtype": {"enum": sorted(_NAME_TO_TORCH)},
                  "values": BLOB_SCHEMA}
_CHANNEL_PAIRS = {"type": "object", "additionalProperties": {
    "type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}}
# What a float artifact's manifest holds; read_manifest / load_artifact refuse anything else.
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["format", "architecture", "dtype", "tensors", "blob_bytes"],
    "properties": {
        "format": {"const": ARTIFACT_FORMAT},
        "written_by": {"type": "string"},
        "architecture": {"type": "object"},
        "channels": {"oneOf": [{"type": "null"}, {
            "type": "object",
            "properties": {"conv": _CHANNEL_PAIRS, "linear": _CHANNEL_PAIRS,
                           "bn": {"type": "object",
                                  "additionalProperties": {"type": "integer", "minimum": 1}}},
            "additionalProperties": False}]},
        "dtype": {"enum": sorted(STORE_DTYPES)},
        "had_masks": {"type": "boolean"},
        "blob_bytes": _COUNT,
        "tensors": {"type": "array", "items": {
            "type": "object",
            "required": ["key", "shape", "dtype", "stored_dtype", "encoding", "values"],
            "properties": {**_TENSOR_COMMON, "encoding": {"enum": ["dense", "sparse"]}},
            "if": {"properties": {"encoding": {"const": "sparse"}}},
            "then": {"required": ["kept", "mask_codec", "mask"],
                     "properties": {"kept": _COUNT, "mask_codec": {"enum": ["bitmask", "delta"]},
                                    "mask": BLOB_SCHEMA}}}},
    },
}


# ----------------------------------------------------------------------------- mask codecs
def encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """Both codecs of a flat bool mask; returns the one whose best compression is smallest.

    ``bitmask``: ``np.packbits`` (little bit order). ``delta``: gaps between consecutive kept
    indices as uint8, gaps >= 255 escaped to a uint32 side list (header: its count, uint64).
    """
    bitmask = np.packbits(mask, bitorder="little").tobytes()
    kept = np.flatnonzero(mask)
    gaps = np.diff(kept, prepend=-1) - 1
    escaped = gaps >= 255
    delta = (np.array([escaped.sum()], dtype="<u8").tobytes()
             + gaps[escaped].astype("<u4").tobytes()
             + np.minimum(gaps, 255).astype(np.uint8).tobytes())
    sizes = {name: len(compress_best(data, MASK_COMPRESSIONS)[1])
             for name, data in (("bitmask", bitmask), ("delta", delta))}
    return ("bitmask", bitmask) if sizes["bitmask"] <= sizes["delta"] else ("delta", delta)


def decode_mask(codec: str, data: bytes, numel: int, kept: int, where: str) -> np.ndarray:
    """Inverse of :func:`encode_mask`: a flat bool mask of ``numel`` entries with ``kept`` ones."""
    if codec == "bitmask":
        if len(data) != (numel + 7) // 8:
            raise ArtifactFormatError(f"{where}: bitmask has {len(data)} bytes, expected "
                                      f"{(numel + 7) // 8}")
        mask = np.unpackbits(np.frombuffer(data, np.uint8), count=numel,
                             bitorder="little").astype(bool)
    elif codec == "delta":
        if len(data) < 8:
            raise ArtifactFormatError(f"{where}: delta mask shorter than its 8-byte header")
        num_escaped = int(np.frombuffer(data[:8], "<u8")[0])
        body = 8 + 4 * num_escaped
        if len(data) - body != kept:
            raise ArtifactFormatError(f"{where}: delta mask holds {len(data) - body} gaps, "
                                      f"expected {kept}")
        gaps = np.frombuffer(data[body:], np.uint8).astype(np.int64)
        escaped = gaps == 255
        if escaped.sum() != num_escaped:
            raise ArtifactFormatError(f"{where}: delta mask escape count mismatch")
        gaps[escaped] = np.frombuffer(data[8:body], "<u4")
        kept_idx = np.cumsum(gaps + 1) - 1
        if kept and (kept_idx[-1] >= numel):
            raise ArtifactFormatError(f"{where}: delta mask indexes past {numel} entries")
        mask = np.zeros(numel, dtype=bool)
        mask[kept_idx] = True
    else:
        raise ArtifactFormatError(f"{where}: unknown mask codec {codec!r}; expected 'bitmask' "
                                  f"or 'delta'")
    if int(mask.sum()) != kept:
        raise ArtifactFormatError(f"{where}: mask keeps {int(mask.sum())} entries, expected {kept}")
    return mask


# ----------------------------------------------------------------------------- save / load
def save_artifact(net: nn.Module, path: str | os.PathLike, dtype: str = "float32") -> dict[str, Any]:
    """Write ``net`` (a registered MultiTaskModel, masked or not, possibly structurally pruned)
    to ``path``.

    Only the tensors the network holds are stored (a compact network holds its selected heads
    only). Tensors with a ``torch.nn.utils.prune`` mask are stored sparse; a network without any
    mask is stored dense, with a warning saying so. ``dtype`` (``"float32"`` lossless or
    ``"float16"``) is the storage type of floating-point tensors. The file is written
    atomically. Returns a summary whose ``bytes`` is the size of the file written.
    """
    net = check_model(net)
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported; expected one of {sorted(STORE_DTYPES)}")
    check_finite_tensors(net.state_dict(), f"network to export to {path}")
    masks = prune_masks(net)
    if not masks:
        warnings.warn(f"network has no prune masks: exporting it dense to {path} (no sparse "
                      f"encoding; every weight stored)", UserWarning, stacklevel=2)
    state = effective_state_dict(net)
    blobs = BlobWriter()
    entries, totals = [], {"values_total": 0, "values_stored": 0, "mask_bytes": 0,
                           "value_bytes": 0, "sparse_tensors": 0, "dense_tensors": 0}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype not in _TORCH_TO_NAME:
            raise TypeError(f"tensor {key!r} has dtype {tensor.dtype}, which the artifact "
                            f"cannot store; expected one of {sorted(_NAME_TO_TORCH)}")
        stored = STORE_DTYPES[dtype] if tensor.is_floating_point() else tensor.dtype
        entry = {"key": key, "shape": list(tensor.shape), "dtype": _TORCH_TO_NAME[tensor.dtype],
                 "stored_dtype": _TORCH_TO_NAME[stored]}
        flat = tensor.reshape(-1)
        if key in masks:
            mask = masks[key].cpu().reshape(-1).numpy()
            codec, mask_bytes = encode_mask(mask)
            flat = flat[torch.from_numpy(mask)]
            entry.update(encoding="sparse", kept=int(mask.sum()), mask_codec=codec,
                         mask=blobs.add(mask_bytes, MASK_COMPRESSIONS))
            totals["mask_bytes"] += entry["mask"]["length"]
            totals["sparse_tensors"] += 1
        else:
            entry["encoding"] = "dense"
            totals["dense_tensors"] += 1
        values = flat.to(stored).numpy()
        values = values.astype(values.dtype.newbyteorder("<"), copy=False)
        entry["values"] = blobs.add(values.tobytes(), VALUE_COMPRESSIONS)
        totals["value_bytes"] += entry["values"]["length"]
        totals["values_total"] += tensor.numel()
        totals["values_stored"] += flat.numel()
        entries.append(entry)
    manifest = {"format": ARTIFACT_FORMAT, "written_by": f"lib.export {__version__}",
                "architecture": plain_json(net.architecture()), "channels": channel_spec(net),
                "dtype": dtype, "had_masks": bool(masks), "tensors": entries}
    path = atomic_write_bytes(encode_file(manifest, blobs), path)
    return {"path": str(path), "bytes": os.path.getsize(path), "dtype": dtype,
            "had_masks": bool(masks), "tasks": list(net.tasks), "num_tensors": len(entries),
            **totals}


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest of an artifact (validated header, checksum and schema; no tensor is
    decoded)."""
    reader = ArtifactReader(path)
    check_manifest(reader.manifest, MANIFEST_SCHEMA, f"edge artifact {reader.path}")
    return reader.manifest


def load_artifact(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                  data: bytes | None = None) -> MultiTaskModel:
    """Rebuild the plain network stored in ``path`` (eval mode, no prune hooks); ``data``: the
    file's bytes when they are already in memory (``path`` then only names them).

    Never unpickles: the manifest is JSON and tensors are numeric byte blobs. A truncated,
    corrupt or other-version file raises :class:`ArtifactFormatError` naming the file, before
    any network is built to the manifest's sizes (see the module docstring for the order).
    """
    reader = ArtifactReader(path, data)
    manifest, source = reader.manifest, f"edge artifact {reader.path}"
    check_manifest(manifest, MANIFEST_SCHEMA, source)
    entries = manifest["tensors"]
    keys = [entry["key"] for entry in entries]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ArtifactFormatError(f"{source}: tensor(s) {repeated[:3]} listed more than once")
    try:
        check_record_fits(manifest["architecture"], manifest.get("channels"),
                          {entry["key"]: entry["shape"] for entry in entries}, source)
        net = build_structured(manifest["architecture"], manifest.get("channels"), source=source)
    except ValueError as exc:
        raise ArtifactFormatError(str(exc)) from None
    state = {}
    for entry in entries:
        key = entry["key"]
        where = f"{source}: tensor {key!r}"
        shape = [int(s) for s in entry["shape"]]
        dtype, stored = _NAME_TO_TORCH[entry["dtype"]], entry["stored_dtype"]
        numel = math.prod(shape)
        values = torch.from_numpy(reader.array(entry["values"], stored, where).copy()).to(dtype)
        if entry["encoding"] == "sparse":
            kept = int(entry["kept"])
            if kept > numel:
                raise ArtifactFormatError(f"{where}: keeps {kept} of {numel} values")
            mask = decode_mask(entry["mask_codec"], reader.blob(entry["mask"], where),
                               numel, kept, where)
            if values.numel() != kept:
                raise ArtifactFormatError(f"{where}: {values.numel()} values for {kept} kept")
            full = torch.zeros(numel, dtype=dtype)
            full[torch.from_numpy(mask)] = values
            values = full
        if values.numel() != numel:
            raise ArtifactFormatError(f"{where}: {values.numel()} values, expected {numel} "
                                      f"for shape {shape}")
        state[key] = values.reshape(shape)
    try:
        check_finite_tensors(state, source)
    except NonFiniteError as exc:
        raise ArtifactFormatError(str(exc)) from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactFormatError(f"{source}: tensors do not match its architecture: "
                                  f"{first}") from None
    return net.to(map_location).eval()


def check_finite_outputs(net: nn.Module, img: torch.Tensor, what: str) -> list[torch.Tensor]:
    """``net``'s outputs on ``img`` (eval mode, no gradients); a
    :class:`lib.utils.NonFiniteError` naming the output (task) when one holds NaN / infinity."""
    mode = net.training
    net.eval()
    try:
        with torch.no_grad():
            outputs = list(net(img))
    finally:
        net.train(mode)
    names = list(getattr(net, "tasks", None) or range(len(outputs)))
    check_finite_tensors({f"output {n}": o for n, o in zip(names, outputs)}, what)
    return outputs


def max_output_difference(net_a: nn.Module, net_b: nn.Module, img: torch.Tensor) -> float:
    """Largest absolute difference between the outputs of two networks on ``img`` (eval mode);
    a non-finite output of either is an error (:func:`check_finite_outputs`), never a NaN
    difference."""
    outs_a = check_finite_outputs(net_a, img, "the first network's outputs")
    outs_b = check_finite_outputs(net_b, img, "the second network's outputs")
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(outs_a, outs_b))
