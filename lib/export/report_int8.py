"""int8 rows and task metrics for :func:`lib.export.report.size_speed_report`.

``int8=Int8Options(calibration=train_loader)`` adds one ``"<name> int8"`` row per network:
the int8 artifact's bytes (``artifact_int8_bytes``, ratio ``size_ratio_int8`` vs the dense
state dict), the QDQ ONNX file's bytes, the float model's parameters and MACs (quantization
changes the arithmetic's type, not its count), the onnxruntime latency (timed round-robin with
every other row) and, with ``pt2e=True``, the PyTorch latency of the same network quantized
by PT2E's x86 quantizer and compiled by Inductor (needs torchao and a C++ compiler; compiling
takes a while, so it is off by default and the PyTorch cell of int8 rows is then empty).

``metrics=TaskMetrics(test_loader, evaluator_for)`` evaluates every row's model on the test
split (int8 rows in onnxruntime) and adds ``delta_vs_dense:<task>`` (each row's tasks vs the
dense row's metrics), ``delta_mean`` and, for int8 rows, ``delta_vs_float:<task>`` and
``max_abs_metric_change_pct`` (vs the float model it was quantized from).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from lib.masks import has_masks

from .fidelity import OnnxNet, int8_fidelity
from .int8_artifact import INT8_SUFFIX, save_int8_artifact
from .quantize import (DEFAULT_CALIBRATION_BATCHES, calibration_images, pruned_zeros_kept,
                       quantize_compact)
from .measure import MAC_UNIT, conv_macs, cpu_plain, onnx_runner, parameter_counts


@dataclass
class Int8Options:
    """How the int8 rows are made: calibration data (checked before any work) and options."""

    calibration: Iterable[Mapping[str, Any]]
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES
    dataset: str | None = None
    pt2e: bool = False


@dataclass
class TaskMetrics:
    """Test data for task metrics: ``evaluator_for(tasks)`` returns a fresh SceneNetEval."""

    loader: Iterable[Mapping[str, Any]]
    evaluator_for: Callable[[Sequence[str]], Any]
    max_batches: int | None = None


def int8_rows(nets: Mapping[str, nn.Module], input_shape: Sequence[int], folder: Path,
              threads: int, options: Int8Options) -> tuple[list[dict], dict]:
    """``(rows, latency runners)`` of the int8 variant of every network in ``nets``."""
    calib = calibration_images(options.calibration, input_shape, options.calibration_batches,
                               dataset=options.dataset)
    batches = [{"img": torch.from_numpy(x)} for x in calib.images]
    rows, runners = [], {}
    for name, net in nets.items():
        stem = f"{name.replace(' ', '_')}_int8"
        info = quantize_compact(net, folder / f"{stem}.onnx", batches, input_shape,
                                num_batches=len(batches), min_batches=1)
        art = save_int8_artifact(info["path"], folder / f"{name.replace(' ', '_')}{INT8_SUFFIX}",
                                 meta={"tasks": list(getattr(net, "tasks", []))})
        params, macs = parameter_counts(net), conv_macs(net, input_shape)
        zeros = pruned_zeros_kept(net, info["path"]) if has_masks(net) else None
        row = {"model": f"{name} int8", "float_model": name,
               "tasks": getattr(net, "tasks", None), "masked": has_masks(net),
               "params_total": params["total"], "params_nonzero": params["nonzero"],
               "macs_dense": macs["dense"], "macs_effective": macs["effective"],
               "mac_unit": MAC_UNIT, "artifact_int8_bytes": art["bytes"],
               "artifact_int8_path": art["path"], "artifact_int8_values_stored": art["values_stored"],
               "artifact_int8_mask_bytes": art["mask_bytes"],
               "artifact_int8_value_bytes": art["value_bytes"],
               "onnx_path": info["path"], "onnx_bytes": info["bytes"],
               "pruned_nonzero_after_int8": None if zeros is None else zeros["nonzero_after"],
               "calibration_inputs": info["calibration_inputs"], "threads": threads,
               "input_shape": list(input_shape)}
        rows.append(row)
        runners[("onnx", row["model"])] = onnx_runner(info["path"], input_shape, threads)
        if options.pt2e:
            runners[("torch", row["model"])] = _pt2e_runner(net, batches, input_shape)
    return rows, runners


def _pt2e_runner(net: nn.Module, batches, input_shape: Sequence[int]):
    from .pt2e import quantize_pt2e_x86

    plain = cpu_plain(net)
    compiled = torch.compile(quantize_pt2e_x86(plain, batches, input_shape,
                                               num_batches=len(batches), min_batches=1))
    x = torch.randn(tuple(int(s) for s in input_shape),
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        compiled(x)  # compile now, not inside the timed runs

    def run():
        with torch.no_grad():
            return compiled(x)
    return run


def add_task_metrics(rows: list[dict], nets: Mapping[str, nn.Module], metrics: TaskMetrics,
                     threads: int) -> None:
    """Evaluate every row's model once; add its Δ vs dense (and vs float for int8 rows)."""
    from lib.metrics import UndefinedMetricError, evaluate, finite_results, per_task_delta

    def run(model, tasks):
        return finite_results(evaluate(model, metrics.loader, metrics.evaluator_for(list(tasks)),
                                       device="cpu", max_batches=metrics.max_batches,
                                       progress=False), "task metrics")

    floats = {name: run(cpu_plain(net), net.tasks) for name, net in nets.items()}
    dense = floats[rows[0]["model"]]
    for row in rows:
        name = row.get("float_model", row["model"])
        net = nets[name]
        if "float_model" in row:
            result = int8_fidelity(None, OnnxNet(row["onnx_path"], net.tasks, threads),
                                   metrics.loader, metrics.evaluator_for(list(net.tasks)),
                                   metrics.max_batches, float_metrics=floats[name])
            measured = result["int8"]
            row.update({f"delta_vs_float:{t}": d for t, d in result["delta"].items()})
            row["max_abs_metric_change_pct"] = result["max_abs_metric_change_pct"]
        else:
            measured = floats[name]
        row["metrics"] = measured
        deltas = {}
        for task in net.tasks:
            if task in dense:
                try:
                    deltas[task] = per_task_delta(measured, dense, [task])[task]
                except (ZeroDivisionError, UndefinedMetricError):   # undefined, not a number
                    deltas[task] = None
        row.update({f"delta_vs_dense:{t}": d for t, d in deltas.items()})
        finite = [d for d in deltas.values() if d is not None]
        row["delta_mean"] = sum(finite) / len(finite) if finite else None
