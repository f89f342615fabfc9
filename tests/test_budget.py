"""Budget mode: the ratio solved from measured sizes, reachable budgets met, unreachable refused."""
import json
import os

import pytest
import torch

from lib.cli import main as cli_main
from lib.experiments.budget import fit_budget
from lib.export.budget import MB, BudgetUnreachable, Measurer, budget_markdown, solve_budget


def _size_of_full(setup, structure, dtype="float32"):
    """The measured artifact size of the unpruned selection (ratio 1), MB."""
    cfg, net, criterion, loader = setup
    result = fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64), budget_mb=1e6,
                        structure=structure, dtype=dtype, repeats=1, num_batches=1,
                        calibration=loader * 2, calibration_batches=4, verbose=False)
    assert [t.ratio for t in result.trials] == [1.0]   # ratio 1 fits: the answer, no search
    return result.mb


@pytest.mark.parametrize("structure", ["structured", "unstructured"])
def test_reachable_size_budget_is_met_by_bisection_on_measured_sizes(tiny_setup, tmp_path,
                                                                     structure):
    cfg, net, criterion, loader = tiny_setup
    budget = 0.3 * _size_of_full(tiny_setup, structure)
    result = fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64), budget_mb=budget,
                        structure=structure, repeats=1, num_batches=1, iterations=3,
                        out_dir=tmp_path / "out", verbose=False)
    assert result.bytes <= budget * MB and 0 < result.ratio < 1
    met = [t for t in result.trials if t.meets]
    assert result.ratio == max(t.ratio for t in met)
    # Every trial above the chosen ratio was measured over budget (the search is on data).
    assert all(not t.meets for t in result.trials if t.ratio > result.ratio)
    assert all(t.bytes > budget * MB for t in result.trials if not t.meets)
    files = result.files
    assert os.path.getsize(files["artifact"]) == result.bytes
    summary = json.loads((tmp_path / "out" / "budget.json").read_text())
    assert summary["ratio"] == result.ratio and len(summary["trials"]) == len(result.trials)
    assert "| trial |" in budget_markdown(result)
    if structure == "structured":
        from lib.export import load_artifact
        rebuilt = load_artifact(files["artifact"])
        assert sum(p.numel() for p in rebuilt.parameters()) < \
            sum(p.numel() for p in net.select(["seg"]).parameters())


def test_unreachable_budget_says_what_was_reached_and_writes_nothing(tiny_setup, tmp_path):
    cfg, net, criterion, loader = tiny_setup
    with pytest.raises(BudgetUnreachable, match=r"budget 0.0001 MB is unreachable .* smallest "
                                                r"candidate \(ratio 0.02\) measures [0-9.]+ MB"):
        fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64), budget_mb=1e-4,
                   repeats=1, num_batches=1, out_dir=tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(BudgetUnreachable, match="unstructured zeros do not speed up dense"):
        fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64), budget_ms=1e-6,
                   structure="unstructured", repeats=1, num_batches=1, verbose=False)


def test_bad_budgets_are_refused_before_any_work(tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    with pytest.raises(ValueError, match="give a size budget"):
        fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64))
    with pytest.raises(ValueError, match="budget_ms must be a positive number"):
        fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64), budget_ms=-5)
    with pytest.raises(ValueError, match="calibration data hold 2 batch"):
        Measurer((1, 3, 48, 64), dtype="int8", calibration=loader)
    with pytest.raises(ValueError, match="ratio range"):
        solve_budget(lambda r: net, Measurer((1, 3, 48, 64)), budget_mb=1,
                     ratio_range=(0.5, 0.2))


