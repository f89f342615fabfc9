"""CUT_PLUGINS (lib/plugins.py): a dataset file (examples/custom_dataset.py) and a model file
(examples/custom_model.py) named by the variable alone reach every registry's lookup, the
commands (synthetic, train, prune, evaluate) and the explorer, as methods do
(tests/test_method_registry.py); a missing or failing plugin is a one-line exit-2 error naming
it."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib import plugins
from lib.cli import main
from lib.datasets import DATASET_REGISTRY
from lib.models import MODEL_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DATASET_FILE = ROOT / "examples" / "custom_dataset.py"
MODEL_FILE = ROOT / "examples" / "custom_model.py"
EXAMPLES = ("examples.custom_dataset", "examples.custom_model")


@pytest.fixture
def fresh(monkeypatch):
    """This process as a fresh one for the examples: ``toy_scenes`` and ``ExampleNet``
    unregistered and their modules not imported (another test file imports them), no plugin
    loaded, CUT_PLUGINS unset; all restored afterwards."""
    saved = (dict(DATASET_REGISTRY), dict(MODEL_REGISTRY), set(plugins._loaded),
             {n: sys.modules[n] for n in EXAMPLES if n in sys.modules})
    DATASET_REGISTRY.pop("toy_scenes", None)
    MODEL_REGISTRY.pop("ExampleNet", None)
    for name in EXAMPLES:
        sys.modules.pop(name, None)
    plugins._loaded.clear()
    monkeypatch.delenv("CUT_PLUGINS", raising=False)
    yield
    datasets, models, loaded, modules = saved
    DATASET_REGISTRY.clear()
    DATASET_REGISTRY.update(datasets)
    MODEL_REGISTRY.clear()
    MODEL_REGISTRY.update(models)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    for name in EXAMPLES:
        sys.modules.pop(name, None)
    sys.modules.update(modules)
    for name, module in modules.items():
        setattr(sys.modules["examples"], name.rpartition(".")[2], module)


def run(argv, capsys):
    """``python -m lib ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:       # argparse's usage errors (exit 2) and --help (exit 0)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def explorer_matches_prune(net, cfg, tasks):
    """The explorer's CUT masks at 50 % on ``net`` (data: ``cfg``'s loader) are prune's."""
    from lib.data import build_loader
    from lib.explorer import ExplorerState
    from lib.losses import losses_from_config
    from lib.pruning import prune

    criterion, loader = losses_from_config(cfg), build_loader(cfg, "train", shuffle=False,
                                                                 augment=False)
    state = ExplorerState(net, criterion, loader, num_batches=2, cfg=cfg, latency_repeats=1)
    snap = state.snapshot(tasks, "cut", 50)
    result = prune("cut", net, criterion, loader, selected_tasks=tasks, sparsity=50,
                   num_batches=2)
    assert snap.keep_ratio == result.meta["keep_ratio"]
    got = state.masks(snap)
    assert set(got) == set(result.masks)
    assert all(torch.equal(result.masks[n], got[n]) for n in result.masks)


# ------------------------------------------------------------------------ registry lookups
def lookups():
    from lib.config import canonical_name, load_config
    from lib.datasets import dataset_names, dataset_spec
    from lib.models import build_model, model_from_config

    record = {"model": "ExampleNet", "tasks": ["a"], "num_classes": [2], "width": 4}
    return {
        "dataset_spec": (DATASET_FILE, lambda: dataset_spec("toy_scenes").name == "toy_scenes"),
        "dataset_names": (DATASET_FILE, lambda: "toy_scenes" in dataset_names()),
        "canonical_name": (DATASET_FILE, lambda: canonical_name("toy_scenes") == "toy_scenes"),
        "load_config": (DATASET_FILE, lambda: load_config("toy_scenes", "tiny").WIDTH == 8),
        "model_from_config": (MODEL_FILE, lambda: type(model_from_config(
            load_config("nyuv2_mtan", "tiny", MODEL="ExampleNet"))).__name__ == "ExampleNet"),
        "build_model": (MODEL_FILE, lambda: build_model(record).tasks == ["a"]),
    }


