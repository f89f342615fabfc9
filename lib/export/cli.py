"""``python -m lib export``: pruned checkpoint -> edge artifact (+ ONNX, + size/speed report).

A pruned checkpoint (``lib.checkpoints.save_pruned``) is a plain state dict (``weight_orig``/
``weight_mask`` for pruned tensors) with a JSON sidecar holding the architecture
(``net.architecture()`` of a registered model, either the whole JSON or under its
``"architecture"`` key), given as ``--checkpoint`` (formerly ``--pruned``). The sidecar is
``--architecture`` or, by default, ``X.json`` / ``X.pth.json`` next to ``X.pth``. A dense
checkpoint for the report takes ``--dense`` and either its sidecar or ``--config``.

``--int8`` also writes the int8 model (``X_int8.onnx``, QDQ) and its sparse artifact
(``X.int8.cutedge``), calibrated on ``--calibration-batches`` train batches of ``--config``'s
data, with its task metrics against the float model on the test split
(``X_int8_fidelity.json``; an undefined metric, Δ or change is ``null``, its reason under
``"undefined"``).

An export replaces the previous export of the same checkpoint in ``--out`` whole (its files,
``report*`` and ``export_summary.json`` are removed first), and a failed export removes what it
wrote (an ONNX parity failure, exit 1, too): the folder never holds files of two exports, or of
a half one.

Budget mode (``--budget-mb`` and/or ``--budget-ms``, see :mod:`lib.export.budget`) prunes
the dense ``--checkpoint`` (formerly ``--base``) for ``--tasks`` to the largest keep / channel
ratio whose measured file size and latency fit, instead of exporting it::

    python -m lib export --budget-mb 10 --budget-ms 200 --checkpoint base.pth --config nyuv2_3task \
        --profile reference --tasks seg --structure structured --int8 --input-shape 1 3 480 640 \
        --out export/
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch

from lib import checkpoints
from lib.checkpoints import find_sidecar, sidecar_path
from lib.cli_args import (add_config_arguments, add_data_root_argument, add_num_batches_argument,
                          add_out_argument, add_quiet_argument, add_renamed, add_seed_argument,
                          add_set_argument, announce, config_settings, resolve_config)
from lib.masks import has_masks
from lib.utils import atomic_write_json, atomic_write_text, check_output_dir

from .artifact import check_finite_outputs, load_artifact, max_output_difference, save_artifact

SUMMARY_NAME = "export_summary.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_renamed(parser, "--checkpoint", "--pruned", "--base", type=Path, default=None,
                help="the pruned checkpoint to export: state dict with weight_orig/weight_mask "
                     "keys; in budget mode the dense base model to prune (required)")
    parser.add_argument("--architecture", type=Path, default=None,
                        help="architecture JSON (default: the sidecar X.json next to "
                             "--checkpoint)")
    parser.add_argument("--dtype", choices=["float32", "float16", "both"], default="float32",
                        help="storage type of the artifact's values (float32 is lossless)")
    parser.add_argument("--onnx", action="store_true", help="also export ONNX and check parity")
    parser.add_argument("--input-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                        default=None, help="input shape for ONNX / the report (default: "
                                           "none; required by --onnx and --dense)")
    parser.add_argument("--dense", type=Path, default=None,
                        help="dense base checkpoint: write a size/speed report against it (in "
                             "budget mode: of the chosen network, with task metrics) (default: "
                             "none, no report)")
    parser.add_argument("--dense-architecture", type=Path, default=None,
                        help="architecture JSON of --dense (default: its sidecar)")
    add_config_arguments(parser, required=False, reads="--checkpoint",
                         config_help="config of --dense (instead of a sidecar), of --int8's "
                                     "data and of budget mode")
    add_data_root_argument(parser, "the config's DATA_ROOT / CUT_DATA_ROOT if it exists, else "
                                   "the built-in synthetic dataset (announced); --int8 and "
                                   "budget mode read it")
    add_set_argument(parser)
    add_seed_argument(parser)
    add_quiet_argument(parser)
    add_out_argument(parser, "output folder", required=True, type=Path)
    add_num_batches_argument(parser)   # budget mode's scoring
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for latency (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per latency")
    add_int8_and_budget_arguments(parser)


def add_int8_and_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--int8`` flags and the budget-mode flag group."""
    int8 = parser.add_argument_group("int8 (static post-training quantization)")
    int8.add_argument("--int8", action="store_true",
                      help="also write the int8 model, calibrated on --config's train data")
    int8.add_argument("--calibration-batches", type=int, default=8,
                      help="train batches to calibrate on (at least 4)")
    int8.add_argument("--eval-batches", type=int, default=None,
                      help="test batches for the int8 task metrics (default: the whole split)")
    budget = parser.add_argument_group("budget mode (prune --checkpoint to fit)")
    budget.add_argument("--budget-mb", type=float, default=None,
                        help="file size budget, MiB (default: none)")
    budget.add_argument("--budget-ms", type=float, default=None,
                        help="latency budget on this machine, ms (median of --repeats) "
                             "(default: none)")
    budget.add_argument("--tasks", nargs="+", default=None,
                        help="selected task names (required in budget mode)")
    budget.add_argument("--structure", choices=["structured", "unstructured"],
                        default="structured", help="channel ratio or keep ratio is solved")
    budget.add_argument("--ranking", choices=["uniform", "global"], default="uniform",
                        help="structured CUT channel ranking")
    # Not reproduce's --engine (how a study's units run): the runtime a latency is timed in.
    add_renamed(budget, "--latency-engine", "--engine", choices=["onnxruntime", "torch"],
                default="onnxruntime", help="where the latency budget is measured")
    budget.add_argument("--iterations", type=int, default=6, help="bisection steps")


