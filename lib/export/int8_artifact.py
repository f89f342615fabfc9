"""The int8 edge artifact: a quantized ONNX model whose int8 weights are stored sparse.

A QDQ ONNX file stores every int8 weight densely, zeros included: for a 90 %-sparse network
that is ten times the bytes the kept weights need. This artifact reuses the ``.cutedge``
container (:mod:`lib.export.container`: magic, version, JSON manifest, CRC-checked blobs) with
manifest ``"format": "cut-edge-int8"``:

- ``graph``: the quantized ONNX model with the weight tensors below taken out (graph, activation
  scales/zero points, int32 biases: all small), protobuf bytes, compressed;
- ``weights``: one entry per quantized Conv/Gemm weight, keyed by its module name
  (``backbone.blocks.0.0.conv1``): shape, channel ``axis``, per-channel ``scale`` (float32) and
  ``zero_point`` (int8) blobs, and the int8 values. Values equal to their zero point (pruned
  weights, and weights that quantize to zero) are dropped when that is smaller: a mask (the
  float artifact's codecs, :func:`lib.export.artifact.encode_mask`: packed bitmask or
  delta-coded indices, whichever compresses smaller) plus the other values; otherwise the
  values are stored dense. Either way the int8 tensor comes back bit for bit.

:func:`load_int8_model` rebuilds the ONNX model (same nodes, same initializer values, so
onnxruntime computes the same outputs); :func:`int8_session` runs it. Never unpickles.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lib import __version__
from lib.utils import atomic_write_bytes

from .artifact import MASK_COMPRESSIONS, decode_mask, encode_mask
from .container import (BLOB_SCHEMA, ArtifactFormatError, ArtifactReader, BlobWriter,
                        check_manifest, encode_file)
from .quantize import INT8_SCHEME, quantized_weights

INT8_FORMAT = "cut-edge-int8"
INT8_SUFFIX = ".int8.cutedge"
_GRAPH_COMPRESSIONS = ("none", "zlib", "lzma")
_VALUE_COMPRESSIONS = ("none", "zlib", "lzma")

_COUNTS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_NAME = {"type": "string", "minLength": 1}
# What an int8 artifact's manifest holds; its readers refuse anything else (ArtifactFormatError).
INT8_MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["format", "scheme", "meta", "graph", "weights", "blob_bytes"],
    "properties": {
        "format": {"const": INT8_FORMAT},
        "written_by": {"type": "string"},
        "scheme": {"type": "object"},
        "meta": {"type": "object"},
        "graph": BLOB_SCHEMA,
        "blob_bytes": {"type": "integer", "minimum": 0},
        "weights": {"type": "array", "items": {
            "type": "object",
            "required": ["key", "initializer", "shape", "axis", "scale", "scale_shape",
                         "zero_point", "zero_point_shape", "encoding", "values"],
            "properties": {
                "key": _NAME, "initializer": _NAME, "shape": _COUNTS, "axis": {"type": "integer"},
                "scale_initializer": {"type": ["string", "null"]},
                "zero_point_initializer": {"type": ["string", "null"]},
                "scale": BLOB_SCHEMA, "scale_shape": _COUNTS,
                "zero_point": BLOB_SCHEMA, "zero_point_shape": _COUNTS,
                "encoding": {"enum": ["dense", "sparse"]}, "values": BLOB_SCHEMA},
            "if": {"properties": {"encoding": {"const": "sparse"}}},
            "then": {"required": ["kept", "mask_codec", "mask"],
                     "properties": {"kept": {"type": "integer", "minimum": 0},
                                    "mask_codec": {"enum": ["bitmask", "delta"]},
                                    "mask": BLOB_SCHEMA}}}},
    },
}


def _le(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def save_int8_artifact(model: Any, path: str | os.PathLike,
                       meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the int8 artifact of a QDQ ONNX model (path or ``onnx.ModelProto``) to ``path``.

    ``meta`` (JSON-serialisable: architecture, tasks, calibration, ...) is stored in the
    manifest as it is. Written atomically. Returns a summary whose ``bytes`` is the file size.
    """
    import onnx

    model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    weights = quantized_weights(model)
    if not weights:
        raise ValueError("model has no quantized Conv/Gemm weights (DequantizeLinear of int8 "
                         "initializers): quantize it first (lib.export.quantize)")
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    taken = {n for w in weights.values() for n in (w.initializer,)}
    dq_inputs = {node.input[0]: list(node.input) for node in model.graph.node
                 if node.op_type == "DequantizeLinear"}
    blobs = BlobWriter()
    entries, totals = [], {"values_total": 0, "values_stored": 0, "mask_bytes": 0,
                           "value_bytes": 0, "sparse_tensors": 0, "dense_tensors": 0}
    for key, w in weights.items():
        _, scale_name, zero_name = (dq_inputs[w.initializer] + [None])[:3]
        taken.update(n for n in (scale_name, zero_name) if n)
        flat = w.values.reshape(-1)
        kept_mask = flat != w.per_element(w.zero_point).reshape(-1)
        entry = {"key": key, "initializer": w.initializer, "shape": list(w.values.shape),
                 "axis": w.axis, "scale_initializer": scale_name,
                 "zero_point_initializer": zero_name,
                 "scale": blobs.add(_le(w.scale, "float32")),
                 "scale_shape": list(w.scale.shape),
                 "zero_point": blobs.add(_le(w.zero_point, "int8")),
                 "zero_point_shape": list(w.zero_point.shape)}
        codec, mask_bytes = encode_mask(kept_mask)
        kept = int(kept_mask.sum())
        sparse_cost = len(mask_bytes) + kept
        if sparse_cost < flat.size:
            mask_entry = blobs.add(mask_bytes, MASK_COMPRESSIONS)
            entry.update(encoding="sparse", kept=kept, mask_codec=codec, mask=mask_entry)
            values = flat[kept_mask]
            totals["mask_bytes"] += mask_entry["length"]
            totals["sparse_tensors"] += 1
        else:
            entry["encoding"] = "dense"
            values = flat
            totals["dense_tensors"] += 1
        entry["values"] = blobs.add(_le(values, "int8"), _VALUE_COMPRESSIONS)
        totals["value_bytes"] += entry["values"]["length"]
        totals["values_total"] += int(flat.size)
        totals["values_stored"] += int(values.size)
        entries.append(entry)
    kept_inits = [i for i in stripped.graph.initializer if i.name not in taken]
    del stripped.graph.initializer[:]
    stripped.graph.initializer.extend(kept_inits)
    graph = blobs.add(stripped.SerializeToString(), _GRAPH_COMPRESSIONS)
    manifest = {"format": INT8_FORMAT, "written_by": f"lib.export {__version__}",
                "scheme": dict(INT8_SCHEME), "meta": dict(meta or {}), "graph": graph,
                "weights": entries}
    path = atomic_write_bytes(encode_file(manifest, blobs), path)
    return {"path": str(path), "bytes": os.path.getsize(path), "graph_bytes": graph["length"],
            "num_weights": len(entries), **totals}


