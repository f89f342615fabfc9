"""The study grid with the training methods (disparse_dynamic, minmax_dst, the min-max pipeline,
DiSparse's static protocol) next to CUT on a tiny synthetic grid: rows, budgets, figures."""
import csv
from pathlib import Path

import matplotlib.figure
import pytest

from lib.experiments import StudySpec, run_study
from lib.reports import DELTA_COLUMN

METHODS = ("cut", "disparse_dynamic", "minmax_dst", "minmax_pipeline", "disparse_static_scratch")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    labels = {}
    original = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, fname, *args, **kwargs):   # what each saved figure draws
        # Figures are written to a temporary ".<name>.<random>.tmp", then renamed.
        name = Path(str(fname)).name.lstrip(".").split(".png")[0] + ".png"
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        labels[name] = {t.get_text() for legend in legends for t in legend.get_texts()}
        return original(fig, fname, *args, **kwargs)

    out = tmp_path_factory.mktemp("study")
    spec = StudySpec(config="nyuv2_3task", profile="tiny", out_dir=str(out), methods=METHODS,
                     sparsities=(90,), selections=[("seg", "depth")], base_iters=3,
                     finetune_iters=2, num_batches=1, synthetic_train=6, synthetic_test=2,
                     dense_control=False, weighting="equal", metric_options={"miou": "present"},
                     method_options={"minmax_dst": {"epoch_iters": 1, "every_epochs": 1,
                                                    "stop_epoch": 2}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
        result = run_study(spec, progress=False)
    return out, result, labels


def test_training_methods_have_rows_with_their_budgets(study):
    out, result, _ = study
    with open(result.table_csv, newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"dense", *METHODS}
    assert rows["dense"]["budget"] == "base 3"
    assert rows["cut"]["budget"] == "base 3 + ft 2"
    for method in ("disparse_dynamic", "minmax_dst", "disparse_static_scratch"):
        assert rows[method]["budget"] == "3 from scratch"
    assert rows["minmax_pipeline"]["budget"] == "base 3 + rew 2 + retrain 2"
    for method in METHODS:
        assert abs(float(rows[method]["measured_sparsity"]) - 90) < 1.0, method
        assert rows[method]["tasks"] == "seg+depth"
    assert "budget" in result.table_md.read_text().splitlines()[0]
    cells = out / "cells"
    for method in METHODS[1:]:
        cell = cells / f"{method}_90_seg-depth"
        assert not list(cell.rglob("last.pth")) and not list(cell.rglob("best.pth"))
        assert list(cell.rglob("final_model.pth"))


def test_training_methods_appear_in_the_figures(study):
    _, result, labels = study
    for figure in ("metrics_seg-depth", "layer_sparsity"):
        drawn = labels[result.figures[figure].name]
        assert set(METHODS) <= drawn, (figure, drawn)
    # Δ is drawn where it is defined (a 3-iteration model may score 0 on a metric: undefined).
    with_delta = {r["method"] for r in result.rows if r["method"] != "dense"
                  and r[DELTA_COLUMN] is not None}
    assert labels[result.figures["delta_seg-depth"].name] == with_delta
    assert "mask_iou" in result.figures   # DiSparse's static protocol keeps its task masks


@pytest.mark.parametrize("method", ["disparse_dynamic", "disparse_static_scratch"])
def test_an_interrupted_trained_cell_resumes_to_the_uninterrupted_result(tmp_path, method):
    """A cell of a method that trains (what a retried Ray task runs after its worker died)
    resumes from the ``last.pth`` the interrupted run left and ends with the weights of a run
    that was never interrupted."""
    import torch

    from lib.config import load_config
    from lib.data.synthetic import prepare_synthetic
    from lib.losses import SceneNetLoss
    from lib.models import SceneNet
    from lib.sparse.study import train_cell
    from lib.training import make_loaders

    cfg = load_config("nyuv2_3task", profile="tiny", CKPT_FREQ=2, VAL_FREQ=2)
    cfg.DATA_ROOT = prepare_synthetic(cfg, root=tmp_path / "data", progress=False)
    torch.manual_seed(0)
    base = SceneNet.from_config(cfg)
    loss = SceneNetLoss.from_config(cfg)

    original, steps = SceneNetLoss.per_task, []

    def fails_at_step_5(self, preds, batch):
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == 5:
                raise RuntimeError("worker lost")
        return original(self, preds, batch)

    def cell(criterion, run_dir):   # loaders built afresh per cell, as the study's units do
        loaders = make_loaders(cfg, val_fraction=0.25, seed=0)
        return train_cell(method, cfg=cfg, base=base, criterion=criterion, loaders=loaders,
                          sparsity=90, selection=("seg", "depth"), run_dir=run_dir,
                          base_iters=6, finetune_iters=2, seed=0, device="cpu",
                          weighting="equal", num_batches=1)[0]

    whole = cell(loss, tmp_path / "whole")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(RuntimeError, match="worker lost"):
        mp.setattr(SceneNetLoss, "per_task", fails_at_step_5)
        cell(loss, tmp_path / "cut")
    assert (tmp_path / "cut" / "last.pth").exists()    # its checkpoint of iteration 4
    steps.clear()

    def counted(self, preds, batch):
        steps.append(torch.is_grad_enabled())
        return original(self, preds, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SceneNetLoss, "per_task", counted)
        resumed = cell(loss, tmp_path / "cut")
    assert sum(steps) == 2                              # iterations 5 and 6, not 1 to 6
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                 resumed.state_dict().values()))
