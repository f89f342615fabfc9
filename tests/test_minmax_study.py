"""``python -m lib reproduce`` on the min-max benchmarks (SegNet-MTAN on NYUv2 in MTAN's
format, VGG-16 on CIFAR-100's domains): CUT, SNIP, LTH and random rows on the tiny profile
and synthetic data, with each method's sparsity hit and the figures written; the study grid's
sparse-training methods on the min-max models."""
import csv
import math

import matplotlib.image
import pytest

from lib.cli import main

CASES = {
    "nyuv2_mtan": (["seg", "depth"], ["--synthetic-train", "6", "--synthetic-test", "2"]),
    # three of the twenty domains; counts are images per fine class (5 fine classes a domain)
    "cifar100_mtl": (["class_0", "class_7", "class_19"],
                     ["--synthetic-train", "2", "--synthetic-test", "1"]),
}
METHODS = ["cut", "snip", "lth", "random"]
# SegNet-MTAN also goes through the min-max framework's own compression pipeline in the same
# run (its base model reused); VGG-16 runs every sparse-training method below.
TRAINED_ALSO = {"nyuv2_mtan": ["minmax_pipeline"], "cifar100_mtl": []}


@pytest.mark.parametrize("config", sorted(CASES))
def test_reproduce_runs_cut_and_the_baselines(config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "data"))
    selection, counts = CASES[config]
    out = tmp_path / "study"
    methods = METHODS + TRAINED_ALSO[config]
    code = main(["reproduce", "--config", config, "--profile", "tiny", "--methods", *methods,
                 "--sparsities", "50", "--tasks", *selection, "--base-iters", "2",
                 "--max-iters", "1", "--num-batches", "1", "--out", str(out), *counts])
    assert code == 0, capsys.readouterr().err
    with open(out / "results.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"dense", "dense_ft", *methods}
    metric = {t: "mIoU" if t == "seg" else "abs_err" if t == "depth" else "Acc" for t in selection}
    # Δ is relative to the dense model's metrics: undefined (empty) when one of them is 0, as
    # a 2-iteration model's accuracy on 5 test images of a domain can be.
    delta_defined = all(float(rows["dense"][f"{t}/{metric[t]}"]) != 0 for t in selection)
    for method in methods:
        row = rows[method]
        assert row["tasks"] == "+".join(selection)
        assert abs(float(row["measured_sparsity"]) - 50) <= (0.5 if method in METHODS else 1.0), \
            (method, row)
        if delta_defined:
            assert math.isfinite(float(row["delta"]))
        else:
            assert row["delta"] == "", row
        for task in selection:     # every selected task scored with its benchmark's metrics
            assert math.isfinite(float(row[f"{task}/{metric[task]}"]))
    for figure in ("layer_sparsity", "mask_iou", "predictions_dense", "predictions_cut_50",
                   f"delta_vs_sparsity_{'-'.join(selection)}"):
        assert matplotlib.image.imread(out / f"{figure}.png").size > 0


TRAINED = ("disparse_dynamic", "minmax_dst", "rigl", "disparse_static_scratch",
           "minmax_pipeline")


def test_study_grid_trains_every_sparse_method_on_vgg_s_domains(tmp_path, monkeypatch):
    from lib.experiments import StudySpec, run_study
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "data"))
    config, methods = "cifar100_mtl", TRAINED + ("structured_cut",)
    selection, counts = CASES[config]
    spec = StudySpec(config=config, profile="tiny", out_dir=str(tmp_path / "s"), methods=methods,
                     sparsities=(50,), selections=[tuple(selection[:2])], base_iters=3,
                     finetune_iters=2, num_batches=1, synthetic_train=int(counts[1]),
                     synthetic_test=int(counts[3]), dense_control=False,
                     method_options={"minmax_dst": {"epoch_iters": 1, "every_epochs": 1,
                                                    "stop_epoch": 2}})
    rows = {r["method"]: r for r in run_study(spec, progress=False).rows}
    assert set(rows) == {"dense", *methods}
    for method in methods:
        measured = rows[method]["measured_sparsity"]
        if method == "structured_cut":     # half of every channel group: most weights go
            assert measured > 50
        else:
            assert abs(measured - 50) < 1.0, method
        assert rows[method]["tasks"] == "+".join(selection[:2])