def _array(reader: ArtifactReader, blob: Mapping[str, Any], dtype: str, shape, where: str):
    if dtype == "int8":  # the container whitelist has uint8; int8 is the same bytes
        data = reader.array(blob, "uint8", where).view(np.int8)
    else:
        data = reader.array(blob, dtype, where)
    numel = int(np.prod(shape)) if len(shape) else 1
    if data.size != numel:
        raise ArtifactFormatError(f"{where}: {data.size} values, expected {numel} for shape "
                                  f"{list(shape)}")
    return data.reshape(shape)


def read_int8_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest of an int8 artifact (header validated, nothing decoded)."""
    return _checked_reader(path).manifest


def _checked_reader(path: str | os.PathLike) -> ArtifactReader:
    """The container of an int8 artifact, its manifest checked against its schema."""
    reader = ArtifactReader(path)
    if reader.manifest.get("format") != INT8_FORMAT:
        raise ArtifactFormatError(f"edge artifact {reader.path} is not an int8 artifact "
                                  f"(format {reader.manifest.get('format')!r}, expected "
                                  f"{INT8_FORMAT!r})")
    check_manifest(reader.manifest, INT8_MANIFEST_SCHEMA, f"edge artifact {reader.path}")
    return reader


def load_int8_model(path: str | os.PathLike):
    """The quantized ``onnx.ModelProto`` stored in an int8 artifact (weights filled back in).

    A file of another format, a truncated or corrupt one raises :class:`ArtifactFormatError`.
    """
    import onnx
    from onnx import numpy_helper

    reader = _checked_reader(path)
    manifest, source = reader.manifest, f"edge artifact {reader.path}"
    model = onnx.ModelProto()
    try:
        model.ParseFromString(reader.blob(manifest["graph"], "graph"))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ArtifactFormatError(f"{source}: the graph does not parse as ONNX: {exc}") from None
    _check_entries(model, manifest["weights"], source)
    filled: dict[str, np.ndarray] = {}
    for entry in manifest["weights"]:
        where = f"{source}: weight {entry.get('key')!r}"
        try:
            shape = [int(s) for s in entry["shape"]]
            scale = _array(reader, entry["scale"], "float32", entry["scale_shape"], where)
            zero = _array(reader, entry["zero_point"], "int8", entry["zero_point_shape"], where)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ArtifactFormatError):
                raise
            raise ArtifactFormatError(f"{where}: malformed entry ({exc})") from None
        numel = int(np.prod(shape))
        if entry.get("encoding") == "sparse":
            kept = int(entry.get("kept", -1))
            mask = decode_mask(entry.get("mask_codec"), reader.blob(entry["mask"], where),
                               numel, kept, where)
            values = _array(reader, entry["values"], "int8", [kept], where)
            axis = int(entry["axis"])
            if zero.ndim and not -len(shape) <= axis < len(shape):
                raise ArtifactFormatError(f"{where}: channel axis {axis} of a "
                                          f"{len(shape)}-d weight")
            per_channel = [1] * len(shape)
            if zero.ndim:
                per_channel[axis] = -1
            full = np.broadcast_to(zero.reshape(per_channel), shape).copy().reshape(-1)
            full[mask] = values
            values = full.reshape(shape)
        elif entry.get("encoding") == "dense":
            values = _array(reader, entry["values"], "int8", shape, where)
        else:
            raise ArtifactFormatError(f"{where}: unknown encoding {entry.get('encoding')!r}; "
                                      f"expected 'sparse' or 'dense'")
        for name, array in ((entry["initializer"], values),
                            (entry.get("scale_initializer"), scale),
                            (entry.get("zero_point_initializer"), zero)):
            if not name:
                continue
            if name in filled:   # one initializer read by several layers (the exporter dedups)
                if filled[name].dtype != array.dtype or not np.array_equal(filled[name], array):
                    raise ArtifactFormatError(f"{where}: initializer {name!r} is also given by "
                                              f"another entry, with other values")
                continue
            filled[name] = array
            model.graph.initializer.append(numpy_helper.from_array(array, name))
    return model


def _check_entries(model, entries: list, source: str) -> None:
    """Check every manifest entry against the graph before any weight is decoded.

    An entry must name an initializer the graph lacks and reads as input 0 of a
    DequantizeLinear whose scale / zero-point inputs and ``axis`` are the entry's, whose output
    is the weight (input 1) of a Conv/Gemm of the entry's module (``key``, from the node's
    scope): two entries whose initializer names were swapped name another layer's
    DequantizeLinear inputs and module. Its ``shape`` must fit that node (rank, Conv
    ``kernel_shape``, the bias's length) and its ``scale_shape`` / ``zero_point_shape`` must be
    one value per channel along ``axis`` (or a scalar); with the blobs' value counts (checked
    as they are decoded) that pins every dimension. An ArtifactFormatError names the entry.
    """
    from .quantize import module_name_of_node

    graph = model.graph
    present = {init.name for init in graph.initializer}
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, position))
    dequantize = {node.input[0]: node for node in graph.node
                  if node.op_type == "DequantizeLinear" and node.input}
    for entry in entries:
        key, name = entry["key"], entry["initializer"]
        where = f"{source}: weight {key!r}"
        dq = dequantize.get(name)
        if name in present:
            raise ArtifactFormatError(f"{where}: initializer {name!r} is already in the graph")
        if dq is None:
            raise ArtifactFormatError(f"{where}: no DequantizeLinear of the graph reads "
                                      f"initializer {name!r}")
        inputs = list(dq.input) + [""] * (3 - len(dq.input))
        named = (("scale", inputs[1] or None, entry.get("scale_initializer") or None),
                 ("zero point", inputs[2] or None, entry.get("zero_point_initializer") or None))
        for what, expected, given in named:
            if expected != given:
                raise ArtifactFormatError(f"{where}: the graph dequantizes {name!r} with "
                                          f"{what} {expected!r}, the entry names {given!r}")
            if given in present:
                raise ArtifactFormatError(f"{where}: {what} initializer {given!r} is already "
                                          f"in the graph")
        layers = {module_name_of_node(node.name): node for node, position
                  in readers.get(dq.output[0], [])
                  if node.op_type in ("Conv", "Gemm") and position == 1}
        if key not in layers:
            raise ArtifactFormatError(f"{where}: initializer {name!r} is the weight of "
                                      f"{sorted(layers) or 'no Conv/Gemm'} in the graph, not of "
                                      f"{key!r}")
        node = layers[key]
        shape = [int(s) for s in entry["shape"]]
        attrs = {a.name: a for a in node.attribute}
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else None
        rank = 2 if node.op_type == "Gemm" else (len(kernel) + 2 if kernel else len(shape))
        if len(shape) != rank or (kernel and shape[2:] != kernel) or min(shape, default=0) < 1:
            raise ArtifactFormatError(f"{where}: shape {shape} does not fit its "
                                      f"{node.op_type} node {node.name!r}"
                                      + (f" (kernel {kernel})" if kernel else ""))
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        scale_shape = [int(s) for s in entry["scale_shape"]]
        per_channel = bool(scale_shape)
        if per_channel and (int(entry["axis"]) != axis or not -rank <= axis < rank
                            or scale_shape != [shape[axis]]):
            raise ArtifactFormatError(f"{where}: scale_shape {scale_shape} along axis "
                                      f"{entry['axis']} does not fit weight shape {shape} "
                                      f"quantized along axis {axis}")
        if [int(s) for s in entry["zero_point_shape"]] != scale_shape:
            raise ArtifactFormatError(f"{where}: zero_point_shape {entry['zero_point_shape']} "
                                      f"differs from scale_shape {scale_shape}")
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = node.input[2]
            source_dq = producer.get(bias)
            if source_dq is not None and source_dq.op_type == "DequantizeLinear":
                bias = source_dq.input[0]
            if bias in shapes and shapes[bias] != [shape[0]]:
                raise ArtifactFormatError(f"{where}: shape {shape} has {shape[0]} output "
                                          f"channels, its bias {shapes[bias]}")


def int8_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of the model stored in the int8 artifact ``path``."""
    from .onnx_io import onnx_session
    return onnx_session(load_int8_model(path).SerializeToString(), threads)


def int8_artifact_path(stem: str | os.PathLike) -> Path:
    """``X`` -> ``X.int8.cutedge``."""
    return Path(f"{stem}{INT8_SUFFIX}")
