"""What a network costs, measured in one place: parameters, MACs and CPU latency.

Export's size/speed report, the budget search, the equal-cost comparison and the explorer all
count and time through these functions, so their figures agree by construction.

Units: MACs are multiply-accumulates of the Conv2d/Linear layers for one forward of the stated
input shape (batch included; 1 MAC = 2 FLOPs). *Effective* MACs scale each layer's MACs by its
fraction of non-zero weights (what a sparse kernel would need). Latency is the median
wall-clock time of ``repeats`` forwards after ``warmup`` ones, at a stated number of CPU
threads, timed round-robin over all candidates so that load from other processes hits them
alike.

    parameter_counts(net), conv_macs(net, shape), mac_calls(net, shape)   counts of a network
    MaskCounter(net, shape)          the same counts for masks not installed (the explorer)
    torch_runner / onnx_runner, interleaved_latency_ms, torch_latency_ms, onnx_latency_ms
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.masks import Masks, effective_state_dict, has_masks, layer_weights, plain_copy
from lib.models import PRUNABLE_TYPES, MultiTaskModel, shared_layers, task_layers

from .onnx_io import onnx_session

MAC_UNIT = "MACs (multiply-accumulates, Conv2d+Linear; 1 MAC = 2 FLOPs)"


# ------------------------------------------------------------------------------------ counts
def parameter_counts(net: nn.Module) -> dict[str, int]:
    """``{"total", "nonzero"}`` over the network's effective parameters (masks applied)."""
    state = effective_state_dict(net)
    keys = {n[: -len("_orig")] if n.endswith("_orig") else n for n, _ in net.named_parameters()}
    total = sum(state[k].numel() for k in keys)
    nonzero = sum(int(torch.count_nonzero(state[k])) for k in keys)
    return {"total": total, "nonzero": nonzero}


