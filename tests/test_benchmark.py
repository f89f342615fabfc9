"""The method benchmark: summary and verdicts from hand-made cells; the --quick path end to end
on the tiny profile; the README section written between its markers."""
import importlib.util
import json
import os
import math
from pathlib import Path

import matplotlib.image
import pytest

from lib.experiments.benchmark import (GRIDS, BenchmarkSpec, Grid, applicable_methods,
                                       collapsed_layers, default_jobs, format_report,
                                       run_benchmark, summarize_benchmark)
from lib.experiments.benchmark_report import (BEGIN, END, plot_summary, readme_section,
                                              replace_section)

ROOT = Path(__file__).resolve().parents[1]


def _cell(method, sparsity, delta, collapsed=0):
    return {"method": method, "selection": "seg+depth", "sparsity": float(sparsity),
            "delta": delta, "measured": float(sparsity), "collapsed": collapsed, "seconds": 1.0}


def _per_seed(deltas):
    """deltas: {seed: {(method, sparsity): delta}} -> what run_benchmark collects per seed."""
    out = {}
    for seed, values in deltas.items():
        cells = {}
        for (method, sparsity), delta in values.items():
            key = f"{method}_{float(sparsity):g}_seg-depth"
            cells[key] = _cell(method, sparsity, delta, collapsed=2 if method == "snip" else 0)
        out[seed] = {"cells": cells, "dense": {"seg": {"mIoU": 0.31 + seed / 100},
                                               "depth": {"sigma_1.25": 72.0}}}
    return out


@pytest.fixture
def summary():
    grid = Grid(seeds=(0, 1, 2), sparsities=(90,), methods=("cut", "snip", "random"))
    spec = BenchmarkSpec(grid=grid)
    rows = {0: (0.5, -5.0, -6.0, -50.0), 1: (-0.5, -4.0, -2.0, -60.0), 2: (1.0, -6.0, -7.0, -55.0)}
    keys = (("dense_ft", 0), ("cut", 90), ("snip", 90), ("random", 90))
    deltas = {seed: dict(zip(keys, values)) for seed, values in rows.items()}
    return summarize_benchmark(spec, _per_seed(deltas), seconds=120.0)


def test_summary_pairs_by_seed_and_decides(summary):
    cut = next(c for c in summary["cells"] if c["method"] == "cut")
    assert cut["mean"] == pytest.approx(-5.0) and cut["std"] == pytest.approx(1.0)
    comps = {c["baseline"]: c for c in summary["comparisons"]}
    # cut - random: 45, 56, 49 -> mean 50, std sqrt(31); t(0.975, 2) = 4.302653
    r = comps["random"]
    half = 4.302653 * math.sqrt(31) / math.sqrt(3)
    assert r["mean"] == pytest.approx(50.0)
    assert (r["low"], r["high"]) == (pytest.approx(50 - half, abs=1e-4),
                                     pytest.approx(50 + half, abs=1e-4))
    assert r["decided"] and r["winner"] == "cut" and r["seeds"] == [0, 1, 2]
    # cut - snip: +1, -2, +1 -> mean 0, the interval contains 0
    assert not comps["snip"]["decided"] and comps["snip"]["winner"] is None
    snip = next(c for c in summary["cells"] if c["method"] == "snip")
    assert snip["collapsed"] == {"0": 2, "1": 2, "2": 2}
    json.dumps(summary)                                    # the summary is plain JSON


def test_report_states_floors_control_and_every_verdict(summary):
    text = format_report(summary)
    assert "seg/mIoU: 0.31 .. 0.33 over seeds (floor 0.3: met)" in text
    assert "within ±2 %" in text                           # the worst control seed is 1.0
    assert "cut - random: +50.00" in text and "decided, cut ahead" in text
    assert "cut - snip" in text and "not decided" in text