@pytest.mark.parametrize("name", sorted(lookups()))
def test_every_registry_lookup_loads_cut_plugins_before_refusing(fresh, monkeypatch, name):
    path, lookup = lookups()[name]
    try:                                            # unknown without the variable
        assert not lookup()
    except ValueError as exc:
        assert "toy_scenes" in str(exc) or "ExampleNet" in str(exc)
    monkeypatch.setenv("CUT_PLUGINS", str(path))
    assert lookup()
    assert str(path) in {str(Path(k)) for k in plugins._loaded}


def test_a_file_importable_by_name_is_one_module_whichever_way_it_comes(fresh, monkeypatch):
    """The dataset file imports the model file as ``examples.custom_model``; naming both in
    CUT_PLUGINS registers ExampleNet once (no 'already registered' clash), from that module."""
    monkeypatch.setenv("CUT_PLUGINS", os.pathsep.join([str(MODEL_FILE), str(DATASET_FILE)]))
    assert plugins.load_plugins() == [str(MODEL_FILE), str(DATASET_FILE)]
    assert MODEL_REGISTRY["ExampleNet"] is sys.modules["examples.custom_model"].ExampleNet
    assert DATASET_REGISTRY["toy_scenes"].reader is sys.modules["examples.custom_dataset"].ToyScenes
    assert plugins.load_plugins() == []             # each once


# ------------------------------------------------------------------------ the commands
def test_a_dataset_file_reaches_synthetic_train_prune_evaluate_and_the_explorer(
        fresh, monkeypatch, tmp_path, capsys):
    from lib.checkpoints import load_network
    from lib.config import load_config

    data, base, pruned = tmp_path / "toy", tmp_path / "base", tmp_path / "pruned"
    code, _, err = run(["synthetic", "--config", "toy_scenes", "--profile", "tiny", "--out",
                        data, "--quiet"], capsys)
    assert code == 2 and "unknown config 'toy_scenes'" in err     # not without the variable
    monkeypatch.setenv("CUT_PLUGINS", str(DATASET_FILE))
    code, out, err = run(["synthetic", "--config", "toy_scenes", "--profile", "tiny", "--out",
                          data, "--quiet"], capsys)
    assert code == 0, err
    assert "wrote 8 train + 4 test toy_scenes samples (32x32)" in out
    marker = json.loads((data / "synthetic.json").read_text())
    assert marker["generator"] == "examples.custom_dataset:prepare_toy"
    assert {p.name for p in data.iterdir()} == {"synthetic.json", "toy_train.pt", "toy_test.pt"}
    code, _, err = run(["synthetic", "--layout", "toy_scenes", "--profile", "tiny", "--out",
                        data, "--quiet"], capsys)             # a --layout choice too; never over
    assert code == 2 and f"{data} already exists and is not an empty folder" in err

    common = ["--data-root", data, "--device", "cpu", "--quiet"]
    code, out, err = run(["train", "--config", "toy_scenes", "--profile", "tiny", "--out", base,
                          "--max-iters", "2", *common], capsys)
    assert code == 0, err
    code, out, err = run(["prune", "--checkpoint", base / "base_model.pth", "--tasks", "mask",
                          "height", "--sparsity", "50", "--out", pruned, *common], capsys)
    assert code == 0, err
    assert "cut mask+height" in out
    checkpoint = pruned / "cut_50_mask-height.pth"
    code, out, err = run(["evaluate", "--checkpoint", checkpoint, *common], capsys)
    assert code == 0, err
    metrics = json.loads(checkpoint.with_suffix(".metrics.json").read_text())
    assert 0 <= metrics["mask"]["pixel_acc"] <= 1 and math.isfinite(metrics["height"]["abs_err"])

    cfg = load_config("toy_scenes", profile="tiny", DATA_ROOT=str(data))
    net = load_network(base / "base_model.pth", cfg)
    assert type(net).__name__ == "ExampleNet"
    explorer_matches_prune(net, cfg, ["mask", "height"])


