"""Size and speed of a dense vs a compact network: parameters, MACs, bytes on disk, CPU latency.

Parameters, MACs and latency are measured by :mod:`lib.export.measure` (its docstring states
the units); file sizes with ``os.path.getsize`` on files actually written. Latency is timed
round-robin over all networks and engines so that load from other processes hits them alike.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from lib.masks import has_masks
from lib.utils import atomic_torch_save, atomic_write

from .artifact import save_artifact
from .measure import (MAC_UNIT, conv_macs, interleaved_latency_ms, onnx_runner,
                      parameter_counts, torch_runner)
from .onnx_io import check_onnx_parity, export_onnx

def measure_files(name: str, net: nn.Module, input_shape: Sequence[int], out_dir: Path,
                  threads: int, onnx: bool = True) -> dict[str, Any]:
    """One report row without latency: counts, MACs, the files written and their sizes."""
    stem = name.replace(" ", "_")
    params, macs = parameter_counts(net), conv_macs(net, input_shape)
    state_path = atomic_torch_save(net.state_dict(), out_dir / f"{stem}_state_dict.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dense network exported dense is expected here
        art32 = save_artifact(net, out_dir / f"{stem}.cutedge")
        art16 = save_artifact(net, out_dir / f"{stem}_fp16.cutedge", dtype="float16")
    row: dict[str, Any] = {
        "model": name, "tasks": getattr(net, "tasks", None), "masked": has_masks(net),
        "params_total": params["total"], "params_nonzero": params["nonzero"],
        "macs_dense": macs["dense"], "macs_effective": macs["effective"], "mac_unit": MAC_UNIT,
        "state_dict_bytes": os.path.getsize(state_path), "state_dict_path": str(state_path),
        "artifact_bytes": art32["bytes"], "artifact_path": art32["path"],
        "artifact_value_bytes": art32["value_bytes"], "artifact_mask_bytes": art32["mask_bytes"],
        "artifact_values_stored": art32["values_stored"],
        "artifact_fp16_bytes": art16["bytes"], "artifact_fp16_path": art16["path"],
        "threads": threads, "input_shape": list(input_shape)}
    if onnx:
        onnx_path = export_onnx(net, out_dir / f"{stem}.onnx", input_shape)
        parity = check_onnx_parity(net, onnx_path, input_shape, threads=threads)
        row.update(onnx_path=str(onnx_path), onnx_bytes=os.path.getsize(onnx_path),
                   onnx_parity_ok=parity["ok"], onnx_max_abs_diff=parity["max_abs_diff"])
    return row


def size_speed_report(dense_net: nn.Module, compact_net: nn.Module, input_shape: Sequence[int],
                      threads: int | None = None, repeats: int = 10, warmup: int = 2,
                      out_dir: str | os.PathLike | None = None,
                      extra: Mapping[str, nn.Module] | None = None,
                      onnx: bool = True, int8: Any = None,
                      metrics: Any = None) -> list[dict[str, Any]]:
    """Rows for ``dense``, ``compact`` and any ``extra`` networks (e.g. ``{"structured": net}``).

    Every row carries ratios against the dense row: ``size_ratio`` (its artifact bytes / the
    dense state-dict file), ``size_ratio_fp16``, ``torch_latency_ratio``,
    ``onnx_latency_ratio``, ``macs_ratio`` and ``macs_effective_ratio``. Files go to
    ``out_dir`` (kept) or a temporary folder (deleted; the ``*_path`` fields then name files
    that no longer exist). ``threads`` defaults to ``torch.get_num_threads()``. Latencies are
    most trustworthy on an idle machine; on a shared one, start Python with
    ``OMP_WAIT_POLICY=PASSIVE`` (PyTorch's spinning OpenMP threads otherwise dominate).

    ``int8`` (a :class:`lib.export.report_int8.Int8Options`) adds an ``"<name> int8"`` row per
    network, timed in the same round-robin; ``metrics`` (a
    :class:`lib.export.report_int8.TaskMetrics`) evaluates every row on the test split and adds
    its Δ per task vs the dense row (``delta_vs_dense``) and, for int8 rows, vs its float model
    (``delta_vs_float``). See :mod:`lib.export.report_int8`.
    """
    threads = int(threads or torch.get_num_threads())
    nets = {"dense": dense_net, "compact": compact_net, **dict(extra or {})}
    with tempfile.TemporaryDirectory(prefix="cut_export_") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [measure_files(name, net, input_shape, folder, threads, onnx)
                for name, net in nets.items()]
        runners = {("torch", name): torch_runner(net, input_shape) for name, net in nets.items()}
        if onnx:
            runners.update({("onnx", row["model"]): onnx_runner(row["onnx_path"], input_shape,
                                                                threads) for row in rows})
        if int8 is not None:
            from .report_int8 import int8_rows
            quantized, int8_runners = int8_rows(nets, input_shape, folder, threads, int8)
            rows += quantized
            runners.update(int8_runners)
        latency = interleaved_latency_ms(runners, threads, repeats, warmup)
        if metrics is not None:
            from .report_int8 import add_task_metrics
            add_task_metrics(rows, nets, metrics, threads)
    for row in rows:
        for engine in ("torch", "onnx") if onnx else ("torch",):
            if (engine, row["model"]) in latency:
                row[f"{engine}_latency_ms"] = latency[(engine, row["model"])]["median"]
                row[f"{engine}_latency_min_ms"] = latency[(engine, row["model"])]["min"]
        row["repeats"] = repeats
    base = rows[0]
    for row in rows:
        if "artifact_bytes" in row:
            row["size_ratio"] = row["artifact_bytes"] / base["state_dict_bytes"]
        if "artifact_int8_bytes" in row:
            row["size_ratio_int8"] = row["artifact_int8_bytes"] / base["state_dict_bytes"]
        if "artifact_fp16_bytes" in row:
            row["size_ratio_fp16"] = row["artifact_fp16_bytes"] / base["state_dict_bytes"]
        row["macs_ratio"] = row["macs_dense"] / base["macs_dense"]
        row["macs_effective_ratio"] = row["macs_effective"] / base["macs_dense"]
        if "torch_latency_ms" in row:
            row["torch_latency_ratio"] = row["torch_latency_ms"] / base["torch_latency_ms"]
        if onnx and "onnx_latency_ms" in row:
            row["onnx_latency_ratio"] = row["onnx_latency_ms"] / base["onnx_latency_ms"]
    return rows


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} GB"


REPORT_COLUMNS = [
    ("model", "model", str),
    ("params_total", "params", lambda v: f"{v / 1e6:.3f} M"),
    ("params_nonzero", "non-zero", lambda v: f"{v / 1e6:.3f} M"),
    ("macs_dense", "GMACs dense", lambda v: f"{v / 1e9:.3f}"),
    ("macs_effective", "GMACs effective", lambda v: f"{v / 1e9:.3f}"),
    ("state_dict_bytes", "state_dict file", _human_bytes),
    ("artifact_bytes", "artifact fp32", _human_bytes),
    ("size_ratio", "fp32 / dense sd", lambda v: f"{v:.4f}"),
    ("artifact_fp16_bytes", "artifact fp16", _human_bytes),
    ("size_ratio_fp16", "fp16 / dense sd", lambda v: f"{v:.4f}"),
    ("artifact_int8_bytes", "artifact int8", _human_bytes),
    ("size_ratio_int8", "int8 / dense sd", lambda v: f"{v:.4f}"),
    ("torch_latency_ms", "torch ms", lambda v: f"{v:.1f}"),
    ("torch_latency_ratio", "torch ratio", lambda v: f"{v:.3f}"),
    ("onnx_latency_ms", "ORT ms", lambda v: f"{v:.1f}"),
    ("onnx_latency_ratio", "ORT ratio", lambda v: f"{v:.3f}"),
]


def report_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`size_speed_report` rows, with units and threads stated."""
    columns = [c for c in REPORT_COLUMNS + _delta_columns(rows) if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r[key]) if r.get(key) is not None else "–"
                                for key, _, fmt in columns) + " |" for r in rows]
    if rows:
        r = rows[0]
        lines.append(f"\nInput {tuple(r['input_shape'])}; {MAC_UNIT}; latency = median of "
                     f"{r['repeats']} CPU runs at {r['threads']} thread(s); ratios vs "
                     f"'{r['model']}' (sizes: vs its state_dict file)."
                     + (" Δ: per-task metric change in % (lib.metrics.per_task_delta; + = "
                        "better), on the test split." if _delta_columns(rows) else ""))
    return "\n".join(lines)


