"""``python -m lib train --sparse ... --weighting ...`` end to end, and its one-line errors."""
import json

import pytest

from lib.cli import main
from lib.config import load_config
from lib.models import prunable_layers
from lib.pruning import load_pruned
from lib.sparse import masking


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from lib.data.synthetic import prepare_synthetic

    cfg = load_config("nyuv2_3task", profile="tiny")
    return prepare_synthetic(cfg, root=tmp_path_factory.mktemp("data") / "nyu", progress=False)


def test_cli_sparse_training(data_root, tmp_path, capsys):
    common = ["train", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data_root,
              "--quiet", "--max-iters", "3"]
    run = tmp_path / "dd"
    assert main([*common, "--out", str(run), "--sparse", "disparse_dynamic", "--sparsity",
                 "90", "--sparse-option", "interval=1", "end=2", "--tasks", "seg", "depth",
                 "--weighting", "minmax", "--weighting-option", "beta=50"]) == 0
    side = json.loads((run / "final_model.json").read_text())
    assert side["meta"]["training"]["name"] == "disparse_dynamic"
    assert (side["meta"]["config"], side["meta"]["profile"]) == ("nyuv2_3task", "tiny")
    assert side["architecture"]["tasks"] == ["seg", "depth"]
    net, _ = load_pruned(run / "final_model.pth")
    layers = prunable_layers(net)
    kept = sum(masking.counts(layers).values()) / sum(m.weight.numel() for m in layers.values())
    assert abs(kept - 0.1) < 1e-3
    assert json.loads((run / "best.metrics.json").read_text()).keys() == {"seg", "depth"}
    assert "trained disparse_dynamic 3 iterations" in capsys.readouterr().out

    static = tmp_path / "static"
    assert main([*common, "--out", str(static), "--sparse", "disparse_static",
                 "--sparsity", "70", "--set", "PRUNE_NUM_BATCHES=1"]) == 0
    net, meta = load_pruned(static / "final_model.pth")
    assert meta["protocol"] == "from_scratch" and meta["method"] == "disparse_static"
    assert (meta["config"], meta["profile"]) == ("nyuv2_3task", "tiny")   # read by evaluate
    for m in prunable_layers(net).values():
        assert not m.weight_orig[~masking.mask_of(m)].any()


@pytest.mark.parametrize("extra, message", [
    (["--sparse", "rigll", "--sparsity", "90"], "unknown sparse training method 'rigll'"),
    (["--sparse", "disparse_dynamic"], "--sparse disparse_dynamic needs --sparsity"),
    (["--sparse", "disparse_dynamic", "--sparsity", "90"], "end=15000 exceeds max_iters=3"),
    (["--sparse", "minmax_dst", "--sparsity", "90", "--sparse-option", "grow_ratio=2"],
     r"grow_ratio must be in (0, 1), got 2.0"),
    (["--sparsity", "90"], "need --sparse METHOD"),
])
def test_cli_sparse_errors_are_one_line_and_write_nothing(data_root, tmp_path, capsys, extra,
                                                          message):
    run = tmp_path / "run"
    assert main(["train", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 data_root, "--quiet", "--max-iters", "3", "--out", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not run.exists()
