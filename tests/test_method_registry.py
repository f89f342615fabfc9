"""The method registry: one MethodSpec per method, and a new mask method and a new trained method
defined in one file (examples/custom_method.py) reaching prune, the study, the CLI and the
explorer without any other file touched."""
import csv
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import lib.sparse  # noqa: F401  (registers the methods that train)
from lib import plugins
from lib.cli import main
from lib.experiments import StudySpec, run_study
from lib.experiments.benchmark import applicable_methods, scratch_methods
from lib.pruning import (DATA_FREE_METHODS, METHODS, STRUCTURED_METHODS, load_pruned, prune,
                         uses_data)
from lib.pruning import registry
from lib.pruning.registry import MethodSpec, method_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_method.py"
NEW = ("cut_blend", "static_erk")


@pytest.fixture
def plugin(monkeypatch):
    """The example's methods registered through CUT_PLUGINS, as a user's file is; the registry
    restored afterwards (so no other test sees them)."""
    saved = dict(registry.REGISTRY)
    monkeypatch.setenv("CUT_PLUGINS", str(EXAMPLE))
    assert method_spec("cut_blend").kind == "mask"      # an unknown name loads CUT_PLUGINS
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(saved)
    plugins._loaded.discard(str(EXAMPLE.resolve()))
    sys.modules.pop("examples.custom_method", None)   # the next test imports it afresh


def test_every_method_has_one_spec_and_the_old_names_are_views_of_it():
    specs = {n: method_spec(n) for n in registry.method_names()}
    assert {"cut", "structured_cut", "cut_floor", "rigl", "minmax_pipeline",
            "disparse_static_scratch"} <= set(specs)
    assert all(s.kind in registry.KINDS and s.summary for s in specs.values())
    assert list(METHODS) == [n for n, s in specs.items() if s.kind in ("mask", "structured")]
    assert tuple(STRUCTURED_METHODS) == ("structured_cut",)
    assert tuple(DATA_FREE_METHODS) == ("lth", "random", "random_untrained")
    assert not uses_data("disparse_pt", "nyuv2_3") and uses_data("disparse_pt", "taskonomy")
    assert uses_data("disparse_pt", "nyuv2_3", score="gradient")
    assert applicable_methods()[0] == "cut" and applicable_methods()[-1] == "minmax_pipeline"
    assert scratch_methods() == ("disparse_dynamic", "minmax_dst", "rigl",
                                 "disparse_static_scratch")


def test_budgets_are_the_results_tables_strings():
    assert method_spec("cut").budget_for(300, 300, 40) == "base 300 + ft 40"
    assert method_spec("dense_ft").budget_for("given", 300, 40) == "base given + ft 40"
    assert method_spec("rigl").budget_for(300, 300, 40) == "300 from scratch"
    assert method_spec("disparse_static_scratch").budget_for(3, 3, 2) == "3 from scratch"
    assert method_spec("minmax_pipeline").budget_for(300, 300, 40) == \
        "base 300 + rew 40 + retrain 40"


@pytest.mark.parametrize("method, options, expected", [
    ("cut", {"min_vote": 2}, "method 'cut' has no option 'min_vote'; its options: min_votes"),
    ("cut", {"min_votes": "most"}, "method 'cut' option min_votes='most': expected an integer"),
    ("cut_iterative", {"rounds": "0"}, "option rounds='0': expected an integer >= 1"),
    ("cut_floor", {"min_density": 1.5}, "option min_density=1.5: expected a number > 0 and < 1"),
    ("disparse_pt", {"score": "grad"}, "expected one of ['auto', 'magnitude', 'gradient']"),
    ("rigl", {"intervall": 3}, "method 'rigl' has no option 'intervall'"),
    ("snip", {"x": 1}, "method 'snip' has no option 'x'; its options: none"),
])
def test_a_bad_option_is_a_one_line_error_naming_method_option_and_expectation(
        method, options, expected):
    with pytest.raises(ValueError) as caught:
        method_spec(method).check_options(options)
    message = str(caught.value)
    assert message.startswith(f"method {method!r}") and expected in message
    assert "\n" not in message


def test_options_from_the_command_line_are_converted():
    assert method_spec("cut").check_options({"min_votes": "3"}) == {"min_votes": 3}
    assert method_spec("cut").check_options({"min_votes": "any"}) == {"min_votes": "any"}
    assert method_spec("lth").check_options({"iterative": "true", "rounds": "4"}) == \
        {"iterative": True, "rounds": 4}
    assert method_spec("rigl").check_options({"interval": "10"}) == {"interval": 10}


def test_a_spec_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="kind 'oneshot'"):
        MethodSpec("x", "oneshot", "s", plan=lambda net, ctx: None)
    with pytest.raises(ValueError, match="needs a plan hook"):
        MethodSpec("x", "mask", "s")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_method("cut", lambda net, ctx: None)


