"""Budget mode: the largest compact network that fits "X MB" and/or runs in "Y ms" here.

    result = solve_budget(build, Measurer((1, 3, 224, 288), dtype="int8", calibration=loader),
                          budget_mb=10, budget_ms=200, structure="structured")
    print(budget_markdown(result))

``build(ratio) -> network`` is any candidate family; pruning's live in
:mod:`lib.experiments.budget` (``fit_budget``: score a base model once, then solve), since
the export layer does not import pruning.

The knob is the keep ratio of unstructured CUT (``structure="unstructured"``) or the channel
ratio (1 - channel sparsity) of structured CUT (``"structured"``). Sizes and latencies are
**measured**, never predicted: every candidate is built, written in the deployed format
(``.cutedge`` float32/float16, or the int8 artifact), its file size read from disk and its
latency timed (median of ``repeats`` runs at ``threads`` threads, onnxruntime or PyTorch).
The ratio is solved by bisection on those measurements, assuming only that a larger ratio is
not smaller or faster: the largest ratio ever measured within budget wins, and the result lists
every trial. Scores are computed once (the search re-decides, it does not re-score).

A budget that even the smallest candidate misses raises :class:`BudgetUnreachable` (one line,
with the smallest size and latency reached) and writes nothing; a met budget writes the chosen
network's files (each atomically, ``budget.json`` last). Unstructured zeros do not speed up
dense kernels, so a latency budget is met by the structured search, not the unstructured one.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from lib.utils import atomic_write, atomic_write_json

from .artifact import save_artifact
from .int8_artifact import INT8_SUFFIX, save_int8_artifact
from .onnx_io import export_onnx
from .quantize import (DEFAULT_CALIBRATION_BATCHES, MIN_CALIBRATION_BATCHES, calibration_images,
                       quantize_compact)
from .measure import interleaved_latency_ms, onnx_runner, torch_runner

STRUCTURES = ("unstructured", "structured")
DTYPES = ("float32", "float16", "int8")
ENGINES = ("onnxruntime", "torch")
MB = 2 ** 20  # "MB" here is MiB, as in the report
# Search range of the ratio: unstructured keep ratio / structured channel ratio.
RATIO_RANGE = {"unstructured": (0.005, 1.0), "structured": (0.02, 1.0)}


class BudgetUnreachable(ValueError):
    """No candidate of the search range meets the budget."""


@dataclass
class BudgetTrial:
    """One measured candidate."""

    ratio: float
    bytes: int
    latency_ms: float
    meets: bool


@dataclass
class BudgetResult:
    """The chosen candidate and how it was found (every trial, in measurement order)."""

    structure: str
    ratio: float                  # keep ratio (unstructured) or channel ratio (structured)
    bytes: int
    latency_ms: float
    budget_mb: float | None
    budget_ms: float | None
    dtype: str
    engine: str
    threads: int
    repeats: int
    input_shape: list[int]
    trials: list[BudgetTrial]
    files: dict[str, str] = field(default_factory=dict)
    net: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def mb(self) -> float:
        return self.bytes / MB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the network, trials as dicts, plus ``mb``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "net"}
        out["trials"] = [asdict(t) for t in self.trials]
        out["files"] = dict(self.files)
        out["mb"] = self.mb
        return out


def check_budget(budget_mb: float | None, budget_ms: float | None) -> None:
    """One-line ValueError unless at least one budget is given and all given are > 0."""
    if budget_mb is None and budget_ms is None:
        raise ValueError("give a size budget (MB) and/or a latency budget (ms)")
    for name, value in (("budget_mb", budget_mb), ("budget_ms", budget_ms)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")


# ----------------------------------------------------------------------------- measuring
class Measurer:
    """Writes a candidate in the deployed format into a scratch folder and measures it."""

    def __init__(self, input_shape: Sequence[int], dtype: str = "float32",
                 engine: str = "onnxruntime", threads: int | None = None, repeats: int = 5,
                 warmup: int = 1, calibration: Iterable[Mapping[str, Any]] | None = None,
                 calibration_batches: int = DEFAULT_CALIBRATION_BATCHES,
                 min_calibration_batches: int = MIN_CALIBRATION_BATCHES,
                 dataset: str | None = None) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if dtype == "int8" and engine != "onnxruntime":
            raise ValueError("the int8 model runs in onnxruntime: use engine='onnxruntime'")
        self.input_shape = [int(s) for s in input_shape]
        self.dtype, self.engine = dtype, engine
        self.threads = int(threads or torch.get_num_threads())
        self.repeats, self.warmup = int(repeats), int(warmup)
        self.calibration = None
        if dtype == "int8":
            if calibration is None:
                raise ValueError("dtype='int8' needs calibration batches of the task data")
            # Checked (and the images kept) once, before any candidate is built.
            images = calibration_images(calibration, self.input_shape, calibration_batches,
                                        min_calibration_batches, dataset)
            self.calibration = [{"img": torch.from_numpy(x)} for x in images.images]

    def write(self, net: nn.Module, folder: Path, stem: str) -> dict[str, Path]:
        """The deployed files of ``net`` in ``folder``: ``artifact`` and ``onnx``."""
        if self.dtype == "int8":
            onnx_path = folder / f"{stem}_int8.onnx"
            quantize_compact(net, onnx_path, self.calibration, self.input_shape,
                             num_batches=len(self.calibration), min_batches=1)
            artifact = Path(save_int8_artifact(onnx_path, folder / f"{stem}{INT8_SUFFIX}")["path"])
            return {"artifact": artifact, "onnx": onnx_path}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a structured network has no masks: dense, expected
            artifact = Path(save_artifact(net, folder / f"{stem}.cutedge", dtype=self.dtype)["path"])
        files = {"artifact": artifact}
        if self.engine == "onnxruntime":
            files["onnx"] = export_onnx(net, folder / f"{stem}.onnx", self.input_shape)
        return files

    def measure(self, net: nn.Module, folder: Path, stem: str) -> tuple[int, float, dict]:
        """``(artifact bytes, median latency ms, files)`` of ``net``."""
        files = self.write(net, folder, stem)
        runner = (onnx_runner(files["onnx"], self.input_shape, self.threads)
                  if self.engine == "onnxruntime" else torch_runner(net, self.input_shape))
        latency = interleaved_latency_ms({"candidate": runner}, self.threads, self.repeats,
                                         self.warmup)["candidate"]["median"]
        return os.path.getsize(files["artifact"]), latency, files


# ----------------------------------------------------------------------------- the search
def solve_budget(build: Callable[[float], nn.Module], measurer: Measurer,
                 budget_mb: float | None = None, budget_ms: float | None = None,
                 structure: str = "structured", ratio_range: tuple[float, float] | None = None,
                 iterations: int = 6, out_dir: str | os.PathLike | None = None,
                 stem: str | None = None, progress: Callable[[str], None] | None = None
                 ) -> BudgetResult:
    """Bisection over the ratio on measured size/latency (see module docstring).

    Measures the largest ratio first (if it fits, it is the answer), then the smallest (if it
    does not, :class:`BudgetUnreachable`), then ``iterations`` midpoints. With ``out_dir``,
    the chosen network's files and ``budget.json`` are written there on success only.
    """
    check_budget(budget_mb, budget_ms)
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    lo, hi = ratio_range or RATIO_RANGE[structure]
    if not 0 < lo < hi <= 1:
        raise ValueError(f"ratio range must satisfy 0 < lo < hi <= 1, got {(lo, hi)}")
    stem = stem or f"{structure}_budget"
    trials: list[BudgetTrial] = []
    best: tuple[BudgetTrial, nn.Module, dict[str, Path]] | None = None

    def fits(size: int, latency: float) -> bool:
        return ((budget_mb is None or size <= budget_mb * MB)
                and (budget_ms is None or latency <= budget_ms))

    with tempfile.TemporaryDirectory(prefix="cut_budget_") as scratch:
        def trial(ratio: float) -> BudgetTrial:
            nonlocal best
            net = build(ratio)
            folder = Path(scratch) / f"trial{len(trials)}"
            folder.mkdir()
            size, latency, files = measurer.measure(net, folder, stem)
            result = BudgetTrial(ratio, size, latency, fits(size, latency))
            trials.append(result)
            if progress is not None:
                progress(f"ratio {ratio:.4f}: {size / MB:.2f} MB, {latency:.1f} ms "
                         f"({'meets' if result.meets else 'misses'} the budget)")
            if result.meets and (best is None or ratio > best[0].ratio):
                if best is not None:
                    shutil.rmtree(best[2]["artifact"].parent)
                best = (result, net, files)   # its files are the ones written on success
            else:
                shutil.rmtree(folder)
            return result

        if not trial(hi).meets:
            low = trial(lo)
            if not low.meets:
                raise BudgetUnreachable(_unreachable_message(structure, measurer, budget_mb,
                                                             budget_ms, low, trials))
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                if trial(mid).meets:
                    lo = mid
                else:
                    hi = mid
        chosen, net, files = best
        result = BudgetResult(structure, chosen.ratio, chosen.bytes, chosen.latency_ms,
                              budget_mb, budget_ms, measurer.dtype, measurer.engine,
                              measurer.threads, measurer.repeats, measurer.input_shape, trials,
                              net=net)
        if out_dir is not None:
            result.files = _write_outputs(result, files, Path(out_dir))
    return result


def _unreachable_message(structure: str, measurer: Measurer, budget_mb, budget_ms,
                         low: BudgetTrial, trials: Sequence[BudgetTrial]) -> str:
    wanted = " and ".join(s for s in (f"{budget_mb:g} MB" if budget_mb is not None else "",
                                      f"{budget_ms:g} ms" if budget_ms is not None else "") if s)
    smallest = min(t.bytes for t in trials) / MB
    fastest = min(t.latency_ms for t in trials)
    hint = ""
    if structure == "unstructured" and budget_ms is not None and fastest > budget_ms:
        hint = "; unstructured zeros do not speed up dense kernels, try structure='structured'"
    return (f"budget {wanted} is unreachable for {structure} {measurer.dtype} on "
            f"{measurer.engine} ({measurer.threads} threads): the smallest candidate (ratio "
            f"{low.ratio:g}) measures {low.bytes / MB:.2f} MB and {low.latency_ms:.1f} ms "
            f"(smallest size reached {smallest:.2f} MB, lowest latency {fastest:.1f} ms){hint}")


def _write_outputs(result: BudgetResult, files: Mapping[str, Path], out_dir: Path
                   ) -> dict[str, str]:
    """Copy the chosen trial's files into ``out_dir`` (each atomically), ``budget.json`` last."""
    final = {kind: str(atomic_write(out_dir / path.name,
                                    lambda tmp, src=path: shutil.copyfile(src, tmp)))
             for kind, path in files.items()}
    result.files = dict(final)
    final["summary"] = str(atomic_write_json(result.to_dict(), out_dir / "budget.json"))
    return final


def budget_markdown(result: BudgetResult) -> str:
    """The budget, what was reached, and every trial, as Markdown."""
    knob = "keep ratio" if result.structure == "unstructured" else "channel ratio"
    wanted = ", ".join(s for s in (f"<= {result.budget_mb:g} MB" if result.budget_mb else "",
                                   f"<= {result.budget_ms:g} ms" if result.budget_ms else "") if s)
    lines = [f"**Budget** {wanted} ({result.structure}, {result.dtype}, {result.engine}, "
             f"{result.threads} threads, input {tuple(result.input_shape)}): {knob} "
             f"**{result.ratio:.4f}**, measured **{result.mb:.2f} MB**, "
             f"**{result.latency_ms:.1f} ms** (median of {result.repeats}).", "",
             f"| trial | {knob} | MB | ms | meets |", "|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {t.ratio:.4f} | {t.bytes / MB:.2f} | {t.latency_ms:.1f} | "
              f"{'yes' if t.meets else 'no'} |" for i, t in enumerate(result.trials)]
    return "\n".join(lines)