def test_int8_budget_measures_the_int8_artifact(tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    full_int8 = _size_of_full(tiny_setup, "structured", dtype="int8")
    result = fit_budget(net, criterion, loader, ["seg"], (1, 3, 48, 64),
                        budget_mb=0.5 * full_int8, dtype="int8", repeats=1, num_batches=1,
                        iterations=2, calibration=loader * 2, calibration_batches=4,
                        verbose=False)
    assert result.bytes <= 0.5 * full_int8 * MB and result.dtype == "int8"
    assert result.files == {}  # no out_dir: nothing kept


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    from lib.config import load_config
    from lib.data.synthetic import write_dataset
    from lib.models import SceneNet

    root = tmp_path_factory.mktemp("budget")
    data = write_dataset(root / "data", "nyuv2_3", 8, 2, 48, 64, seed=3)
    cfg = load_config("nyuv2_3task", profile="tiny")
    # Untrained, the network predicts one class everywhere, and the reference mIoU (the report
    # compares with the dense model) is undefined without a true positive: seed 9's is floor,
    # which every synthetic room shows.
    torch.manual_seed(9)
    torch.save(SceneNet.from_config(cfg).state_dict(), root / "base.pth")
    return root, str(data)


def _budget_args(root, data, *extra):
    return ["export", "--checkpoint", str(root / "base.pth"), "--config", "nyuv2_3task",
            "--profile", "tiny", "--data-root", data, "--tasks", "seg", "--input-shape", "1", "3", "48", "64",
            "--repeats", "1", "--threads", "1", "--num-batches", "1", "--iterations", "2",
            "--calibration-batches", "4", *extra]


def test_cli_budget_mode_int8_writes_the_chosen_model(cli_inputs, tmp_path, capsys):
    root, data = cli_inputs
    out = tmp_path / "out"
    assert cli_main(_budget_args(root, data, "--budget-mb", "0.05", "--budget-ms", "10000",
                                 "--int8", "--ranking", "global", "--out", str(out))) == 0
    summary = json.loads((out / "budget.json").read_text())
    assert summary["dtype"] == "int8" and summary["bytes"] <= 0.05 * MB
    assert summary["latency_ms"] <= 10000 and 0 < summary["ratio"] < 1
    assert (out / "structured_seg.int8.cutedge").stat().st_size == summary["bytes"]
    assert "**Budget** <= 0.05 MB, <= 10000 ms" in (out / "budget.md").read_text()
    assert "channel ratio" in capsys.readouterr().out


def test_cli_budget_report_has_the_chosen_network_its_metrics_and_the_budget(cli_inputs,
                                                                             tmp_path):
    root, data = cli_inputs
    out = tmp_path / "out"
    assert cli_main(_budget_args(root, data, "--budget-mb", "0.5", "--out", str(out),
                                 "--dense", str(root / "base.pth"))) == 0
    report = (out / "report.md").read_text()
    assert "| compact |" in report and "Δ seg vs dense %" in report and "**Budget**" in report
    assert (out / "report.png").is_file()


def test_cli_unreachable_budget_is_one_line_and_writes_nothing(cli_inputs, tmp_path, capsys):
    root, data = cli_inputs
    out = tmp_path / "out"
    assert cli_main(_budget_args(root, data, "--budget-mb", "0.0001", "--out", str(out))) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after tqdm
    assert err.startswith("error: budget 0.0001 MB is unreachable") and "\n" not in err
    assert not out.exists()
    assert cli_main(_budget_args(root, data, "--budget-ms", "0", "--out", str(out))) == 2
    assert "budget_ms must be a positive number" in capsys.readouterr().err
    assert cli_main(_budget_args(root, data, "--budget-mb", "1", "--input-shape", "1", "3",
                                 "96", "128", "--out", str(out))) == 2
    assert "does not match config 'nyuv2_3task' profile 'tiny' images (48, 64)" in \
        capsys.readouterr().err
    assert not out.exists()


def test_cli_int8_export_reports_task_metrics_against_float(cli_inputs, tmp_path, capsys):
    from lib.config import load_config
    from lib.models import SceneNet
    from lib.pruning import global_magnitude_masks, install_masks, save_pruned

    root, data = cli_inputs
    cfg = load_config("nyuv2_3task", profile="tiny")
    # An untrained network predicts one class everywhere, and the reference mIoU is NaN
    # without a true positive: seed 9's class is floor, which every synthetic room shows.
    torch.manual_seed(9)
    net = SceneNet.from_config(cfg).select(["seg", "depth"]).eval()
    install_masks(net, global_magnitude_masks(net, 0.1))
    save_pruned(net, tmp_path / "pruned.pth")
    out = tmp_path / "out"
    args = ["export", "--checkpoint", str(tmp_path / "pruned.pth"), "--out", str(out), "--int8",
            "--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data,
            "--input-shape", "1", "3", "48", "64", "--calibration-batches", "4"]
    assert cli_main(args) == 0
    summary = json.loads((out / "export_summary.json").read_text())
    int8 = summary["int8"]
    assert int8["zeros"]["nonzero_after"] == 0 and int8["zeros"]["pruned"] > 0
    assert int8["artifact"]["bytes"] < 0.3 * int8["onnx"]["bytes"]
    assert set(int8["fidelity"]["delta"]) == {"seg", "depth"}
    assert (out / "pruned.int8.cutedge").is_file() and (out / "pruned_int8_fidelity.json").is_file()
    assert "Δ vs float on the test split" in capsys.readouterr().out
    # Too few calibration batches: refused before any file is written.
    assert cli_main(args[:-1] + ["9"] + ["--out", str(tmp_path / "none")]) == 2
    assert "hold 4 batch(es) (8 input(s) of batch 1), need 9" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_cli_int8_export_with_an_undefined_metric_and_what_it_leaves(cli_inputs, tmp_path,
                                                                     capsys, monkeypatch):
    """The seg head predicts one class the test split never shows: no true positive, mIoU
    undefined. Its changes are null with a reason, never numbers; a re-export replaces the
    int8 files; a failed export leaves nothing."""
    from lib.config import load_config
    from lib.data import build_loader
    from lib.models import SceneNet
    from lib.pruning import global_magnitude_masks, install_masks, save_pruned

    root, data = cli_inputs
    cfg = load_config("nyuv2_3task", profile="tiny", DATA_ROOT=data)
    shown = {int(c) for b in build_loader(cfg, "test", batch_size=1, shuffle=False)
             for c in b["seg"].unique()}
    absent = min(set(range(cfg.TASKS_NUM_CLASS[0])) - shown)
    torch.manual_seed(0)
    net = SceneNet.from_config(cfg).select(["seg", "depth"]).eval()
    with torch.no_grad():
        for k, branch in enumerate(net.head(net.task_id("seg"))):
            branch.conv3.weight.mul_(1e-3)
            branch.conv3.bias.zero_()
            branch.conv3.bias[absent] = 10.0 if k == 0 else 0.0
    install_masks(net, global_magnitude_masks(net, 0.5))
    save_pruned(net, tmp_path / "pruned.pth")
    out = tmp_path / "out"
    base = ["export", "--checkpoint", str(tmp_path / "pruned.pth"), "--out", str(out),
            "--input-shape", "1", "3", "48", "64"]
    int8 = ["--int8", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data,
            "--calibration-batches", "4"]
    assert cli_main(base + int8) == 0
    assert "seg undefined (" in capsys.readouterr().out
    fidelity = json.loads((out / "pruned_int8_fidelity.json").read_text())
    assert fidelity["float"]["seg"]["mIoU"] is None and fidelity["int8"]["seg"]["mIoU"] is None
    assert "true positive" in fidelity["undefined"]["float"]["seg"]["mIoU"]
    assert fidelity["metric_change_pct"]["seg"]["mIoU"] is None
    assert "float seg mIoU is undefined" in fidelity["undefined"]["metric_change_pct"]["seg"][
        "mIoU"]
    assert fidelity["delta"]["seg"] is None and "undefined" in fidelity["undefined"]["delta"]["seg"]
    assert isinstance(fidelity["delta"]["depth"], float)
    int8_files = {"pruned_int8.onnx", "pruned.int8.cutedge", "pruned_int8_fidelity.json"}
    assert int8_files <= {p.name for p in out.iterdir()}
    # The re-export without --int8 replaces the last export whole: no stale int8 files.
    assert cli_main(base) == 0
    assert {p.name for p in out.iterdir()} == {"pruned.cutedge", "export_summary.json"}
    assert "int8" not in json.loads((out / "export_summary.json").read_text())
    # An export failing half-way (after the artifact and the int8 files) leaves nothing.
    import lib.export.fidelity as fidelity_module

    def fail(*args, **kwargs):
        raise RuntimeError("onnxruntime died")
    monkeypatch.setattr(fidelity_module, "int8_fidelity", fail)
    for folder in (out, tmp_path / "fresh"):
        assert cli_main(base[:4] + [str(folder)] + base[5:] + int8) == 2
        assert "error: onnxruntime died" in capsys.readouterr().err
        assert not folder.exists() or not any(folder.iterdir())
    assert not (tmp_path / "fresh").exists()
