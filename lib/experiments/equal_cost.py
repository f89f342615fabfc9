"""Structured vs unstructured CUT at equal cost: Δ against parameter count and against latency.

Comparing methods at equal *sparsity* flatters unstructured pruning: 90 % of the weights zeroed
is not 90 % of the work removed on a CPU. These functions compare the study's rows at equal
non-zero parameter count and at equal measured latency instead:

    row.update(cost_columns(fine_tuned_net, (1, 3, H, W), threads=2))   # per study cell
    plot_equal_cost(rows, "runs/study/equal_cost.png")
    table = compare_at_equal_cost(rows, "latency_ms")

A row is a study row (``method``, ``tasks`` as ``"seg+depth"``, ``delta``) with the columns of
:func:`cost_columns`. The study calls these as separate steps; nothing here runs a study.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .cells import DENSE_FINETUNED

COST_AXES = {"params_nonzero": "non-zero parameters (M)", "latency_ms": "latency (ms)"}
STRUCTURED, UNSTRUCTURED = "structured_cut", "cut"
# Cells whose network's cost (non-zero parameters, measured latency) is recorded when the study
# has structured_cut, so structured and unstructured CUT are compared at equal cost; other
# studies pay nothing for it.
EQUAL_COST_METHODS = (UNSTRUCTURED, STRUCTURED, DENSE_FINETUNED)


def records_cost(method: str, methods: Sequence[str]) -> bool:
    """Whether a study running ``methods`` measures the cost of ``method``'s cells."""
    return method in EQUAL_COST_METHODS and STRUCTURED in methods


def has_both(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``rows`` hold both CUTs, so the equal-cost figure has something to compare."""
    return {r["method"] for r in rows} >= {UNSTRUCTURED, STRUCTURED}


def cost_columns(net, input_shape: Sequence[int], threads: int | None = None,
                 repeats: int = 5, engine: str = "onnxruntime") -> dict[str, Any]:
    """``{"params_nonzero", "params_total", "latency_ms", "latency_engine", "latency_threads"}``.

    Latency is measured (median of ``repeats``) on the network as it runs: prune hooks made
    permanent, dense kernels (unstructured zeros cost the same as any weight), in onnxruntime
    or PyTorch at ``threads`` threads.
    """
    import tempfile

    import torch

    from lib.export.onnx_io import export_onnx
    from lib.export.measure import (interleaved_latency_ms, onnx_runner, parameter_counts,
                                    torch_runner)

    threads = int(threads or torch.get_num_threads())
    counts = parameter_counts(net)
    with tempfile.TemporaryDirectory(prefix="cut_cost_") as tmp:
        if engine == "onnxruntime":
            runner = onnx_runner(export_onnx(net, Path(tmp) / "m.onnx", input_shape),
                                 input_shape, threads)
        elif engine == "torch":
            runner = torch_runner(net, input_shape)
        else:
            raise ValueError(f"engine must be 'onnxruntime' or 'torch', got {engine!r}")
        latency = interleaved_latency_ms({"net": runner}, threads, repeats)["net"]["median"]
    return {"params_nonzero": counts["nonzero"], "params_total": counts["total"],
            "latency_ms": latency, "latency_engine": engine, "latency_threads": threads}


def _curve(rows: Sequence[Mapping[str, Any]], method: str, tasks: str, x: str):
    """``(xs, deltas)`` of one method and selection, sorted by cost, equal costs averaged."""
    points: dict[float, list[float]] = {}
    for r in rows:
        if r.get("method") == method and r.get("tasks") == tasks and r.get("delta") is not None \
                and r.get(x) is not None:
            points.setdefault(float(r[x]), []).append(float(r["delta"]))
    xs = sorted(points)
    return np.array(xs), np.array([np.mean(points[v]) for v in xs])


def compare_at_equal_cost(rows: Sequence[Mapping[str, Any]], x: str = "params_nonzero",
                          structured: str = STRUCTURED, unstructured: str = UNSTRUCTURED
                          ) -> list[dict[str, Any]]:
    """For every structured row: the unstructured Δ at the same cost, linearly interpolated.

    Returns ``[{"tasks", x, "delta_structured", "delta_unstructured", "advantage"}]``
    (``advantage`` = structured - unstructured, percentage points; + = structured better).
    A cost outside the unstructured rows' range has ``None`` there: never extrapolated (at
    equal latency that is the usual case: unstructured zeros do not make dense kernels faster,
    so all its rows sit at one latency).
    """
    if x not in COST_AXES:
        raise ValueError(f"x must be one of {sorted(COST_AXES)}, got {x!r}")
    out = []
    for tasks in dict.fromkeys(r.get("tasks") for r in rows if r.get("method") == structured):
        sx, sd = _curve(rows, structured, tasks, x)
        ux, ud = _curve(rows, unstructured, tasks, x)
        for cost, delta in zip(sx, sd):
            inside = len(ux) >= 2 and ux[0] <= cost <= ux[-1]
            other = float(np.interp(cost, ux, ud)) if inside else None
            out.append({"tasks": tasks, x: float(cost), "delta_structured": float(delta),
                        "delta_unstructured": other,
                        "advantage": None if other is None else float(delta) - other})
    return out


def plot_equal_cost(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike,
                    structured: str = STRUCTURED, unstructured: str = UNSTRUCTURED,
                    title: str | None = None) -> Path:
    """Δ vs non-zero parameters and Δ vs latency, one row of panels per task selection.

    Every method with cost columns is drawn (structured and unstructured CUT highlighted);
    the fine-tuned dense control, if present, is a reference point. Saved atomically.
    """
    from matplotlib.figure import Figure

    from lib.utils import atomic_write

    selections = list(dict.fromkeys(r.get("tasks") for r in rows
                                    if r.get("method") in (structured, unstructured)))
    if not selections:
        raise ValueError(f"no rows of methods {structured!r} or {unstructured!r} to plot")
    methods = list(dict.fromkeys(r["method"] for r in rows
                                 if all(r.get(k) is not None for k in COST_AXES)))
    fig = Figure(figsize=(9, 3.2 * len(selections)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(selections), 2, squeeze=False))
    for i, tasks in enumerate(selections):
        for j, (x, label) in enumerate(COST_AXES.items()):
            ax = axes[i, j]
            for method in methods:
                xs, ds = _curve(rows, method, tasks, x)
                if not len(xs):
                    continue
                xs = xs / 1e6 if x == "params_nonzero" else xs
                strong = method in (structured, unstructured)
                ax.plot(xs, ds, marker="o" if strong else ".", lw=1.6 if strong else 0.8,
                        alpha=1.0 if strong else 0.5, label=method)
            ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("Δ vs dense (%)", fontsize=8)
            ax.set_title(f"{tasks}: at equal {'parameters' if j == 0 else 'latency'}",
                         fontsize=9)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