def test_prune_checks_options_before_scoring(tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    with pytest.raises(ValueError, match="method 'cut' has no option 'vote'"):
        prune("cut", net, criterion, loader, selected_tasks=["seg"], sparsity=50,
              num_batches=1, vote=2)


# ----------------------------------------------------------- a mask method from one file
def test_the_new_mask_method_reaches_prune(plugin, tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    common = dict(selected_tasks=["seg", "depth"], sparsity=80, num_batches=2)
    cut = prune("cut", net, criterion, loader, **common)
    as_cut = prune("cut_blend", net, criterion, loader, alpha=1.0, **common)  # alpha 1: CUT
    assert all(torch.equal(cut.masks[n], as_cut.masks[n]) for n in cut.masks)
    blend = prune("cut_blend", net, criterion, loader, alpha="0", **common)   # text, converted
    assert blend.meta["alpha"] == 0 and blend.meta["method"] == "cut_blend"
    assert any(not torch.equal(cut.masks[n], blend.masks[n]) for n in cut.masks)
    assert abs(blend.sparsity - 80) <= 0.5
    with pytest.raises(ValueError, match=r"option alpha=2: expected a number >= 0 and <= 1"):
        prune("cut_blend", net, criterion, loader, alpha=2, **common)


def test_the_new_mask_method_reaches_the_explorer(plugin, tiny_setup):
    from lib.explorer import ExplorerState

    cfg, net, criterion, loader = tiny_setup
    state = ExplorerState(net, criterion, loader, num_batches=2, cfg=cfg, latency_repeats=1,
                          method_options={"cut_blend": {"alpha": "0.25"}})
    assert "cut_blend" in state.methods and "static_erk" not in state.methods
    snap = state.snapshot(["seg", "depth"], "cut_blend", 70)
    result = prune("cut_blend", net, criterion, loader, selected_tasks=["seg", "depth"],
                   sparsity=70, num_batches=2, alpha=0.25)
    assert snap.keep_ratio == result.meta["keep_ratio"]
    got = state.masks(snap)
    assert all(torch.equal(result.masks[n], got[n]) for n in result.masks)
    with pytest.raises(ValueError, match="method 'cut_blend' option alpha='high'"):
        ExplorerState(net, criterion, loader, num_batches=2,
                      method_options={"cut_blend": {"alpha": "high"}})


def test_the_new_methods_reach_the_cli(plugin, synthetic_cfg, tiny_setup, tmp_path, capsys):
    _, net, _, _ = tiny_setup
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert lines["cut_blend"] == "mask" and lines["static_erk"] == "trained_from_scratch"
    assert lines["cut"] == "mask" and lines["dense_ft"] == "control"
    torch.save(net.state_dict(), tmp_path / "base.pth")
    argv = ["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
            str(tmp_path / "base.pth"), "--method", "cut_blend", "--tasks", "seg", "depth",
            "--sparsity", "80", "--num-batches", "1", "--data-root", synthetic_cfg.DATA_ROOT,
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv + ["--method-option", "beta=1"]) == 2
    err = capsys.readouterr().err
    assert "error: method 'cut_blend' has no option 'beta'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()                      # refused before any output
    assert main(argv + ["--method-option", "alpha=0.25", "--min-votes", "any"]) == 0
    _, meta = load_pruned(tmp_path / "out" / "cut_blend_80_seg-depth.pth")
    assert meta["alpha"] == 0.25 and meta["min_votes"] == "any"


def test_a_missing_plugin_file_is_a_one_line_cli_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CUT_PLUGINS", str(tmp_path / "nope.py"))
    assert main(["methods"]) == 2
    err = capsys.readouterr().err
    assert "nope.py does not exist" in err and "Traceback" not in err


# ------------------------------------------------- both new methods in the study's grid
def test_the_new_methods_reach_the_study(plugin, tmp_path):
    out = tmp_path / "study"
    spec = StudySpec(config="nyuv2_3task", profile="tiny", out_dir=str(out),
                     methods=("cut_blend", "static_erk"), sparsities=(80,),
                     selections=[("seg", "depth")], base_iters=3, finetune_iters=2,
                     num_batches=1, synthetic_train=6, synthetic_test=2, dense_control=False,
                     metric_options={"miou": "present"},
                     method_options={"cut_blend": {"alpha": 0.5},
                                     "static_erk": {"distribution": "uniform"}})
    assert os.environ["CUT_ENGINE"] == "serial"
    result = run_study(spec, progress=False)
    with open(result.table_csv, newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["cut_blend"]["budget"] == "base 3 + ft 2"
    assert rows["static_erk"]["budget"] == "3 from scratch"
    for method in NEW:
        record = json.loads((out / "cells" / f"{method}_80_seg-depth.json").read_text())
        assert abs(record["row"]["measured_sparsity"] - 80) <= 1.0, (method, record["row"])
        assert (out / "cells" / f"{method}_80_seg-depth" / "final_model.pth").exists()
    with pytest.raises(ValueError, match="method 'static_erk' option distribution='erk2'"):
        run_study(StudySpec(**{**spec.__dict__, "out_dir": str(tmp_path / "other"),
                               "method_options": {"static_erk": {"distribution": "erk2"}}}),
                  progress=False)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("argv, expected", [
    (["reproduce", "--methods", "cut", "rigl", "--method-option", "rigl.intervall=3"],
     "method 'rigl' has no option 'intervall'; its options: interval, end"),
    (["reproduce", "--methods", "cut", "--method-option", "rigl.interval=3"],
     "method_options names method 'rigl', which the study does not run"),
    (["reproduce", "--methods", "cut", "--method-option", "interval=3"],
     "--method-option interval=3: expected METHOD.KEY=VALUE"),
    (["reproduce", "--methods", "cut_floor", "--method-option", "cut_floor.min_density=2"],
     "method 'cut_floor' option min_density=2: expected a number > 0 and < 1"),
    (["prune", "--method", "lth", "--min-votes", "2"],
     "method 'lth' has no option 'min_votes'"),
    (["prune", "--method", "cut", "--min-votes", "2", "--method-option", "min_votes=any"],
     "give min_votes once"),
])
def test_method_options_on_the_command_line_are_checked_before_anything_is_written(
        argv, expected, tmp_path, capsys):
    out = tmp_path / "out"
    if argv[0] == "prune":
        argv = argv + ["--config", "nyuv2_3task", "--checkpoint", str(tmp_path / "base.pth"),
                       "--tasks", "seg", "--sparsity", "50"]
    assert main(argv + ["--out", str(out)] + (["--engine", "serial"]
                                              if argv[0] == "reproduce" else [])) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert not out.exists()