def load_network(checkpoint: Path, architecture: Path | None):
    """A (masked) network from ``checkpoint`` and its architecture JSON (``--architecture`` or
    the sidecar ``X.json`` / ``X.pth.json``), through :func:`lib.checkpoints.load_network`:
    plain state dicts, ``{"state_dict"|"model": ...}`` wrappers and DataParallel prefixes are
    accepted; ``weight_orig``/``weight_mask`` pairs become prune masks. The file is checked
    against its sidecar and its values (finite, binary masks) before anything is loaded."""
    side = architecture or find_sidecar(checkpoint)
    if side is None:
        raise FileNotFoundError(f"no architecture sidecar for {checkpoint}: expected "
                                f"{sidecar_path(checkpoint)} or pass --architecture")
    return checkpoints.load_network(checkpoint, sidecar=side)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "export folder")   # every input is read and checked first
    source = resolve_config(args)
    budget = args.budget_mb is not None or args.budget_ms is not None
    if args.set:   # only --int8, --dense and budget mode read the config: never ignored
        if not (args.int8 or args.dense is not None or budget):
            raise ValueError(f"--set {' '.join(args.set)}: this export reads no config (only "
                             f"--int8, --dense and budget mode do)")
        config_settings(args)   # a config to set it in, known keys, values of their kind
    announce(args, source)
    if budget:
        from .cli_budget import run_budget
        return run_budget(args)
    if args.checkpoint is None:
        raise ValueError("python -m lib export: give --checkpoint (or a budget: "
                         "--budget-mb/--budget-ms)")
    if (args.onnx or args.dense is not None) and args.input_shape is None:
        raise SystemExit("python -m lib export: --onnx and --dense need --input-shape N C H W")
    net = load_network(args.checkpoint, args.architecture).eval()
    dense = None
    if args.dense is not None:
        if args.config is not None and args.dense_architecture is None:
            from lib.config import load_config
            cfg = load_config(args.config, args.profile, **config_settings(args))
            dense = checkpoints.load_base_model(args.dense, cfg).eval()
        else:
            dense = load_network(args.dense, args.dense_architecture).eval()
    probe_shape = args.input_shape or [1, 3, 64, 64]
    probe = torch.randn(*probe_shape, generator=torch.Generator().manual_seed(0))
    check_finite_outputs(net, probe, f"outputs of {args.checkpoint} on a probe input")
    int8_inputs = None
    if args.int8:  # every int8 input is checked before anything is written
        from .cli_budget import prepare_int8
        int8_inputs = prepare_int8(args, net.tasks)
    if not has_masks(net):
        print(f"note: {args.checkpoint} has no weight_mask entries: exported dense")
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = export_outputs(args.out, args.checkpoint.stem)
    remove_outputs(outputs)   # a re-export replaces the last one whole: no stale files stay
    try:
        code = _write_export(args, net, dense, probe, int8_inputs)
    except BaseException:
        code = None
        raise
    finally:
        if code != 0:   # a failed export leaves none of its files behind
            remove_outputs(outputs)
            if created and not any(args.out.iterdir()):
                args.out.rmdir()
    return code


