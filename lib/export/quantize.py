"""Static post-training int8 quantization of a compact network (onnxruntime, QDQ, per-channel).

    info = quantize_compact(compact_net, "model_int8.onnx", train_loader, (1, 3, 224, 288),
                            dataset=cfg.DATASET, num_batches=8)

Scheme (:data:`INT8_SCHEME`): weights int8, symmetric, one scale per output channel (zero point
0, so a pruned weight, exactly 0.0, becomes exactly 0 and dequantizes to exactly 0.0);
activations uint8, asymmetric, one scale/zero point per tensor from MinMax calibration on
batches of the task's own data; QDQ format (QuantizeLinear/DequantizeLinear pairs that
onnxruntime fuses into int8 kernels). Why onnxruntime's quantizer and not PyTorch's PT2E x86
quantizer: docs/EXPORT.md, measured.

The float network is exported by :func:`lib.export.export_onnx` (eval mode: BatchNorm folded
into the convolutions, which scales output channels and keeps zeros zero), pre-processed by
onnxruntime's ``quant_pre_process`` (shared initialisers un-shared, so every bias is a constant
the quantizer can fold), calibrated and quantized. Nothing is written before the calibration
data and the network have been checked; the output is written atomically.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.datasets import DATASET_REGISTRY, dataset_spec
from lib.masks import has_masks, plain_copy, prune_masks
from lib.utils import atomic_write

from .onnx_io import export_onnx

INT8_SCHEME = {"format": "QDQ (onnxruntime)",
               "weights": "int8, symmetric, per output channel (zero point 0)",
               "activations": "uint8, asymmetric, per tensor",
               "calibration": "MinMax over the calibration images"}
MIN_CALIBRATION_BATCHES = 4
DEFAULT_CALIBRATION_BATCHES = 8


class CalibrationError(ValueError):
    """Calibration data that cannot calibrate this network (layout, shape, too few batches)."""


class PruneHooksError(ValueError):
    """A network with ``torch.nn.utils.prune`` hooks handed to a function that needs a plain one."""


# ----------------------------------------------------------------------------- calibration
def batch_layout(batch: Mapping[str, Any]) -> str | None:
    """The on-disk layout (``cfg.DATASET``) a batch dict comes from, when its keys tell: the
    first dataset whose spec's ``calibration_keys`` the batch all holds, datasets with fewer
    keys first (one key only one layout produces is the surest sign: Taskonomy's batches also
    hold NYU-v2's ``seg``, ``normal``, ``depth``)."""
    for layout, keys in layout_markers():
        if all(k in batch for k in keys):
            return layout
    return None


def layout_markers() -> list[tuple[str, tuple[str, ...]]]:
    """``[(dataset, calibration keys)]`` in the order :func:`batch_layout` tries them."""
    marked = [(name, tuple(dataset_spec(name).calibration_keys)) for name in DATASET_REGISTRY]
    return sorted([m for m in marked if m[1]], key=lambda m: len(m[1]))


def loader_layout(loader: Any) -> str | None:
    """``LAYOUT`` of the dataset behind a DataLoader (through Subsets), if it has one."""
    dataset = getattr(loader, "dataset", None)
    while dataset is not None and not getattr(dataset, "LAYOUT", ""):
        dataset = getattr(dataset, "dataset", None)
    return getattr(dataset, "LAYOUT", None) or None


def calibration_images(calibration: Iterable[Mapping[str, Any]], input_shape: Sequence[int],
                       num_batches: int = DEFAULT_CALIBRATION_BATCHES,
                       min_batches: int = MIN_CALIBRATION_BATCHES,
                       dataset: str | None = None) -> "CalibrationSet":
    """The first ``num_batches`` batches' images as float32 arrays of exactly ``input_shape``.

    Each batch's ``img`` (B x 3 x H x W) is cut into chunks of ``input_shape[0]`` images (a
    remainder is dropped). Raises :class:`CalibrationError` (one line) when a batch is not a dict
    with an ``img`` of the network's image size, when the data come from another layout than
    ``dataset`` (``cfg.DATASET``; told by the loader's dataset or by the batch keys), when
    ``num_batches`` is below ``min_batches``, or when fewer than ``num_batches`` batches come.
    """
    n, c, h, w = (int(s) for s in input_shape)
    if num_batches < min_batches:
        raise CalibrationError(f"calibration: num_batches={num_batches} is below the minimum of "
                               f"{min_batches} batches")
    source = loader_layout(calibration)
    if dataset is not None and source is not None and source != dataset:
        raise CalibrationError(f"calibration data come from the {source!r} layout, expected "
                               f"{dataset!r} (the network's dataset)")
    images: list[np.ndarray] = []
    used = 0
    for i, batch in enumerate(calibration):
        if used >= num_batches:
            break
        if not isinstance(batch, Mapping) or "img" not in batch:
            raise CalibrationError(f"calibration batch {i} is not a batch dict with an 'img' "
                                   f"key (got {type(batch).__name__})")
        layout = batch_layout(batch)
        if dataset is not None and layout is not None and layout != dataset:
            raise CalibrationError(f"calibration batch {i} has the keys of the {layout!r} "
                                   f"layout, expected {dataset!r} (the network's dataset)")
        img = torch.as_tensor(batch["img"])
        if img.dim() != 4 or tuple(img.shape[1:]) != (c, h, w):
            raise CalibrationError(f"calibration batch {i}: 'img' has shape {tuple(img.shape)}, "
                                   f"expected B x {c} x {h} x {w} (the export input shape; "
                                   f"another dataset layout or image size?)")
        if not torch.isfinite(img).all():
            raise CalibrationError(f"calibration batch {i}: 'img' holds non-finite values")
        img = img.detach().float().cpu().numpy()
        images += [np.ascontiguousarray(img[j:j + n]) for j in range(0, img.shape[0] - n + 1, n)]
        used += 1
    if used < num_batches or not images:
        raise CalibrationError(f"calibration data hold {used} batch(es) ({len(images)} input(s) "
                               f"of batch {n}), need {num_batches} (at least {min_batches})")
    return CalibrationSet(images, used)


@dataclass
class CalibrationSet:
    """Checked calibration inputs (``input_shape`` arrays) and how many batches gave them."""

    images: list[np.ndarray]
    batches: int


class _ImageReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input arrays."""

    def __init__(self, input_name: str, images: Sequence[np.ndarray]) -> None:
        self._feeds = iter([{input_name: x} for x in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# ----------------------------------------------------------------------------- quantization
def quantize_onnx(float_onnx: str | os.PathLike, out_path: str | os.PathLike,
                  images: Sequence[np.ndarray]) -> Path:
    """Quantize a float ONNX model to int8 QDQ (:data:`INT8_SCHEME`), calibrated on ``images``.

    ``out_path`` is written atomically; ``float_onnx`` is left as it is.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    import onnx

    model = onnx.load(str(float_onnx), load_external_data=False)
    input_name = model.graph.input[0].name
    quant_logger = logging.getLogger()  # the quantizer logs through the root logger
    old_level = quant_logger.level
    with tempfile.TemporaryDirectory(prefix="cut_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_logger.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)

            def write(target: str) -> None:
                quantize_static(str(pre), target, _ImageReader(input_name, images),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                                calibrate_method=CalibrationMethod.MinMax,
                                extra_options={"WeightSymmetric": True,
                                               "ActivationSymmetric": False})
            return atomic_write(out_path, write)
        finally:
            quant_logger.setLevel(old_level)


def quantize_network(net: nn.Module, out_path: str | os.PathLike,
                     calibration: Iterable[Mapping[str, Any]], input_shape: Sequence[int],
                     num_batches: int = DEFAULT_CALIBRATION_BATCHES,
                     min_batches: int = MIN_CALIBRATION_BATCHES,
                     dataset: str | None = None) -> dict[str, Any]:
    """int8 ONNX of a *plain* network (no prune hooks), calibrated on its task data.

    Raises :class:`PruneHooksError` for a network with prune hooks (use
    :func:`quantize_compact`, which makes them permanent on a copy) and
    :class:`CalibrationError` for unusable calibration data, both before writing anything.
    Returns ``{"path", "bytes", "float_onnx_bytes", "calibration_batches",
    "calibration_inputs", "scheme", "input_shape"}``.
    """
    if has_masks(net):
        example = next(iter(prune_masks(net)))
        raise PruneHooksError(f"network has prune hooks on {len(prune_masks(net))} tensor(s) "
                              f"(e.g. {example!r}): quantize plain_copy(net) (masks made "
                              f"permanent on a copy), as quantize_compact does")
    calib = calibration_images(calibration, input_shape, num_batches, min_batches, dataset)
    with tempfile.TemporaryDirectory(prefix="cut_quant_") as tmp:
        float_path = export_onnx(net, Path(tmp) / "float.onnx", input_shape)
        float_bytes = os.path.getsize(float_path)
        path = quantize_onnx(float_path, out_path, calib.images)
    return {"path": str(path), "bytes": os.path.getsize(path), "float_onnx_bytes": float_bytes,
            "calibration_batches": calib.batches, "calibration_inputs": len(calib.images),
            "scheme": dict(INT8_SCHEME),
            "input_shape": [int(s) for s in input_shape]}


def quantize_compact(net: nn.Module, out_path: str | os.PathLike,
                     calibration: Iterable[Mapping[str, Any]], input_shape: Sequence[int],
                     **options: Any) -> dict[str, Any]:
    """:func:`quantize_network` of ``net`` with its prune hooks made permanent on a copy.

    ``net`` itself is not modified (its masks keep working for fine-tuning).
    """
    plain = plain_copy(net) if has_masks(net) else net
    return quantize_network(plain, out_path, calibration, input_shape, **options)


# ----------------------------------------------------------------------------- reading back
@dataclass
class QuantizedWeight:
    """One quantized weight of a QDQ graph: ``float ~= (values - zero_point) * scale``."""

    initializer: str            # the int8 initializer's name in the graph
    values: np.ndarray          # int8, the weight's shape
    scale: np.ndarray           # float32, one per channel along ``axis`` (or a scalar)
    zero_point: np.ndarray      # int8, same shape as ``scale``
    axis: int

    def per_element(self, per_channel: np.ndarray) -> np.ndarray:
        """A per-channel array (scale or zero point) broadcast to the weight's shape."""
        shape = [1] * self.values.ndim
        if per_channel.ndim:
            shape[self.axis] = -1
        return np.broadcast_to(per_channel.reshape(shape), self.values.shape)

    def dequantized(self) -> np.ndarray:
        zero = self.per_element(self.zero_point).astype(np.int32)
        return ((self.values.astype(np.int32) - zero) * self.per_element(self.scale)
                ).astype(np.float32)


def module_name_of_node(node_name: str) -> str:
    """The module a node of the TorchScript exporter came from, from its scope path.

    ``/backbone/blocks.0.0/conv1/Conv`` -> ``backbone.blocks.0.0.conv1``; a container's child
    repeats the container's name (``/backbone/ds.1/ds.1.0/Conv`` -> ``backbone.ds.1.0``).
    """
    parts: list[str] = []
    for part in [p for p in node_name.split("/") if p][:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def quantized_weights(model: Any) -> dict[str, QuantizedWeight]:
    """``{module name: QuantizedWeight}`` of every Conv/Gemm weight of a QDQ model.

    ``model`` is an ``onnx.ModelProto`` or a path. The module name comes from the node's scope
    as the TorchScript exporter writes it (``/backbone/conv1/Conv`` -> ``backbone.conv1``).
    """
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    out: dict[str, QuantizedWeight] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        zero_point = (numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2
                      else np.zeros((), np.int8))
        out[module_name_of_node(node.name)] = QuantizedWeight(
            dq.input[0], numpy_helper.to_array(inits[dq.input[0]]),
            numpy_helper.to_array(inits[dq.input[1]]), zero_point, int(axis))
    return out


def pruned_zeros_kept(net: nn.Module, model: Any) -> dict[str, int]:
    """Check that every weight ``net``'s prune masks zero is exactly zero in the int8 model.

    Returns ``{"layers", "pruned", "nonzero_after"}``: masked layers found in the quantized
    graph, pruned weights among them, and how many of those are not exactly 0 (int8 value vs
    its zero point, and dequantized). Raises ``KeyError`` if a masked layer is missing.
    """
    weights = quantized_weights(model)
    masks = prune_masks(net)
    pruned = bad = 0
    for key, mask in masks.items():
        layer = key.rpartition(".")[0]
        if layer not in weights:
            raise KeyError(f"masked layer {layer!r} has no quantized weight in the int8 model")
        q = weights[layer]
        off = ~mask.cpu().numpy().reshape(q.values.shape)
        pruned += int(off.sum())
        zero = q.per_element(q.zero_point)
        bad += int((q.values[off] != zero[off]).sum() + (q.dequantized()[off] != 0.0).sum())
    return {"layers": len(masks), "pruned": pruned, "nonzero_after": bad}
