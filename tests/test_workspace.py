"""lib.workspace: the run-folder layout and FAST_MODE's stand-ins."""
import pytest
import torch

from lib.checkpoints import load_pruned
from lib.workspace import Workspace, pruned_filename, run_root


def test_paths_follow_the_run_folder_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ws = Workspace("nyuv2_3task", "cpu")
    assert ws.root == run_root("nyuv2_3task", "cpu") == tmp_path.joinpath("runs/nyuv2_3task-cpu").relative_to(tmp_path)
    assert ws.base_path().as_posix() == "runs/nyuv2_3task-cpu/base/base_model.pth"
    pruned = ws.pruned_path("cut", ["seg", "depth"], 90)
    assert pruned.as_posix() == "runs/nyuv2_3task-cpu/pruned/cut_90_seg-depth.pth"
    assert ws.finetune_dir(pruned).as_posix() == "runs/nyuv2_3task-cpu/finetune/cut_90_seg-depth"
    assert pruned_filename("lth", ["sn"], keep_ratio=0.25) == "lth_keep0.25_sn.pth"
    with pytest.raises(FileNotFoundError, match="train_baseline.ipynb"):
        ws.base_model()           # outside FAST_MODE a missing base model is an error
    with pytest.raises(RuntimeError, match="FAST_MODE"):
        ws.stand_in_pruned("cut", ["seg"], 90, tmp_path / "x.pth")
    assert not (tmp_path / "runs").exists()


def test_fast_mode_keeps_everything_in_one_temporary_folder():
    ws = Workspace("nyuv2_3task", "reference", fast=True)
    assert ws.profile == "tiny" and ws.cfg.PROFILE == "tiny"
    net, path, stand_in = ws.base_model()
    assert stand_in and path.is_relative_to(ws.work) and ws.meta()["stand_in_base_model"]
    pruned = ws.stand_in_pruned("lth", ["depth"], 90, ws.pruned_path("lth", ["depth"], 90))
    loaded, meta = load_pruned(pruned)
    assert loaded.tasks == ["depth"] and meta["stand_in"] and ws.base_path().is_file()
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    ws.close()
    assert not ws.work.exists()
