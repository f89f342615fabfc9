"""PyTorch's PT2E int8 path with the x86 (Inductor) quantizer, kept for the measured comparison.

The project ships onnxruntime's QDQ quantization (:mod:`lib.export.quantize`); this module is
what docs/EXPORT.md measured it against, and ``benchmarks/bench_export.py --pt2e`` re-measures
it. It needs ``torchao`` (``pip install torchao``: PT2E left ``torch.ao`` for it).

Two graph fixes make SceneNet quantizable by the x86 quantizer, both semantics-preserving:
Python's ``sum()`` over head branches starts from the literal ``0`` (an ``add(x, 0)`` node the
quantizer's binary-op matcher asserts on), and one ``nn.ReLU`` module serves two convolutions
in each head branch (the matcher refuses a source partition with two outputs); the first is
removed, the second given one partition per call.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from lib.masks import has_masks

from .quantize import (DEFAULT_CALIBRATION_BATCHES, MIN_CALIBRATION_BATCHES, PruneHooksError,
                       calibration_images)

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.SiLU)


def _require_torchao():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        raise ImportError("the PT2E x86 quantizer needs torchao (pip install torchao); "
                          "lib.export.quantize (onnxruntime) does not") from None
    return prepare_pt2e, convert_pt2e, x86


def _drop_add_zero(graph: torch.fx.Graph) -> int:
    """Remove ``add(x, 0)`` / ``add(0, x)`` nodes (Python's ``sum()`` start value)."""
    removed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.add.Tensor:
            continue
        a, b = node.args[:2]
        keep = a if (isinstance(b, (int, float)) and b == 0) else (
            b if (isinstance(a, (int, float)) and a == 0) else None)
        if isinstance(keep, torch.fx.Node):
            node.replace_all_uses_with(keep)
            graph.erase_node(node)
            removed += 1
    return removed


def _is_activation(cls: Any) -> bool:
    if isinstance(cls, str):
        return any(cls == f"{a.__module__}.{a.__qualname__}" for a in _ACTIVATIONS)
    return isinstance(cls, type) and issubclass(cls, _ACTIVATIONS)


def _split_reused_activations(graph: torch.fx.Graph) -> int:
    """Give each call of an activation module its own source partition.

    Partitions are keyed by the innermost module's qualified name (``nn_module_stack``, or
    ``torch_fn``/``source_fn_stack`` where present); the second call of one module gets
    ``<name>__call2``. Returns how many calls were renamed.
    """
    calls: dict[str, int] = {}
    renamed = 0
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        key, (fqn, cls) = list(stack.items())[-1]
        if not _is_activation(cls):
            continue
        calls[fqn] = calls.get(fqn, 0) + 1
        if calls[fqn] == 1:
            continue
        unique = f"{fqn}__call{calls[fqn]}"
        node.meta["nn_module_stack"] = type(stack)(
            [*list(stack.items())[:-1], (f"{key}__call{calls[fqn]}", (unique, cls))])
        if node.meta.get("torch_fn"):
            node.meta["torch_fn"] = (f"{node.meta['torch_fn'][0]}__call{calls[fqn]}",
                                     node.meta["torch_fn"][1])
        if node.meta.get("source_fn_stack"):
            src = node.meta["source_fn_stack"]
            node.meta["source_fn_stack"] = [*src[:-1], (f"{src[-1][0]}__call{calls[fqn]}",
                                                        src[-1][1])]
        renamed += 1
    return renamed


def quantize_pt2e_x86(net: nn.Module, calibration: Iterable[Mapping[str, Any]],
                      input_shape: Sequence[int],
                      num_batches: int = DEFAULT_CALIBRATION_BATCHES,
                      min_batches: int = MIN_CALIBRATION_BATCHES,
                      dataset: str | None = None) -> torch.fx.GraphModule:
    """int8 ``GraphModule`` of a plain network: ``torch.export`` -> x86 Inductor quantizer
    (its default static config: per-channel symmetric int8 weights, per-tensor uint8
    activations) -> calibration on the task data -> ``convert_pt2e``.

    Run it as it is (reference q/dq kernels: slow) or through ``torch.compile`` (Inductor
    lowers the patterns to oneDNN int8 kernels; needs a C++ compiler on the machine).
    """
    if has_masks(net):
        raise PruneHooksError("network has prune hooks: quantize plain_copy(net) (masks made "
                              "permanent on a copy)")
    prepare_pt2e, convert_pt2e, x86 = _require_torchao()
    calib = calibration_images(calibration, input_shape, num_batches, min_batches, dataset)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            example = torch.from_numpy(calib.images[0])
            graph_module = torch.export.export(net, (example,)).module()
            _drop_add_zero(graph_module.graph)
            _split_reused_activations(graph_module.graph)
            graph_module.graph.lint()
            graph_module.recompile()
            quantizer = x86.X86InductorQuantizer()
            quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
            prepared = prepare_pt2e(graph_module, quantizer)
            for image in calib.images:
                prepared(torch.from_numpy(image))
            return convert_pt2e(prepared)
    finally:
        net.train(was_training)
