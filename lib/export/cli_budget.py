"""The ``--int8`` and budget-mode parts of ``python -m lib export`` (see :mod:`lib.export.cli`).

Both read ``--config`` (``--profile``) for the dataset: its train split calibrates and scores,
its test split measures the int8 model's task metrics. Every input (config, tasks, data, image
size, calibration batches, budget) is checked before anything is scored or written.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib.cli_args import config_settings
from lib.tasks import check_task_selection
from lib.utils import atomic_write_json, atomic_write_text


@dataclass
class Int8Inputs:
    """What ``--int8`` needs, checked: config, loaders, calibration images, evaluator."""

    cfg: Any
    input_shape: list[int]
    calibration: list
    test_loader: Any
    evaluator: Any
    eval_batches: int | None
    threads: int | None


def _config(args: argparse.Namespace, what: str):
    from lib.config import load_config

    if args.config is None:
        raise ValueError(f"python -m lib export: {what} needs --config (its data calibrates "
                         f"and scores)")
    if args.input_shape is None:
        raise ValueError(f"python -m lib export: {what} needs --input-shape N C H W")
    cfg = load_config(args.config, profile=args.profile, **config_settings(args))
    if list(args.input_shape[2:]) != list(cfg.IMAGE_SHAPE):
        raise ValueError(f"--input-shape {' '.join(map(str, args.input_shape))} does not match "
                         f"config {args.config!r} profile {args.profile!r} images "
                         f"{tuple(cfg.IMAGE_SHAPE)} (H, W): the test split is evaluated at its size")
    cfg.DATA_ROOT = _data_root(cfg, args.data_root, args.seed)
    return cfg


def _data_root(cfg, data_root: str | None, seed: int) -> str:
    """An explicit root must exist; without one, the config's root or the synthetic dataset."""
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-root {data_root} is not a folder")
        return str(data_root)
    if Path(cfg.DATA_ROOT).is_dir():
        return cfg.DATA_ROOT
    from lib.data.synthetic import prepare_synthetic
    root = prepare_synthetic(cfg, seed=seed, progress=False)
    print(f"config DATA_ROOT {cfg.DATA_ROOT} does not exist: using the built-in synthetic "
          f"dataset {root}")
    return str(root)


def prepare_int8(args: argparse.Namespace, tasks) -> Int8Inputs:
    """Config, calibration images (checked) and the test loader for ``--int8``."""
    from lib.data import build_loader
    from lib.metrics import metrics_from_config

    from .quantize import calibration_images

    cfg = _config(args, "--int8")
    unknown = [t for t in tasks if t not in cfg.TASKS]
    if unknown:
        raise ValueError(f"network task(s) {unknown} are not tasks of config {args.config!r} "
                         f"({cfg.TASKS})")
    shape = [int(s) for s in args.input_shape]
    train = build_loader(cfg, "train", seed=args.seed, augment=False, shuffle=False)
    images = calibration_images(train, shape, args.calibration_batches, dataset=cfg.DATASET)
    test = build_loader(cfg, "test", batch_size=shape[0], shuffle=False, seed=args.seed)
    evaluator = metrics_from_config(cfg, tasks=list(tasks))
    calibration = [{"img": torch.from_numpy(x)} for x in images.images]
    return Int8Inputs(cfg, shape, calibration, test, evaluator, args.eval_batches, args.threads)


def export_int8(net, inputs: Int8Inputs, stem: Path) -> dict[str, Any]:
    """Write ``{stem}_int8.onnx`` and ``{stem}.int8.cutedge``; measure int8 vs float metrics."""
    from .fidelity import OnnxNet, int8_fidelity
    from .int8_artifact import INT8_SUFFIX, save_int8_artifact
    from lib.masks import has_masks
    from .quantize import pruned_zeros_kept, quantize_compact
    from .measure import cpu_plain

    onnx_path = Path(f"{stem}_int8.onnx")
    info = quantize_compact(net, onnx_path, inputs.calibration, inputs.input_shape,
                            num_batches=len(inputs.calibration), min_batches=1)
    zeros = pruned_zeros_kept(net, onnx_path) if has_masks(net) else None
    artifact = save_int8_artifact(onnx_path, Path(f"{stem}{INT8_SUFFIX}"),
                                  meta={"tasks": list(net.tasks),
                                        "architecture": net.architecture(),
                                        "input_shape": inputs.input_shape,
                                        "calibration_inputs": info["calibration_inputs"]})
    float_net = cpu_plain(net)  # the network itself stays where it is, hooks and all
    fidelity = int8_fidelity(float_net, OnnxNet(onnx_path, net.tasks, inputs.threads),
                             inputs.test_loader, inputs.evaluator, inputs.eval_batches)
    atomic_write_json(fidelity, Path(f"{stem}_int8_fidelity.json"))
    why = fidelity["undefined"]["delta"]
    delta = ", ".join(f"{t} {f'undefined ({why[t]})' if d is None else f'{d:+.3f}%'}"
                      for t, d in fidelity["delta"].items())
    print(f"int8 {artifact['path']}: {artifact['bytes']} bytes ({info['path']}: "
          f"{info['bytes']} bytes QDQ); Δ vs float on the test split: {delta}"
          + (f"; pruned weights non-zero after quantization: {zeros['nonzero_after']}"
             if zeros else ""))
    return {"onnx": info, "artifact": artifact, "zeros": zeros, "fidelity": fidelity}


