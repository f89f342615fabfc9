"""ONNX export of a (possibly masked) network and an onnxruntime parity check."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.masks import has_masks, plain_copy
from lib.models import copy_network
from lib.utils import atomic_write

DEFAULT_OPSET = 17


def output_names(net: nn.Module) -> list[str]:
    """ONNX output names: the task names of a MultiTaskModel, else ``["output"]``."""
    return list(getattr(net, "tasks", None) or ["output"])


def export_onnx(net: nn.Module, path: str | os.PathLike, input_shape: Sequence[int],
                opset: int = DEFAULT_OPSET) -> Path:
    """Export ``net`` (eval mode) to ONNX at ``path`` for a fixed ``input_shape`` (N, 3, H, W).

    Prune hooks are removed first, on a copy (masks made permanent): ``net`` is not modified.
    Uses the TorchScript-based exporter (no onnxscript dependency). Written atomically.
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    plain = plain_copy(net) if has_masks(net) else net
    was_training = plain.training
    plain.eval()
    device = next(plain.parameters()).device
    example = torch.zeros(tuple(int(s) for s in input_shape), device=device)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(plain, (example,), tmp, dynamo=False, input_names=["img"],
                              output_names=output_names(plain), opset_version=opset,
                              do_constant_folding=True)
    try:
        return atomic_write(path, write)
    finally:
        plain.train(was_training)


def onnx_session(path: str | os.PathLike | bytes, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (or serialized model bytes) with ``threads``
    intra-op threads (None: default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No busy-waiting between runs: idle ORT threads would steal cores from whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=options,
                                providers=["CPUExecutionProvider"])


def check_onnx_parity(net: nn.Module, onnx_path: str | os.PathLike,
                      inputs: torch.Tensor | Sequence[int], rtol: float = 1e-3,
                      atol: float = 1e-4, threads: int | None = None) -> dict[str, Any]:
    """Run ``onnx_path`` in onnxruntime and ``net`` in PyTorch (eval, CPU) on the same input.

    ``inputs`` is a tensor or an input shape (then a seeded normal input, scaled like images).
    Returns ``{"ok", "max_abs_diff", "max_rel_diff", "per_output": {name: max_abs}, ...}``;
    ``ok`` means ``|onnx - torch| <= atol + rtol * |torch|`` everywhere.
    """
    if not isinstance(inputs, torch.Tensor):
        gen = torch.Generator().manual_seed(0)
        inputs = torch.randn(tuple(int(s) for s in inputs), generator=gen) * 50
    plain = copy_to_cpu(plain_copy(net) if has_masks(net) else net)
    was_training = plain.training
    plain.eval()
    try:
        with torch.no_grad():
            reference = [o.float().numpy() for o in plain(inputs.float().cpu())]
    finally:
        plain.train(was_training)
    session = onnx_session(onnx_path, threads)
    got = session.run(None, {session.get_inputs()[0].name: inputs.float().cpu().numpy()})
    names = [o.name for o in session.get_outputs()]
    if len(got) != len(reference):
        raise ValueError(f"ONNX model {onnx_path} has {len(got)} outputs, PyTorch {len(reference)}")
    per_output, ok, max_rel = {}, True, 0.0
    for name, a, b in zip(names, got, reference):
        if a.shape != b.shape:
            raise ValueError(f"ONNX output {name!r} of {onnx_path} has shape {a.shape}, "
                             f"PyTorch {b.shape}")
        diff = np.abs(a - b)
        per_output[name] = float(diff.max()) if diff.size else 0.0
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(b), 1e-12)).max()) if diff.size else 0.0)
        ok &= bool(np.all(diff <= atol + rtol * np.abs(b)))
    return {"ok": ok, "max_abs_diff": max(per_output.values()), "max_rel_diff": max_rel,
            "per_output": per_output, "rtol": rtol, "atol": atol,
            "input_shape": list(inputs.shape)}


def copy_to_cpu(net: nn.Module) -> nn.Module:
    """``net`` itself when on CPU, else a CPU copy (the original stays on its device)."""
    device = next(net.parameters()).device
    if device.type == "cpu":
        return net
    return copy_network(net).cpu()
