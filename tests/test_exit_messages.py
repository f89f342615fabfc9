"""Exit codes and one-line messages of the cases issue 23 item 9 lists: a malformed
``--weighting-option``, a full disk, a symbolic-link loop as output, a task listed twice, a bad
label file of MTAN's NYUv2 layout, a checkpoint holding a pickled module."""
import errno
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import lib.utils
from lib.checkpoints import save_initial_model
from lib.config import load_config
from lib.data.synthetic import prepare_synthetic
from test_reliability import cli_error, data_root, files_under, tiny_common  # noqa: F401


def test_weighting_option_without_value_is_exit_2(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    err = cli_error(capsys, "train", *tiny_common(data_root), "--out", run, "--quiet",
                    "--weighting", "minmax", "--weighting-option", "beta")
    assert "--weighting-option 'beta': expected KEY=VALUE" in err
    assert files_under(run) == []


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(obj, f):   # what torch.save does on a full disk: a partial file, then this error
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/3: file write failed")
    monkeypatch.setattr(lib.utils.torch, "save", full)
    target = tmp_path / "run" / "last.pth"
    with pytest.raises(OSError) as info:
        lib.utils.atomic_torch_save({"w": torch.ones(2)}, target)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(target) in message and "no space left" in message
    assert "enforce fail" not in message and len(message.splitlines()) == 1
    assert files_under(tmp_path / "run") == []          # no temporary, no partial file
    # a plain write hitting ENOSPC is named the same way
    monkeypatch.setattr(lib.utils, "open", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")), raising=False)
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'run' / 'a.json'}: no space"):
        lib.utils.atomic_write_json({"a": 1}, tmp_path / "run" / "a.json")
    assert files_under(tmp_path / "run") == []


def test_symlink_loop_out_is_refused_before_scoring(data_root, tmp_path, capsys, monkeypatch):
    import lib.pruning.workflow

    def never(*args, **kwargs):
        raise AssertionError("scoring started before the output was checked")
    monkeypatch.setattr(lib.pruning.workflow, "prune", never)
    base = save_initial_model(load_config("nyuv2_3task", profile="tiny"), tmp_path / "base.pth")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    err = cli_error(capsys, "prune", "--config", "nyuv2_3task", "--profile", "tiny",
                    "--checkpoint", base, "--tasks", "seg", "--sparsity", "50",
                    "--data-root", data_root, "--out", loop)
    assert f"{loop} is a symbolic-link loop" in err and "File exists" not in err
    err = cli_error(capsys, "train", *tiny_common(data_root), "--out", loop / "run",
                    "--quiet", "--max-iters", "1")
    assert str(loop) in err and "symbolic" in err and "File exists" not in err


def test_a_task_listed_twice_is_named(data_root, tmp_path, capsys):
    base = save_initial_model(load_config("nyuv2_3task", profile="tiny"), tmp_path / "base.pth")
    err = cli_error(capsys, "prune", "--config", "nyuv2_3task", "--profile", "tiny",
                    "--checkpoint", base, "--tasks", "seg", "seg", "--sparsity", "50",
                    "--data-root", data_root, "--out", tmp_path / "out")
    assert "task 'seg' listed twice" in err and files_under(tmp_path / "out") == []
    run = tmp_path / "run"
    err = cli_error(capsys, "train", *tiny_common(data_root), "--out", run, "--quiet",
                    "--max-iters", "2", "--sparse", "rigl", "--sparsity", "50",
                    "--sparse-option", "end=1", "--tasks", "seg", "seg")
    assert "task 'seg' listed twice" in err and "weights" not in err
    assert files_under(run) == []


@pytest.mark.parametrize("damage", ["range", "shape", "dtype"])
def test_a_bad_mtan_label_file_is_named_as_the_label(tmp_path, capsys, damage):
    cfg = load_config("nyuv2_mtan", profile="tiny")
    root = Path(prepare_synthetic(cfg, root=tmp_path / "mtan", progress=False))
    labels = sorted((root / "train" / "label").glob("*.npy"))
    for label in labels:  # every one: training is shuffled, any item may be read first
        good = np.load(label)
        bad = {"range": np.where(good == good.max(), 40, good).astype(good.dtype),
               "shape": good[: good.shape[0] // 2], "dtype": good.astype(np.uint8)}[damage]
        np.save(label, bad)
    err = cli_error(capsys, "train", "--config", "nyuv2_mtan", "--profile", "tiny",
                    "--data-root", root, "--out", tmp_path / "run", "--quiet",
                    "--max-iters", "2")
    named = [label for label in labels if str(label) in err]
    assert len(named) == 1
    assert str(root / "train" / "image" / named[0].name) not in err


def test_a_pickled_module_message_is_complete_and_plain(data_root, tmp_path, capsys):
    path = tmp_path / "module.pth"
    torch.save(nn.Conv2d(1, 1, 1), path)
    err = cli_error(capsys, "evaluate", *tiny_common(data_root), "--checkpoint", path)
    assert "\x1b" not in err and str(path) in err
    assert "pickled torch.nn.modules.conv.Conv2d object" in err
    assert "save and pass the state_dict (torch.save(model.state_dict(), path)) instead" in err
