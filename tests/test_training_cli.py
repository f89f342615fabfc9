"""``python -m lib train|finetune|evaluate`` end to end on a tiny synthetic dataset (in-process)."""
import json

import pytest
import torch
import torch.nn.utils.prune as prune

from lib.cli import main
from lib.config import load_config
from lib.models import SceneNet, prunable_modules
from lib.training import masked_modules, read_checkpoint
from lib.training.finetune import save_final_pruned


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from lib.data.synthetic import prepare_synthetic

    cfg = load_config("nyuv2_3task", profile="tiny")
    return prepare_synthetic(cfg, root=tmp_path_factory.mktemp("data") / "nyu", progress=False)


def test_cli_train_evaluate_finetune(data_root, tmp_path, capsys):
    common = ["--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data_root]
    run = tmp_path / "base"
    assert main(["train", *common, "--out", str(run), "--max-iters", "2", "--quiet",
                 "--val-fraction", "0.25", "--set", "VAL_FREQ=1"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert split["selection"] == "val" and len(split["val_indices"]) == 2
    best = read_checkpoint(run / "best.pth")
    metrics = json.loads((run / "best.metrics.json").read_text())
    assert set(metrics) == {"seg", "sn", "depth"} and best["config"]["VAL_FREQ"] == 1
    assert main(["train", *common, "--out", str(run), "--max-iters", "2", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err

    assert main(["evaluate", *common, "--checkpoint", str(run / "base_model.pth")]) == 0
    assert json.loads((run / "base_model.metrics.json").read_text()).keys() == metrics.keys()

    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.manual_seed(0)
    compact = SceneNet(cfg.TASKS_NUM_CLASS[:2], cfg.BACKBONE_NAME, cfg.WIDTH_MULT,
                       task_ids=[1, 2], tasks=["seg", "sn"])
    for module in prunable_modules(compact).values():
        prune.l1_unstructured(module, "weight", amount=0.6)
    save_final_pruned(compact, tmp_path / "pruned.pth")
    ft = tmp_path / "ft"
    assert main(["finetune", *common, "--checkpoint", str(tmp_path / "pruned.pth"), "--out",
                 str(ft), "--max-iters", "2", "--quiet", "--selection", "test"]) == 0
    assert json.loads((ft / "split.json").read_text())["selection"] == "test"
    tuned = read_checkpoint(ft / "last.pth")
    for name, module in masked_modules(compact).items():
        mask = tuned["model"][f"{name}.weight_mask"]
        assert torch.equal(mask, module.weight_mask)
        assert not tuned["model"][f"{name}.weight_orig"][mask == 0].any()
    assert "test metrics" in capsys.readouterr().out


def test_cli_num_workers_change_no_result_and_resume_across_them(data_root, tmp_path, capsys):
    """--num-workers reaches the loaders; a run resumes with another worker count (workers
    never change a number) and evaluation gives the same metrics; a bad count: exit 2.
    --amp bf16 --channels-last evaluates; --amp (fp16) on CPU: exit 2, nothing written."""
    common = ["--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data_root,
              "--quiet", "--selection", "test"]
    run = tmp_path / "r"
    assert main(["train", *common, "--out", str(run), "--max-iters", "2",
                 "--num-workers", "2"]) == 0
    assert read_checkpoint(run / "last.pth")["config"]["NUM_WORKERS"] == 2
    assert main(["train", *common, "--out", str(run), "--max-iters", "3", "--resume",
                 "--allow-changed", "max_iters", "--num-workers", "0"]) == 0
    plain, parallel = tmp_path / "plain.json", tmp_path / "parallel.json"
    for out, workers in ((plain, "0"), (parallel, "2")):
        assert main(["evaluate", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                     data_root, "--checkpoint", str(run / "base_model.pth"), "--out", str(out),
                     "--num-workers", workers]) == 0
    assert json.loads(plain.read_text()) == json.loads(parallel.read_text())
    reduced = tmp_path / "bf16.json"
    assert main(["evaluate", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 data_root, "--checkpoint", str(run / "base_model.pth"), "--out", str(reduced),
                 "--amp", "bf16", "--channels-last"]) == 0
    assert json.loads(reduced.read_text()).keys() == json.loads(plain.read_text()).keys()
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "fp16"), "--amp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --amp fp16 needs a CUDA device") and err.count("\n") == 1
    assert not (tmp_path / "fp16").exists()
    assert main(["evaluate", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 data_root, "--checkpoint", str(run / "base_model.pth"), "--num-workers",
                 "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: NUM_WORKERS=-1") and err.count("\n") == 1


def test_cli_non_finite_weighted_total_stops_in_one_line_without_a_nan_checkpoint(
        data_root, tmp_path, capsys):
    """issue 23: uncertainty weighting with init=-1000 gives finite task losses but an inf
    weighted total; the run used to take optimiser steps on it and write last.pth full of NaN
    while calling it "the last good checkpoint"."""
    run = tmp_path / "r"
    code = main(["train", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 data_root, "--out", str(run), "--max-iters", "4", "--quiet",
                 "--weighting", "uncertainty", "--weighting-option", "init=-1000",
                 "--set", "CKPT_FREQ=1", "VAL_FREQ=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: the weighted total loss is inf at iteration 1; stopped at "
                          "iteration 1; no checkpoint had been written yet"), err
    for path in run.glob("*.pth"):
        saved = read_checkpoint(path)
        assert all(bool(torch.isfinite(v).all()) for v in saved["model"].values()
                   if v.is_floating_point()), path
    assert not (run / "last.pth").exists() and not (run / "best.pth").exists()