def test_readme_section_is_generated_between_markers(summary, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nstale\n{END}\n\n## next\n")
    replace_section(readme, readme_section(summary, figure="docs/b.png"))
    text = readme.read_text()
    assert text.startswith("# title\n\n" + BEGIN) and text.endswith(END + "\n\n## next\n")
    assert "stale" not in text
    assert "| random | **+50.0 [" in text and "** cut |" in text        # decided, bold
    assert "| snip | +0.0 [−" in text                                      # not decided
    assert "- Decided, cut ahead of: random at 90 %." in text
    assert "- Not decided (the interval contains 0): snip at 90 %." in text
    assert "| 0 % (control: dense, fine-tuned alike) | +0.3 ± 0.8 |" in text
    assert "![Δ vs sparsity and paired differences](docs/b.png)" in text
    # Rewriting is idempotent; a README without the markers is refused untouched.
    replace_section(readme, readme_section(summary, figure="docs/b.png"))
    assert readme.read_text() == text
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        replace_section(bare, "x")
    assert bare.read_text() == "no markers\n"
    for cell in summary["cells"]:                   # a method removing more than nominal
        if cell["method"] == "snip":
            cell["measured"] = {s: 99.0 for s in cell["measured"]}
    assert ("- snip: its nominal sparsity is not its weight sparsity; weights removed (mean "
            "over seeds): 99.0 % at 90 %.") in readme_section(summary)
    image = matplotlib.image.imread(plot_summary(summary, tmp_path / "fig.png"))
    assert image.ndim == 3 and image.shape[1] > 500


def test_grids_and_validation():
    methods = applicable_methods()
    assert methods[0] == "cut" and "snip_untrained" not in methods and "snip" in methods
    assert {"cut_iterative", "cut_floor", "cut_layer_norm", "structured_cut",
            "minmax_pipeline"} <= set(methods) and "rigl" not in methods
    scratch = GRIDS["scratch"].method_list()
    assert scratch[0] == "cut" and "rigl" in scratch and "disparse_static_scratch" in scratch
    default = GRIDS["default"]
    assert len(default.seeds) >= 5 and default.sparsities == (70, 90, 95)
    assert set(GRIDS["quick"].method_list()) <= set(methods)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        BenchmarkSpec(grid=Grid(seeds=(0,), sparsities=(90,)))
    with pytest.raises(ValueError, match="reference"):
        BenchmarkSpec(grid=Grid(seeds=(0, 1), sparsities=(90,), methods=("snip",)))
    assert collapsed_layers({"a": 100.0, "b": 99.9, "c": 0.0}) == 1
    five = BenchmarkSpec(grid=default)
    assert default_jobs(five) == (os.cpu_count() or 1)     # the embedded instance's CPUs
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        run_benchmark(five, jobs=0)


def _bench_script():
    spec = importlib.util.spec_from_file_location("bench_methods",
                                                  ROOT / "benchmarks" / "bench_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_path_runs_end_to_end_on_the_tiny_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUT_NUM_THREADS", "1")
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "data"))
    bench = _bench_script()
    out = tmp_path / "bench"
    # Seeds whose 4-iteration tiny base models predict some class right (Δ is defined).
    argv = ["--quick", "--profile", "tiny", "--seeds", "1", "2", "--methods", "cut", "random",
            "--out", str(out), "--synthetic-train", "6", "--synthetic-test", "2", "--quiet"]
    assert bench.main(argv + ["--engine", "ray"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["profile"] == "tiny" and summary["seeds"] == [1, 2]
    assert {c["method"] for c in summary["cells"]} == {"dense_ft", "cut", "random"}
    for seed in (1, 2):                                                   # cached per seed
        assert (out / f"seed{seed}" / "base" / "base_model.pth").exists()
    comps = summary["comparisons"]
    assert [c["baseline"] for c in comps] == ["random"] and comps[0]["n"] == 2
    assert "cut minus each method" in printed and comps[0]["verdict"] in printed
    # Ray tasks (one 1-thread task per core here) give what the serial engine gives.
    assert summary["jobs"] == (os.cpu_count() or 1) and summary["threads"] == 1
    assert summary["cpu_seconds"] > 0
    assert " done" in (out / "seed1" / "cells" / "cut_90_seg-depth" / "task.log").read_text()
    serial = tmp_path / "serial"
    assert bench.main([str(serial) if a == str(out) else a for a in argv]
                      + ["--engine", "serial"]) == 0
    again = json.loads((serial / "summary.json").read_text())
    assert again["jobs"] == 1
    assert [c["deltas"] for c in again["cells"]] == [c["deltas"] for c in summary["cells"]]
    for seed in (1, 2):
        assert ((serial / f"seed{seed}" / "results.csv").read_bytes()
                == (out / f"seed{seed}" / "results.csv").read_bytes())
    # A NaN in a finished cell's file is refused as it is read, before any table is rewritten.
    cell = out / "seed1" / "cells" / "cut_90_seg-depth.json"
    record = json.loads(cell.read_text())
    record["row"]["seg/Pixel Acc"] = float("nan")
    cell.write_text(json.dumps(record))
    table = (out / "seed1" / "results.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert bench.main(argv + ["--engine", "serial"]) == 2
    err = capsys.readouterr().err
    assert str(cell) in err and "seg/Pixel Acc is not a finite number" in err
    assert (out / "seed1" / "results.csv").stat().st_mtime_ns == table
    assert "nan" not in (out / "seed1" / "results.csv").read_text().lower()
    cell.unlink()
    # The profile's values changed since (a newer version): refused before any seed starts.
    from lib.config import PROFILES
    capsys.readouterr()
    with monkeypatch.context() as changed:
        changed.setitem(PROFILES["tiny"], "*", {**PROFILES["tiny"]["*"], "RETRAIN_LR": 5e-4})
        assert bench.main(argv) == 2
    assert "settings.RETRAIN_LR" in capsys.readouterr().err
    assert bench.main(argv[:-1] + ["--methods", "snip"]) == 2
    assert "reference" in capsys.readouterr().err