def mac_calls(net: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, int]]:
    """``[(layer, MACs)]`` of every Conv2d/Linear call of one forward of ``input_shape``, in
    forward order (a layer called twice appears twice).

    Shapes come from a forward of a plain copy on the ``meta`` device (no arithmetic).
    """
    shadow = plain_copy(net).to("meta").eval()
    calls: list[tuple[str, int]] = []

    def counter(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = ((module.in_channels // module.groups)
                              * int(np.prod(module.kernel_size)))
            else:
                per_output = module.in_features
            calls.append((name, output.numel() * per_output))
        return hook

    for name, module in shadow.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            module.register_forward_hook(counter(name))
    with torch.no_grad():
        shadow(torch.zeros(tuple(int(s) for s in input_shape), device="meta"))
    return calls


def effective_macs(calls: Sequence[tuple[str, int]], density: Callable[[str], float]) -> int:
    """MACs of ``calls`` scaled per layer by ``density(layer)`` (its fraction of non-zero
    weights), summed in forward order."""
    total = 0.0
    for name, macs in calls:
        total += macs * density(name)
    return int(round(total))


def conv_macs(net: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Dense and effective MACs of Conv2d/Linear layers for one forward of ``input_shape``;
    densities from the real (masked) weights."""
    density = {name: float(torch.count_nonzero(m.weight)) / m.weight.numel()
               for name, m in net.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    calls = mac_calls(net, input_shape)
    return {"dense": sum(macs for _, macs in calls),
            "effective": effective_macs(calls, density.__getitem__)}


class MaskCounter:
    """Counts for masks on ``net`` (a compact, unmasked network as a pruning plan holds it),
    from the masks alone: nothing is installed, so a new mask costs one sum per layer.

    For any masks it gives what the installed masks would give: :func:`lib.masks.sparsity_report`'s
    ``layers`` / ``backbone`` / ``heads`` / ``deployed`` (:meth:`report`),
    :func:`parameter_counts` (:meth:`params`) and :func:`conv_macs`'s effective MACs
    (:meth:`effective_macs`). Weights that are already zero count as zeros wherever they are
    kept, as ``sparsity_report`` counts them.
    """

    def __init__(self, net: MultiTaskModel, input_shape: Sequence[int]):
        weights = layer_weights(net)
        self.layers = list(weights)
        self.numel = {n: w.numel() for n, w in weights.items()}
        # Only layers holding exact zeros need an AND with the mask; usually there are none.
        self.zero_weights = {n: w == 0 for n, w in weights.items() if bool((w == 0).any())}
        # Masks that keep everything (keep ratio 1.0) leave exactly these zeros.
        self.zero_percent = (100.0 * sum(int(z.sum()) for z in self.zero_weights.values())
                             / max(sum(self.numel.values()), 1))
        self.shared = list(shared_layers(net))
        self.own = {t: list(task_layers(net, t)) for t in net.tasks}
        prunable_keys = {f"{n}.weight" for n in self.layers}
        params = dict(net.named_parameters())
        self.params_total = sum(p.numel() for p in params.values())
        self.other_nonzero = sum(int(torch.count_nonzero(p.detach())) for k, p in params.items()
                                 if k not in prunable_keys)
        self.mac_calls = mac_calls(net, input_shape)
        self.macs_dense = sum(macs for _, macs in self.mac_calls)
        # Conv2d/Linear modules outside the task models (none in the registered families)
        # keep their own density whatever the masks.
        modules = dict(net.named_modules())
        self.fixed_density = {
            n: float(torch.count_nonzero(modules[n].weight)) / modules[n].weight.numel()
            for n, _ in self.mac_calls if n not in self.numel}

    def kept(self, masks: Masks) -> dict[str, int]:
        """``{layer: weights kept and non-zero}``; ``masks`` must cover every prunable layer."""
        missing = [n for n in self.layers if n not in masks]
        if missing:
            raise KeyError(f"masks lack layer(s) {missing[:3]}; a counter needs every layer")
        out = {}
        for name in self.layers:
            mask = masks[name].bool()
            if name in self.zero_weights:
                mask = mask & ~self.zero_weights[name].to(mask.device)
            out[name] = int(torch.count_nonzero(mask))  # ~20x a bool tensor's sum()
        return out

    def report(self, kept: Mapping[str, int]) -> dict:
        """:func:`lib.masks.sparsity_report`'s ``layers``, ``backbone``, ``heads`` and
        ``deployed`` for the per-layer kept counts ``kept``."""
        def part(names):
            total = sum(self.numel[n] for n in names)
            zeros = total - sum(kept[n] for n in names)
            return {"total": total, "zeros": zeros, "sparsity": 100.0 * zeros / max(total, 1)}
        return {"layers": {n: part([n]) for n in self.layers},
                "backbone": part(self.shared),
                "heads": {t: part(names) for t, names in self.own.items()},
                "deployed": part(self.layers)}

    def params(self, kept: Mapping[str, int]) -> dict[str, int]:
        """:func:`parameter_counts` (``total``, ``nonzero``) of the masked network."""
        return {"total": self.params_total,
                "nonzero": self.other_nonzero + sum(kept[n] for n in self.layers)}

    def effective_macs(self, kept: Mapping[str, int]) -> int:
        """:func:`conv_macs`'s ``effective`` of the masked network."""
        return effective_macs(self.mac_calls, lambda name: (
            kept[name] / self.numel[name] if name in self.numel else self.fixed_density[name]))

    def deployed_sparsity(self, kept: Mapping[str, int]) -> float:
        """Percent of the prunable weights that are zero under the masks with counts ``kept``."""
        total = sum(self.numel.values())
        return 100.0 * (total - sum(kept.values())) / max(total, 1)


# ----------------------------------------------------------------------------------- latency
def cpu_plain(net: nn.Module) -> nn.Module:
    """An eval-mode CPU network without prune hooks (a copy unless ``net`` already is one)."""
    on_cpu = next(net.parameters()).device.type == "cpu"
    if has_masks(net) or not on_cpu:
        return plain_copy(net).cpu().eval()
    return net


def torch_runner(net: nn.Module, input_shape: Sequence[int]) -> Callable[[], Any]:
    """A no-argument callable running one PyTorch CPU forward of ``net`` (hooks removed)."""
    plain = cpu_plain(net)
    x = torch.randn(tuple(int(s) for s in input_shape), generator=torch.Generator().manual_seed(0))

    def run() -> Any:
        was_training = plain.training
        plain.eval()
        try:
            with torch.inference_mode():
                return plain(x)
        finally:
            plain.train(was_training)
    return run


def onnx_runner(onnx_path: str | os.PathLike, input_shape: Sequence[int],
                threads: int) -> Callable[[], Any]:
    """A no-argument callable running one onnxruntime CPU inference of ``onnx_path``."""
    session = onnx_session(onnx_path, threads)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(tuple(int(s) for s in input_shape)).astype(np.float32)
    return lambda: session.run(None, {name: x})


def interleaved_latency_ms(runners: Mapping[Any, Callable[[], Any]], threads: int,
                           repeats: int = 10, warmup: int = 2) -> dict[Any, dict[str, float]]:
    """``{name: {"median", "min"}}`` ms of each runner, timed round-robin.

    Timing the candidates in turn (A, B, C, A, B, C, ...) rather than one after the other
    spreads load from other processes evenly over them, so their *ratios* stay fair on a
    shared machine. PyTorch runs with ``threads`` intra-op threads (restored afterwards).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    times: dict[Any, list[float]] = {name: [] for name in runners}
    try:
        for i in range(warmup + repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                if i >= warmup:
                    times[name].append(1000.0 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(old_threads)
    return {name: {"median": statistics.median(t), "min": min(t)} for name, t in times.items()}


def torch_latency_ms(net: nn.Module, input_shape: Sequence[int], threads: int, repeats: int = 10,
                     warmup: int = 2) -> float:
    """Median CPU latency (ms) of ``net`` (hooks removed on a copy) with ``threads`` threads."""
    runner = {"net": torch_runner(net, input_shape)}
    return interleaved_latency_ms(runner, threads, repeats, warmup)["net"]["median"]


def onnx_latency_ms(onnx_path: str | os.PathLike, input_shape: Sequence[int], threads: int,
                    repeats: int = 10, warmup: int = 2) -> float:
    """Median onnxruntime CPU latency (ms) with ``threads`` intra-op threads."""
    runner = {"onnx": onnx_runner(onnx_path, input_shape, threads)}
    return interleaved_latency_ms(runner, threads, repeats, warmup)["onnx"]["median"]