def _delta_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, Callable]]:
    """Flat ``delta_vs_dense:<task>`` / ``delta_vs_float:<task>`` columns of the rows."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("delta_vs_")
                              and ":" in k))
    return [(k, f"Δ {k.split(':')[1]} vs {k.split(':')[0][len('delta_vs_'):]} %",
             lambda v: f"{v:+.2f}") for k in keys]


def plot_report(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike | None = None):
    """Bar charts of size, MACs and latency ratios (vs the first row). Returns the figure.

    Uses matplotlib's object API (no pyplot state), so it works under the Agg backend.
    """
    from matplotlib.figure import Figure

    names = [r["model"] for r in rows]
    panels = [("file size / dense state_dict", ["size_ratio", "size_ratio_fp16", "size_ratio_int8"],
               ["fp32", "fp16", "int8"]),
              ("MACs / dense", ["macs_ratio", "macs_effective_ratio"], ["dense", "effective"]),
              ("latency / dense", ["torch_latency_ratio", "onnx_latency_ratio"], ["PyTorch", "ORT"])]
    with_delta = any("delta_mean" in r for r in rows)
    fig = Figure(figsize=(4 * len(panels), 3.2 * (2 if with_delta else 1)), layout="constrained")
    axes = fig.subplots(2 if with_delta else 1, len(panels))
    axes = axes[0] if with_delta else axes
    x = np.arange(len(rows))
    for ax, (title, keys, labels) in zip(axes, panels):
        keys = [(k, lab) for k, lab in zip(keys, labels) if any(k in r for r in rows)]
        width = 0.8 / max(1, len(keys))
        for i, (key, label) in enumerate(keys):
            values = [r.get(key, np.nan) for r in rows]
            bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, values, width, label=label)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(x, names, rotation=15)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    if any("delta_mean" in r for r in rows):
        plot_tradeoff(rows, fig=fig)
    threads = rows[0]["threads"] if rows else "?"
    fig.suptitle(f"input {tuple(rows[0]['input_shape']) if rows else ''}, {threads} CPU thread(s)",
                 fontsize=9)
    if path is not None:
        fmt = Path(path).suffix.lstrip(".") or "png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))
    return fig


def plot_tradeoff(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike | None = None,
                  fig=None):
    """File size and latency (vs the dense row) against Δ vs dense, one point per variant.

    Δ is the mean over the row's tasks of ``delta_vs_dense`` (percent, + = better). Drawn on
    the second row of ``fig`` (as :func:`plot_report` does) or on a new figure.
    """
    from matplotlib.figure import Figure

    own = fig is None
    if own:
        fig = Figure(figsize=(12, 3.4), layout="constrained")
        axes = fig.subplots(1, 3)
    else:
        axes = fig.axes[-3:]
    points = [r for r in rows if r.get("delta_mean") is not None]
    panels = [("deployed_size_ratio", "deployed file / dense state_dict"),
              ("onnx_latency_ratio", "ORT latency / dense"),
              ("torch_latency_ratio", "PyTorch latency / dense")]
    for ax, (key, label) in zip(axes, panels):
        for r in points:
            if key == "deployed_size_ratio":   # the int8 artifact for int8 rows, else fp32
                r = {**r, key: r.get("size_ratio_int8", r.get("size_ratio"))}
            if r.get(key) is None:
                continue
            marker = "s" if r["model"].endswith("int8") else "o"
            ax.scatter(r[key], r["delta_mean"], marker=marker)
            ax.annotate(r["model"], (r[key], r["delta_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("Δ vs dense, mean over tasks (%)", fontsize=8)
    if own and path is not None:
        fmt = Path(path).suffix.lstrip(".") or "png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))
    return fig
