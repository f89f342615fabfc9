"""What quantization costs in task metrics: the int8 model against its float model, measured.

:class:`OnnxNet` puts an onnxruntime session behind the ``nn.Module`` interface that
:func:`lib.metrics.evaluate` drives, so the int8 model is evaluated by the very code (and
metric definitions) that evaluates PyTorch models. :func:`int8_fidelity` evaluates both on the
same loader and returns the per-task Δ (``lib.metrics.per_task_delta``, percent, the float
model as the reference, positive = int8 better) and every metric's relative change.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.metrics import (MetricResults, UndefinedMetricError, evaluate, finite_results,
                         per_task_delta)


class OnnxNet(nn.Module):
    """An onnxruntime model (path, serialized bytes or ``onnx.ModelProto``) as a module.

    ``forward(img)`` returns the outputs as a list of float tensors aligned with ``tasks``;
    a batch larger than the model's fixed batch size is run in chunks. CPU only (the input is
    moved to the CPU and the outputs back to the input's device).
    """

    def __init__(self, model: Any, tasks: Sequence[str], threads: int | None = None) -> None:
        super().__init__()
        from .onnx_io import onnx_session
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        self.session = onnx_session(model if isinstance(model, bytes) else os.fspath(model),
                                    threads)
        self.tasks = list(tasks)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        if len(self.session.get_outputs()) != len(self.tasks):
            raise ValueError(f"ONNX model has {len(self.session.get_outputs())} outputs, "
                             f"tasks {self.tasks} need {len(self.tasks)}")

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = img.detach().float().cpu().numpy()
        step = self.batch or x.shape[0]
        if x.shape[0] % step:
            raise ValueError(f"batch of {x.shape[0]} images is not a multiple of the ONNX "
                             f"model's fixed batch size {step}")
        chunks = [self.session.run(None, {self.input_name: np.ascontiguousarray(x[i:i + step])})
                  for i in range(0, x.shape[0], step)]
        return [torch.from_numpy(np.concatenate([c[k] for c in chunks])).to(img.device)
                for k in range(len(self.tasks))]


def _relative_changes(new: MetricResults, ref: MetricResults
                      ) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, str]]]:
    """``({task: {metric: % change of new vs ref, or None}}, {task: {metric: why None}})``:
    a change is undefined when either value is (the metric's reason is given) or ref is 0."""
    out: dict[str, dict[str, float | None]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for task, metrics in ref.items():
        out[task] = {}
        for name, value in metrics.items():
            new_value = new.get(task, {}).get(name)
            why = None
            for side, results, v in (("float", ref, value), ("int8", new, new_value)):
                if v is None and why is None:
                    detail = results.undefined.get(task, {}).get(name, "missing")
                    why = f"{side} {task} {name} is undefined ({detail})"
            if why is None and value == 0:
                why = f"float {task} {name} is 0"
            if why is not None:
                out[task][name] = None
                reasons.setdefault(task, {})[name] = f"{why}: no relative change"
            else:
                out[task][name] = 100.0 * (new_value - value) / abs(value)
    return out, reasons


def int8_fidelity(float_net: nn.Module | None, int8_net: nn.Module,
                  loader: Iterable[Mapping[str, Any]], evaluator, max_batches: int | None = None,
                  device: torch.device | str = "cpu",
                  float_metrics: Mapping[str, Mapping[str, float]] | None = None
                  ) -> dict[str, Any]:
    """Evaluate ``float_net`` and ``int8_net`` (e.g. an :class:`OnnxNet`) on ``loader``.

    Returns ``{"float": metrics, "int8": metrics, "delta": {task: Δ %}, "metric_change_pct":
    {task: {metric: %}}, "max_abs_metric_change_pct", "undefined"}``. ``delta`` uses the
    metrics of ``lib.metrics.DELTA_METRICS``. Nothing undefined is reported as a number: an
    undefined metric (``None``, :class:`lib.metrics.MetricResults`), a Δ or change needing one,
    or a change relative to a float value of 0, is ``None``, and ``"undefined"`` says why:
    ``{"float": {task: {metric: reason}}, "int8": ..., "delta": {task: reason},
    "metric_change_pct": {task: {metric: reason}}}``. ``float_metrics`` (already measured on
    the same loader) skips evaluating ``float_net`` again.
    """
    if float_metrics is None:
        float_metrics = evaluate(float_net, loader, evaluator, device=device,
                                 max_batches=max_batches, progress=False)
    float_metrics = finite_results(float_metrics, "float model metrics")
    int8_metrics = finite_results(evaluate(int8_net, loader, evaluator, device=device,
                                           max_batches=max_batches, progress=False),
                                  "int8 model metrics")
    changes, change_reasons = _relative_changes(int8_metrics, float_metrics)
    delta: dict[str, float | None] = {}
    delta_reasons: dict[str, str] = {}
    for task in float_metrics:
        try:
            delta[task] = per_task_delta(int8_metrics, float_metrics, [task])[task]
        except (ZeroDivisionError, UndefinedMetricError) as exc:
            delta[task] = None
            delta_reasons[task] = str(exc)
    finite = [abs(v) for m in changes.values() for v in m.values() if v is not None]
    return {"float": float_metrics, "int8": int8_metrics, "delta": delta,
            "metric_change_pct": changes,
            "max_abs_metric_change_pct": max(finite) if finite else None,
            "undefined": {"float": float_metrics.undefined, "int8": int8_metrics.undefined,
                          "delta": delta_reasons, "metric_change_pct": change_reasons}}