def export_outputs(out: Path, stem: str) -> list[Path]:
    """Every path an export of checkpoint ``stem`` into folder ``out`` may write."""
    from .int8_artifact import INT8_SUFFIX
    names = (f"{stem}.cutedge", f"{stem}_fp16.cutedge", f"{stem}.onnx", f"{stem}_int8.onnx",
             f"{stem}{INT8_SUFFIX}", f"{stem}_int8_fidelity.json", "report.md", "report.png",
             "report_files", SUMMARY_NAME)
    return [out / name for name in names]


def remove_outputs(paths: list[Path]) -> None:
    """Delete each of ``paths`` that exists (a folder with its content)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _write_export(args: argparse.Namespace, net, dense, probe: torch.Tensor,
                  int8_inputs) -> int:
    """Write the artifact(s), ONNX, int8 files, report and summary; the exit code."""
    stem = args.checkpoint.stem
    dtypes = ["float32", "float16"] if args.dtype == "both" else [args.dtype]
    summary: dict[str, Any] = {"checkpoint": str(args.checkpoint), "artifacts": []}
    for dtype in dtypes:
        suffix = "" if dtype == "float32" else "_fp16"
        info = save_artifact(net, args.out / f"{stem}{suffix}.cutedge", dtype=dtype)
        info["max_abs_output_diff"] = max_output_difference(net, load_artifact(info["path"]), probe)
        summary["artifacts"].append(info)
        print(f"artifact {info['path']}: {info['bytes']} bytes ({dtype}), "
              f"{info['values_stored']}/{info['values_total']} values stored, "
              f"max |output diff| {info['max_abs_output_diff']:.3g}")
    if args.onnx:
        from .onnx_io import check_onnx_parity, export_onnx
        onnx_path = export_onnx(net, args.out / f"{stem}.onnx", args.input_shape)
        parity = check_onnx_parity(net, onnx_path, args.input_shape, threads=args.threads)
        summary["onnx"] = {"path": str(onnx_path), **parity}
        print(f"onnx {onnx_path}: parity {'ok' if parity['ok'] else 'FAILED'} "
              f"(max |diff| {parity['max_abs_diff']:.3g})")
        if not parity["ok"]:
            return 1
    if args.int8:
        from .cli_budget import export_int8
        summary["int8"] = export_int8(net, int8_inputs, args.out / stem)
    if dense is not None:
        from .report import plot_report, report_markdown, size_speed_report
        rows = size_speed_report(dense, net, args.input_shape, threads=args.threads,
                                 repeats=args.repeats, out_dir=args.out / "report_files")
        table = report_markdown(rows)
        atomic_write_text(table + "\n", args.out / "report.md")
        plot_report(rows, args.out / "report.png")
        summary["report"] = rows
        print(table)
    atomic_write_json(summary, args.out / SUMMARY_NAME)
    return 0
