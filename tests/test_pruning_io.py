"""Pruned checkpoints, base-model loading, mask analysis figures and the ``prune`` CLI."""
import json

import pytest
import torch

from lib.cli import main as cli_main
from lib.config import load_config
from lib.models import SceneNet, head_modules, prunable_modules
from lib.pruning import (layer_sparsity, load_base_model, load_pruned, mask_iou_by_layer,
                         masks_of, pairwise_mask_iou, plot_layer_sparsity, plot_mask_iou, prune,
                         reference_state_dict,
                         save_pruned, sparsity_report)


@pytest.fixture(scope="module")
def setup(tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    result = prune("cut", net, criterion, loader, selected_tasks=["depth", "sn"], sparsity=90,
                   num_batches=2, seed=7)
    result.net.eval()
    return cfg, net, loader, result


def test_save_and_reload_gives_identical_outputs(setup, tmp_path):
    _, net, loader, result = setup
    pruned = result.net
    path = save_pruned(pruned, tmp_path / "cut_90_depth-sn.pth", meta={**result.meta, "note": "x"},
                       full_net=net)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(pruned.state_dict())
    assert any(k.endswith(".weight_orig") for k in state) and not any(k.startswith("task1_") for k in state)
    side = json.loads((tmp_path / "cut_90_depth-sn.json").read_text())
    assert side["architecture"] == pruned.architecture()
    meta = side["meta"]
    assert meta["method"] == "cut" and meta["selected_tasks"] == ["depth", "sn"]
    assert meta["seed"] == 7 and meta["note"] == "x" and 0 < meta["keep_ratio"] < 1
    assert abs(side["sparsity"]["deployed"]["sparsity"] - 90) <= 0.5
    assert side["sparsity"]["reference"]["total"] > side["sparsity"]["deployed"]["total"]
    loaded, loaded_meta = load_pruned(path)
    assert loaded_meta == meta and loaded.task_ids == [3, 2]
    img = loader[0]["img"]
    with torch.no_grad():
        for a, b in zip(pruned(img), loaded.eval()(img)):
            assert torch.equal(a, b)
    assert all(torch.equal(masks_of(loaded)[k], v) for k, v in masks_of(pruned).items())


def test_save_and_load_errors_write_nothing(setup, tmp_path):
    pruned = setup[3].net
    with pytest.raises(ValueError, match=r"must end in \.pth"):
        save_pruned(pruned, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_pruned(pruned, tmp_path / "model.pth", meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []
    torch.save(pruned.state_dict(), tmp_path / "lonely.pth")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_pruned(tmp_path / "lonely.pth")


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s}, lambda s: {"model": s},
                                  lambda s: {f"module.{k}": v for k, v in s.items()}])
def test_load_base_model_accepts_reference_layouts(setup, tmp_path, wrap):
    cfg, net, loader, _ = setup
    torch.save(wrap(net.state_dict()), tmp_path / "base.pth")
    loaded = load_base_model(tmp_path / "base.pth", cfg).eval()
    with torch.no_grad():
        assert torch.equal(loaded(loader[0]["img"])[0], net(loader[0]["img"])[0])


def test_load_base_model_errors(setup, tmp_path):
    cfg, net, _, result = setup
    pruned = result.net
    state = net.state_dict()
    state.pop("backbone.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \['backbone.conv1.weight'\].*'extra.weight'") as info:
        load_base_model(tmp_path / "bad.pth", cfg)
    assert "\n" not in str(info.value)
    torch.save(pruned.state_dict(), tmp_path / "pruned.pth")
    with pytest.raises(ValueError, match="load_pruned"):
        load_base_model(tmp_path / "pruned.pth", cfg)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_base_model(tmp_path / "junk.pth", cfg)
    wide = load_config("nyuv2_3task", profile="tiny", WIDTH_MULT=0.25)
    torch.save(net.state_dict(), tmp_path / "base.pth")
    with pytest.raises(ValueError, match="does not match the network") as info:
        load_base_model(tmp_path / "base.pth", wide)
    assert "\n" not in str(info.value)


def test_mask_iou_and_layer_sparsity_by_hand():
    a = {"l1": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "l2": torch.zeros(3, dtype=torch.bool)}
    b = {"l1": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "l2": torch.zeros(3, dtype=torch.bool),
         "l3": torch.ones(2, dtype=torch.bool)}
    assert mask_iou_by_layer(a, b) == {"l1": pytest.approx(1 / 3), "l2": 1.0}
    assert pairwise_mask_iou({"x": a, "y": b}) == {"x&y": mask_iou_by_layer(a, b)}
    assert layer_sparsity(a) == {"l1": 50.0, "l2": 100.0}
    with pytest.raises(ValueError, match="share no layer"):
        mask_iou_by_layer({"p": a["l1"]}, {"q": a["l1"]})


