"""The study runner on a tiny grid: table columns, figures, resume without recomputation."""
import csv
import json

import matplotlib.image
import pytest

import lib.training
from lib.experiments import StudySpec, default_selections, grid, run_study
from lib.experiments import units as units_module


def tiny_spec(out_dir, **changes):
    spec = dict(config="nyuv2_3task", profile="tiny", out_dir=str(out_dir), methods=("cut",),
                sparsities=(90,), selections=[("seg", "depth")], base_iters=2, finetune_iters=2,
                num_batches=1, synthetic_train=6, synthetic_test=2,
                metric_options={"miou": "present"})
    spec.update(changes)
    return StudySpec(**spec)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, run_study(tiny_spec(out), progress=False)


def test_table_has_the_paper_columns(finished_study):
    out, result = finished_study
    with open(result.table_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["dense", "dense_ft", "cut"]
    columns = rows[0].keys()
    for column in ("method", "tasks", "nominal_sparsity", "measured_sparsity",
                   "seg/mIoU", "seg/Pixel Acc", "depth/abs_err", "depth/rel_err"):
        assert column in columns
    assert not any(c.startswith("sn/") for c in columns)   # sn was not selected
    control, cut = rows[1], rows[2]
    assert float(control["measured_sparsity"]) == 0.0      # the dense heads, fine-tuned alike
    assert control["depth/abs_err"] != rows[0]["depth/abs_err"]    # ... so it moved
    assert cut["tasks"] == "seg+depth"
    assert abs(float(cut["measured_sparsity"]) - 90) <= 0.5
    assert float(rows[0]["measured_sparsity"]) == 0.0
    assert "cut" in result.table_md.read_text()
    # metric_options reach the evaluator: the reference's mIoU is NaN for a model with no true
    # positive (2 training steps), the "present" variant averages the classes seen: a number.
    assert rows[0]["seg/mIoU"] not in ("", "nan")
    assert json.loads((out / "study.json").read_text())["metric_options"] == {"miou": "present"}
    cell = out / "cells" / "cut_90_seg-depth"
    assert (cell / "final_model.pth").exists()                          # kept for export
    assert not (cell / "last.pth").exists() and not (cell / "best.pth").exists()


def test_figures_are_written_and_open(finished_study):
    _, result = finished_study
    for name in ("metrics_seg-depth", "delta_seg-depth", "layer_sparsity",
                 "predictions_dense", "predictions_cut"):
        image = matplotlib.image.imread(result.figures[name])
        assert image.ndim == 3 and image.shape[0] > 50


def test_resume_reads_finished_cells_instead_of_recomputing(finished_study, monkeypatch):
    out, first = finished_study

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(units_module, "_compute_cell", must_not_run)
    monkeypatch.setattr(lib.training, "train", must_not_run)       # the base model is reused
    again = run_study(tiny_spec(out), progress=False)
    assert json.dumps(again.rows) == json.dumps(first.rows)   # NaN-safe equality


def test_resume_with_a_different_defining_setting_is_refused(finished_study, monkeypatch):
    out, _ = finished_study
    with pytest.raises(ValueError, match="finetune_iters"):
        run_study(tiny_spec(out, finetune_iters=3), progress=False)
    # The profile of the same name with other values (a newer version's): refused, named.
    from lib.config import PROFILES
    monkeypatch.setitem(PROFILES["tiny"], "*", {**PROFILES["tiny"]["*"], "RETRAIN_LR": 5e-4})
    with pytest.raises(ValueError, match=r"settings\.RETRAIN_LR.*0\.0001.*0\.0005"):
        run_study(tiny_spec(out), progress=False)
    assert "RETRAIN_LR" in json.loads((out / "study.json").read_text())["settings"]


def test_grid_validation_and_default_selections():
    assert default_selections(["seg", "sn", "depth"]) == [
        ("seg", "sn", "depth"), ("seg", "sn"), ("seg", "depth"), ("sn", "depth")]
    assert default_selections(["seg", "depth"]) == [("seg", "depth")]
    with pytest.raises(ValueError, match="unknown task"):
        grid(tiny_spec("x", selections=[("seg", "normals")]), ["seg", "sn", "depth"])
    with pytest.raises(ValueError, match="sparsity 100"):
        tiny_spec("x", sparsities=(100,))


def test_structured_cut_is_a_grid_method(finished_study, tmp_path):
    import shutil
    out = tmp_path / "study"
    shutil.copytree(finished_study[0], out)                 # base model and cells reused
    result = run_study(tiny_spec(out, methods=("structured_cut",), sparsities=(50,)),
                       progress=False)
    row = next(r for r in result.rows if r["method"] == "structured_cut")
    assert row["tasks"] == "seg+depth" and row["nominal_sparsity"] == 50
    assert row["measured_sparsity"] > 50                    # half the channels: most weights go
    assert (out / "cells" / "structured_cut_50_seg-depth" / "final_model.pth").exists()


def test_study_compares_structured_and_unstructured_cut_at_equal_cost(finished_study, tmp_path):
    import json
    import shutil
    out = tmp_path / "study"
    shutil.copytree(finished_study[0], out)                 # the base model is reused
    # A cut-only study records no cost (nothing to compare with): that cell is re-run here.
    assert "cost" not in json.loads((out / "cells" / "cut_90_seg-depth.json").read_text())
    (out / "cells" / "cut_90_seg-depth.json").unlink()
    result = run_study(tiny_spec(out, methods=("cut", "structured_cut"), sparsities=(90,)),
                       progress=False)
    assert result.figures["equal_cost"].stat().st_size > 0
    record = json.loads((out / "cells" / "structured_cut_90_seg-depth.json").read_text())
    cut = json.loads((out / "cells" / "cut_90_seg-depth.json").read_text())
    assert record["cost"]["params_nonzero"] < cut["cost"]["params_total"]
    assert record["cost"]["latency_ms"] > 0 and record["cost"]["latency_engine"] == "onnxruntime"


def test_a_ray_units_loader_workers_fit_in_its_cpus():
    """A unit given one CPU by Ray starts no loader worker (the task beside it would lose its
    core); one the spec asks for explicitly is kept; off Ray the config's value stands."""
    from lib.experiments.units import StudyJob

    spec = StudySpec(config="nyuv2_3task", profile="cpu")
    assert StudyJob(spec, "data").config().NUM_WORKERS == 1          # the cpu profile's
    assert StudyJob(spec, "data", max_loader_workers=0).config().NUM_WORKERS == 0
    assert StudyJob(spec, "data", max_loader_workers=3).config().NUM_WORKERS == 1
    asked = StudySpec(config="nyuv2_3task", profile="cpu", overrides={"NUM_WORKERS": 2})
    assert StudyJob(asked, "data", max_loader_workers=0).config().NUM_WORKERS == 2
