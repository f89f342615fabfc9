"""The laptop profiles on datasets at the real stored sizes, end to end through the CLI:
train -> prune -> fine-tune -> evaluate -> export (in-process, one iteration per step).
Before the load-time resize, the first evaluation stopped: test targets of the stored size
are not of the profile's IMAGE_SHAPE."""
import json
import warnings

import pytest

from lib.cli import main
from lib.config import load_config
from lib.data import loader as loader_module

# The resize warning is asserted where it matters; elsewhere it is expected noise.
pytestmark = pytest.mark.filterwarnings("ignore:.*not comparable with published numbers")

PRUNED_TASKS = {"nyuv2_3task": ["seg", "depth"], "cityscapes": ["seg", "depth"],
                "taskonomy": ["seg", "sn"]}


@pytest.mark.parametrize("profile", ["tiny", "cpu"])
@pytest.mark.parametrize("config", ["nyuv2_3task", "cityscapes", "taskonomy"])
def test_workflow_on_real_size_frames(real_size_root, tmp_path, capsys, monkeypatch, config,
                                      profile):
    monkeypatch.setattr(loader_module, "_ANNOUNCED_RESIZES", set())
    root = real_size_root(config)
    h, w = load_config(config, profile=profile).IMAGE_SHAPE
    common = ["--config", config, "--profile", profile, "--data-root", root]
    steps = ["--max-iters", "1", "--quiet", "--selection", "test"]
    tasks = PRUNED_TASKS[config]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", *common, "--out", str(tmp_path / "base"), *steps]) == 0
        assert main(["prune", *common, "--checkpoint", str(tmp_path / "base" / "base_model.pth"),
                     "--method", "cut", "--tasks", *tasks, "--sparsity", "50",
                     "--num-batches", "1", "--out", str(tmp_path / "pruned")]) == 0
        pruned = tmp_path / "pruned" / f"cut_50_{'-'.join(tasks)}.pth"
        assert main(["finetune", *common, "--checkpoint", str(pruned),
                     "--out", str(tmp_path / "ft"), *steps]) == 0
        model = tmp_path / "ft" / "final_model.pth"
        assert main(["evaluate", *common, "--checkpoint", str(model),
                     "--out", str(tmp_path / "metrics.json")]) == 0
    announced = [str(c.message) for c in caught if "not comparable" in str(c.message)]
    assert len(announced) == 1 and f"resized to {h}x{w}" in announced[0]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == set(tasks)
    # The artifact always; ONNX (and its parity check) for the cpu profile, the one deployed.
    onnx = ["--onnx", "--input-shape", "1", "3", str(h), str(w)] if profile == "cpu" else []
    assert main(["export", "--checkpoint", str(model), "--out", str(tmp_path / "export"), *onnx]) == 0
    assert (tmp_path / "export" / "final_model.cutedge").is_file()
    if onnx:
        assert (tmp_path / "export" / "final_model.onnx").is_file()
        assert "parity ok" in capsys.readouterr().out