def test_figures_are_written_as_png(setup, tmp_path):
    result = setup[3]
    pruned = result.net
    fig = plot_layer_sparsity({"cut": sparsity_report(pruned), "masks": masks_of(pruned)},
                              tmp_path / "sparsity.png")
    assert fig.axes and (tmp_path / "sparsity.png").read_bytes()[:4] == b"\x89PNG"
    plot_mask_iou(pairwise_mask_iou(result.task_masks), tmp_path / "iou.png")
    assert (tmp_path / "iou.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_prunes_a_checkpoint(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUT_NUM_THREADS", str(torch.get_num_threads()))
    _, net, _, _ = setup
    torch.save(net.state_dict(), tmp_path / "base.pth")
    rc = cli_main(["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
                   str(tmp_path / "base.pth"), "--method", "lth", "--tasks", "seg", "depth",
                   "--sparsity", "80", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0 and "deployed sparsity 80.00%" in capsys.readouterr().out
    loaded, meta = load_pruned(tmp_path / "out" / "lth_80_seg-depth.pth")
    assert meta["config"] == "nyuv2_3task" and loaded.tasks == ["seg", "depth"]


@pytest.mark.parametrize("bad,match", [(["--sparsity", "100"], "sparsity must be"),
                                       (["--keep-ratio", "1.5"], "keep_ratio must be"),
                                       (["--sparsity", "90", "--tasks", "edge"], "unknown task"),
                                       (["--sparsity", "90", "--checkpoint", "nope.pth"], "does not exist")])
def test_cli_bad_input_one_line_error_nothing_written(setup, tmp_path, capsys, bad, match):
    _, net, _, _ = setup
    torch.save(net.state_dict(), tmp_path / "base.pth")
    args = {"--config": "nyuv2_3task", "--profile": "tiny", "--checkpoint": str(tmp_path / "base.pth"),
            "--method": "random", "--tasks": "seg", "--out": str(tmp_path / "out")}
    argv = ["prune"]
    for key, value in args.items():
        if key not in bad:
            argv += [key, value]
    rc = cli_main(argv + bad)
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_reference_state_dict_loads_strictly_like_the_original_code(setup):
    import torch.nn.utils.prune as torch_prune
    _, net, loader, result = setup
    pruned = result.net
    state = reference_state_dict(pruned, net)
    reference_net = SceneNet(net.tasks_num_class, net.backbone_name, net.width_mult)
    for module in prunable_modules(reference_net).values():  # what train_prune.ipynb does
        torch_prune.identity(module, "weight")
    reference_net.load_state_dict(state, strict=True)
    reference_net.eval()
    img = loader[0]["img"]
    with torch.no_grad():
        outputs, compact = reference_net(img), pruned(img)
    assert torch.equal(outputs[2], compact[0]) and torch.equal(outputs[1], compact[1])
    removed = head_modules(reference_net, 1)  # the removed head, as it was in the full network
    for name, module in head_modules(net, 1).items():
        assert torch.equal(removed[name].weight_orig, module.weight)
        assert removed[name].weight_mask.all()


def test_cli_cut_on_synthetic_data(setup, tmp_path, capsys, monkeypatch):
    from lib.data.synthetic import prepare_synthetic
    monkeypatch.setenv("CUT_NUM_THREADS", str(torch.get_num_threads()))
    cfg, net, _, _ = setup
    root = prepare_synthetic(cfg, root=tmp_path / "data", num_train=4, num_test=1, progress=False)
    torch.save(net.state_dict(), tmp_path / "base.pth")
    argv = ["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
            str(tmp_path / "base.pth"), "--method", "cut", "--tasks", "depth", "seg",
            "--sparsity", "90", "--num-batches", "2", "--out", str(tmp_path / "out"),
            "--device", "cpu"]
    assert cli_main(argv + ["--data-root", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli_main(argv + ["--data-root", root]) == 0
    loaded, meta = load_pruned(tmp_path / "out" / "cut_90_depth-seg.pth")
    assert loaded.tasks == ["depth", "seg"] and meta["min_votes"] == 2 and meta["num_batches"] == 2
    assert abs(sparsity_report(loaded)["deployed"]["sparsity"] - 90) <= 0.5


def test_cli_structured_cut_removes_channels_and_exports(setup, tmp_path, capsys, monkeypatch):
    from lib.data.synthetic import prepare_synthetic
    from lib.export import load_artifact
    from lib.models import channel_spec
    monkeypatch.setenv("CUT_NUM_THREADS", str(torch.get_num_threads()))
    cfg, net, _, _ = setup
    root = prepare_synthetic(cfg, root=tmp_path / "data", num_train=4, num_test=1, progress=False)
    torch.save(net.state_dict(), tmp_path / "base.pth")
    assert cli_main(["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
                     str(tmp_path / "base.pth"), "--method", "structured_cut", "--tasks", "seg",
                     "depth", "--sparsity", "50", "--num-batches", "1", "--data-root", root,
                     "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert "structured_cut seg+depth: keep ratio 0.5000" in capsys.readouterr().out
    loaded, meta = load_pruned(tmp_path / "out" / "structured_cut_50_seg-depth.pth")
    assert meta["channel_sparsity"] == 0.5 and not masks_of(loaded)
    assert channel_spec(loaded)["conv"]["backbone.conv1"][0] < net.backbone.conv1.out_channels
    assert cli_main(["export", "--checkpoint", str(tmp_path / "out" / "structured_cut_50_seg-depth.pth"),
                     "--out", str(tmp_path / "edge")]) == 0
    img = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(load_artifact(tmp_path / "edge" / "structured_cut_50_seg-depth.cutedge")(img)[0],
                           loaded.eval()(img)[0])