def run_budget(args: argparse.Namespace) -> int:
    """Budget mode: solve the ratio, write the chosen network's files and ``budget.md``."""
    from lib.data import build_loader
    from lib.losses import losses_from_config
    from lib.pruning import load_base_model

    from lib.experiments.budget import fit_budget
    from lib.pruning.scores import score_progress

    from .budget import budget_markdown, check_budget

    check_budget(args.budget_mb, args.budget_ms)
    if args.checkpoint is None or not args.tasks:
        raise ValueError("python -m lib export: budget mode needs --checkpoint (the dense base "
                         "model) and --tasks T [T ...]")
    if args.dtype == "both":
        raise ValueError("python -m lib export: budget mode deploys one format: --dtype "
                         "float32 or float16, or --int8")
    cfg = _config(args, "budget mode")
    check_task_selection(args.tasks, cfg.TASKS, f"--tasks (config {args.config!r})")
    net = load_base_model(args.checkpoint, cfg).eval()
    criterion = losses_from_config(cfg)
    loader = build_loader(cfg, "train", seed=args.seed)
    calibration = build_loader(cfg, "train", seed=args.seed, augment=False, shuffle=False)
    with score_progress(not args.quiet):   # --quiet: no scoring bar, no per-ratio lines
        result = fit_budget(net, criterion, loader, args.tasks, args.input_shape,
                            budget_mb=args.budget_mb, budget_ms=args.budget_ms,
                            structure=args.structure, dtype="int8" if args.int8 else args.dtype,
                            engine=args.latency_engine, threads=args.threads, repeats=args.repeats,
                            num_batches=args.num_batches or cfg.PRUNE_NUM_BATCHES,
                            ranking=args.ranking, tasks=cfg.TASKS, calibration=calibration,
                            calibration_batches=args.calibration_batches, dataset=cfg.DATASET,
                            iterations=args.iterations, out_dir=args.out, seed=args.seed,
                            verbose=not args.quiet)
    table = budget_markdown(result)
    atomic_write_text(table + "\n", args.out / "budget.md")
    print(table)
    if args.dense is not None:
        write_budget_report(args, cfg, result, calibration)
    return 0


def write_budget_report(args: argparse.Namespace, cfg, result, calibration) -> None:
    """``report.md``/``report.png``: the chosen network (and its int8 row) against ``--dense``,
    with task metrics on the test split and the budget result appended."""
    from lib.data import build_loader
    from lib.metrics import metrics_from_config
    from lib.pruning import load_base_model

    from .budget import budget_markdown
    from .report import plot_report, report_markdown, size_speed_report
    from .report_int8 import Int8Options, TaskMetrics

    dense = load_base_model(args.dense, cfg).eval()
    shape = [int(s) for s in args.input_shape]
    test = build_loader(cfg, "test", batch_size=shape[0], shuffle=False, seed=args.seed)
    int8 = (Int8Options(calibration, args.calibration_batches, cfg.DATASET) if args.int8
            else None)
    rows = size_speed_report(
        dense, result.net, shape, threads=args.threads, repeats=args.repeats,
        out_dir=args.out / "report_files", int8=int8,
        metrics=TaskMetrics(test, lambda tasks: metrics_from_config(cfg, tasks=tasks),
                            args.eval_batches))
    table = report_markdown(rows) + "\n\n" + budget_markdown(result)
    atomic_write_text(table + "\n", args.out / "report.md")
    plot_report(rows, args.out / "report.png")
    print(report_markdown(rows))
