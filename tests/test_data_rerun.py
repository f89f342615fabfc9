"""Bad data must not leave a run directory that refuses the corrected rerun, and a bad file of
the evaluation splits is found before anything is written (issue 23 item 7)."""
from pathlib import Path

import numpy as np
import pytest

from lib.cli import main
from lib.config import load_config
from lib.data import build_loader, check_content
from lib.data.synthetic import prepare_synthetic
from test_reliability import cli_error, files_under


@pytest.fixture
def mtan_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CUT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config("nyuv2_mtan", profile="tiny")
    return Path(prepare_synthetic(cfg, root=tmp_path / "mtan", progress=False))


def train_args(root, run):
    """An epoch and a half of the 7 training items (the 8th validates): every item is read."""
    return ["train", "--config", "nyuv2_mtan", "--profile", "tiny", "--data-root", str(root),
            "--out", str(run), "--quiet", "--max-iters", "6", "--set", "VAL_FREQ=100",
            "CKPT_FREQ=100"]


def damage(path):
    good = np.load(path)
    np.save(path, np.where(good == good.max(), 40, good).astype(good.dtype))
    return good


def test_a_rerun_after_a_bad_train_file_is_not_refused(mtan_root, tmp_path, capsys):
    label = mtan_root / "train" / "label" / "5.npy"
    good = damage(label)
    run = tmp_path / "run"
    err = cli_error(capsys, *train_args(mtan_root, run))
    assert str(label) in err and files_under(run) == ["split.json"]   # found at read time
    np.save(label, good)                                # the file corrected
    assert main(train_args(mtan_root, run)) == 0, capsys.readouterr().err
    assert (run / "last.pth").is_file()
    (run / "keep.txt").write_text("a user's file")      # a folder in use is still refused
    err = cli_error(capsys, *train_args(mtan_root, run))
    assert "exists and is not empty" in err


def test_a_bad_evaluation_file_is_found_before_anything_is_written(mtan_root, tmp_path, capsys):
    normal = mtan_root / "val" / "normal" / "1.npy"
    np.save(normal, np.load(normal) * 3)                # components outside [-1, 1]
    run = tmp_path / "run"
    err = cli_error(capsys, *train_args(mtan_root, run))
    assert str(normal) in err and files_under(run) == []


def test_checked_files_are_cached_until_they_change(mtan_root, monkeypatch):
    cfg = load_config("nyuv2_mtan", profile="tiny", DATA_ROOT=str(mtan_root))
    loader = build_loader(cfg, "test")
    check_content(loader, progress=False)
    reads = []
    original = type(loader.dataset).load_item
    monkeypatch.setattr(type(loader.dataset), "load_item",
                        lambda self, i, rng: reads.append(i) or original(self, i, rng))
    check_content(loader, progress=False)
    assert reads == []                                  # every entry passed already
    damage(mtan_root / "val" / "label" / "2.npy")       # a changed file is read again
    with pytest.raises(ValueError, match=r"val/label/2\.npy has label\(s\) 40"):
        check_content(loader, progress=False)
    assert reads == [2]