def test_a_model_file_reaches_train_prune_and_the_explorer(fresh, monkeypatch, tmp_path,
                                                          capsys):
    from lib.checkpoints import load_network, load_pruned
    from lib.config import load_config

    data, base, pruned = tmp_path / "mtan", tmp_path / "base", tmp_path / "pruned"
    settings = ["--profile", "tiny", "--set", "MODEL=ExampleNet"]
    common = ["--data-root", data, "--device", "cpu", "--quiet"]
    assert run(["synthetic", "--config", "nyuv2_mtan", "--profile", "tiny", "--out", data,
                "--quiet"], capsys)[0] == 0
    train = ["train", "--config", "nyuv2_mtan", *settings, "--out", base, "--max-iters", "2",
             *common]
    code, _, err = run(train, capsys)
    assert code == 2 and "'ExampleNet' is not a registered model" in err
    assert not base.exists()                                    # refused before any output
    monkeypatch.setenv("CUT_PLUGINS", str(MODEL_FILE))
    code, _, err = run(train, capsys)
    assert code == 0, err
    prune = ["prune", "--checkpoint", base / "base_model.pth", "--tasks", "seg", "depth",
             "--sparsity", "50", "--out", pruned, *common]
    code, _, err = run(prune, capsys)    # the config's own MODEL: named, with the fix
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds a ExampleNet network" in err and "give --set MODEL=ExampleNet" in err
    assert not pruned.exists()
    code, out, err = run([*prune, *settings[2:]], capsys)
    assert code == 0, err
    net, meta = load_pruned(pruned / "cut_50_seg-depth.pth")
    assert type(net).__name__ == "ExampleNet" and net.tasks == ["seg", "depth"]
    assert meta["target_sparsity"] == 50 and 0.4 < meta["keep_ratio"] < 0.7, meta

    cfg = load_config("nyuv2_mtan", profile="tiny", MODEL="ExampleNet", DATA_ROOT=str(data))
    explorer_matches_prune(load_network(base / "base_model.pth", cfg), cfg, ["seg", "depth"])


def test_the_variable_alone_reaches_a_fresh_process(tmp_path):
    env = {**os.environ, "CUT_PLUGINS": "examples/custom_dataset.py", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "lib", "synthetic", "--config", "toy_scenes",
                           "--profile", "tiny", "--out", str(tmp_path / "toy"), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "toy" / "toy_train.pt").is_file()


# ------------------------------------------------------------------------ errors
def test_a_missing_or_failing_plugin_is_a_one_line_exit_2_error_naming_it(
        fresh, monkeypatch, tmp_path, capsys):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("import torch\nraise RuntimeError('no GPU\\nhere')\n")
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("def f(:\n")
    cases = {tmp_path / "nope.py": "plugin file", bad: "RuntimeError: no GPU here",
             broken: "SyntaxError", "no_such_plugin_module": "ModuleNotFoundError"}
    for entry, what in cases.items():
        monkeypatch.setenv("CUT_PLUGINS", str(entry))
        code, out, err = run(["prune", "--help"], capsys)
        assert code == 2 and out == ""
        assert err.startswith("error: CUT_PLUGINS: ") and str(entry) in err and what in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cut_plugin_bad_plugin" not in sys.modules              # no half-imported module
    from lib.datasets import dataset_spec                           # and from a lookup
    monkeypatch.setenv("CUT_PLUGINS", str(bad))
    with pytest.raises(plugins.PluginError, match=f"CUT_PLUGINS: {bad}: RuntimeError"):
        dataset_spec("toy_scenes")
