"""Adversarial inputs (issue 11): each case is refused in one line naming the file, key or tensor,
before any output is written; nothing non-finite is ever passed on as a result.

Items: 1 non-finite weights / masks / outputs / metrics, 2 masks validated on every read,
4 resume refuses changed settings, 5 sidecar vs state dict, 6 one-line CLI errors, 7 JSON
errors name the file, 8 artifact manifest schema + checksum, 9 stale temporaries, 10 validation
before work, 11 empty synthetic datasets and reproducible results files.
"""
import json
import random
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.checkpoints import load_base_model, load_pruned, read_checkpoint, save_pruned
from lib.cli import main
from lib.config import load_config
from lib.data.synthetic import prepare_synthetic, write_dataset
from lib.export import ArtifactFormatError, load_artifact, save_artifact
from lib.export.container import FORMAT_VERSION, MAGIC
from lib.masks import install_masks
from lib.metrics import SceneNetEval, delta_or_none, read_metrics, write_metrics
from lib.models import MultiTaskModel, SceneNet, register_model
from lib.pruning import prune
from lib.training import evaluate
from lib.training.run_dir import prepare_run_dir
from lib.utils import NonFiniteError, atomic_write_json


# ----------------------------------------------------------------------------- helpers
def cli_error(capsys, *argv) -> str:
    """Run ``python -m lib ARGV`` in-process; assert exit code 2 and a one-line error without
    traceback (progress bars aside); return that line."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert err.rstrip().endswith(errors[0]), err
    return errors[0]


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) \
        if folder.exists() else []


@pytest.fixture(scope="module")
def pruned(tiny_setup, tmp_path_factory):
    """A CUT-pruned seg+depth network of the tiny profile saved with its sidecar, and its base."""
    cfg, net, criterion, loader = tiny_setup
    folder = tmp_path_factory.mktemp("pruned")
    result = prune("cut", net, criterion, loader, selected_tasks=["seg", "depth"], sparsity=90,
                   num_batches=2, seed=0)
    path = save_pruned(result.net, folder / "cut_90_seg-depth.pth", meta=result.meta,
                       full_net=net)
    torch.save(net.state_dict(), folder / "base.pth")
    return path, folder / "base.pth"


def variant(pruned_path, tmp_path, name, state=None, sidecar=None):
    """A copy of the pruned file (and sidecar) with ``state(dict)`` / ``sidecar(dict)`` applied."""
    path = tmp_path / f"{name}.pth"
    weights = torch.load(pruned_path, weights_only=True)
    record = json.loads(pruned_path.with_suffix(".json").read_text())
    if state is not None:
        state(weights)
    if sidecar is not None:
        sidecar(record)
    torch.save(weights, path)
    path.with_suffix(".json").write_text(json.dumps(record))
    return path


def first_mask_key(state):
    return next(k for k in state if k.endswith(".weight_mask"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    cfg = load_config("nyuv2_3task", profile="tiny")
    return prepare_synthetic(cfg, root=tmp_path_factory.mktemp("data") / "nyu", progress=False)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    from lib.checkpoints import save_initial_model
    cfg = load_config("nyuv2_3task", profile="tiny")
    return save_initial_model(cfg, tmp_path_factory.mktemp("base") / "base.pth")


def tiny_common(data_root):
    return ["--config", "nyuv2_3task", "--profile", "tiny", "--data-root", str(data_root)]


# ----------------------------------------------------------------------------- item 1
def test_nan_mask_stops_evaluate_and_export_naming_the_tensor(pruned, tmp_path, data_root,
                                                              capsys):
    key = first_mask_key(torch.load(pruned[0], weights_only=True))

    def one_nan(state):
        state[key].view(-1)[0] = float("nan")
    bad = variant(pruned[0], tmp_path, "nan_mask", state=one_nan)
    err = cli_error(capsys, "evaluate", *tiny_common(data_root), "--checkpoint", bad)
    assert key in err and "non-finite" in err and str(bad) in err
    assert not bad.with_name("nan_mask.metrics.json").exists()
    err = cli_error(capsys, "export", "--checkpoint", bad, "--out", tmp_path / "edge")
    assert key in err and not (tmp_path / "edge").exists()


def test_nan_weight_of_a_base_checkpoint_is_refused(pruned, tmp_path):
    state = torch.load(pruned[1], weights_only=True)
    key = next(k for k in state if k.endswith("conv1.weight"))
    state[key][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(NonFiniteError, match=f"'{key}' has 1 non-finite value.*0 NaN, 1 inf"):
        load_base_model(tmp_path / "inf.pth", load_config("nyuv2_3task", profile="tiny"))


def test_non_finite_outputs_stop_evaluation_before_any_file(tiny_setup, tmp_path):
    cfg, net, _, loader = tiny_setup
    broken = SceneNet.from_config(cfg).eval()
    broken.load_state_dict(net.state_dict())
    head = next(m for n, m in broken.named_modules()
                if n.startswith("task3") and isinstance(m, nn.Conv2d))   # depth's head
    with torch.no_grad():
        head.bias.fill_(float("inf"))
    items = [{**{k: v[i] for k, v in b.items()}, "name": f"frame{j}_{i}"}
             for j, b in enumerate(loader) for i in range(b["img"].shape[0])]
    out = tmp_path / "m.json"
    with pytest.raises(NonFiniteError, match=r"outputs on batch \['frame0_0', 'frame0_1'\]: "
                                             r"tensor 'depth' has .* non-finite"):
        evaluate(broken, torch.utils.data.DataLoader(items, batch_size=2), cfg, out_path=out,
                 progress=False)
    assert not out.exists()


def test_undefined_metric_is_null_with_its_reason_never_nan(tmp_path):
    ev = SceneNetEval("nyuv2_3", ["seg", "depth"], [3, 1], (1, 4))
    pred = [torch.tensor([[[[5.0, 0, 0, 0]], [[0, 5.0, 0, 0]], [[0, 0, 0, 0]]]]),
            torch.ones(1, 1, 1, 4)]
    # seg: class 2 predicted where class 0 is true: no true positive; depth: no valid pixel
    batch = {"seg": torch.tensor([[[[1, 0, 255, 255]]]]), "depth": torch.zeros(1, 1, 1, 4)}
    with pytest.warns(RuntimeWarning, match="no valid target pixel"):
        ev.update(pred, batch)
    result = ev.compute()
    assert result["depth"]["abs_err"] is None and result["seg"]["mIoU"] is None
    assert "true positive" in result.undefined["seg"]["mIoU"]
    assert "no valid depth pixel" in result.undefined["depth"]["abs_err"]
    assert result["seg"]["Pixel Acc"] == 0.0
    path = tmp_path / "metrics.json"
    write_metrics(result, path)

    def no_constants(name):
        raise AssertionError(f"bare {name} in {path}")
    data = json.loads(path.read_text(), parse_constant=no_constants)
    assert data["depth"]["abs_err"] is None and "no valid" in data["depth"]["undefined"]["abs_err"]
    back = read_metrics(path)
    assert back == result and back.undefined == result.undefined
    with pytest.warns(UserWarning, match="undefined"):
        assert delta_or_none(result, result, ["seg", "depth"]) is None


def test_json_writer_refuses_nan_and_writes_nothing(tmp_path):
    with pytest.raises(NonFiniteError, match=r"seg/mIoU is not a finite number"):
        atomic_write_json({"seg": {"mIoU": float("nan")}}, tmp_path / "m.json")
    assert files_under(tmp_path) == []


# ----------------------------------------------------------------------------- item 2
def test_masks_must_be_binary_and_shaped_like_their_weight(pruned, tmp_path):
    key = first_mask_key(torch.load(pruned[0], weights_only=True))
    scaled = variant(pruned[0], tmp_path, "quarter", state=lambda s: s[key].mul_(0.25).add_(
        0.5 * (s[key] == 0)))
    with pytest.raises(ValueError, match=f"mask '{key}' is not binary.*0.25"):
        load_pruned(scaled)

    def reshaped(state):
        state[key] = state[key].reshape(-1)
    with pytest.raises(ValueError, match=f"{key}"):
        load_pruned(variant(pruned[0], tmp_path, "flat", state=reshaped))


def test_an_all_ones_mask_cannot_revive_pruned_weights(pruned, tmp_path, capsys):
    state = torch.load(pruned[0], weights_only=True)
    # save_pruned stores pruned weights as exact zeros: the forward pass is unchanged ...
    for key in (k for k in state if k.endswith(".weight_mask")):
        assert bool((state[key.replace("_mask", "_orig")][state[key] == 0] == 0).all())
    layer = first_mask_key(state)[: -len(".weight_mask")]
    ones = variant(pruned[0], tmp_path, "ones",
                   state=lambda s: s[f"{layer}.weight_mask"].fill_(1))
    # ... and a mask edited to ones is refused against the sidecar's record
    with pytest.raises(ValueError, match=f"mask of layer {layer} keeps .* the sidecar records"):
        load_pruned(ones)
    err = cli_error(capsys, "export", "--checkpoint", ones, "--out", tmp_path / "edge")
    assert layer in err and "sidecar" in err and not (tmp_path / "edge").exists()


def test_sidecar_sparsity_and_stored_zeros_are_checked(pruned, tmp_path):
    state = torch.load(pruned[0], weights_only=True)
    layer = first_mask_key(state)[: -len(".weight_mask")]

    def other_sparsity(record):
        record["layer_sparsity"][layer] += 1.0
    with pytest.raises(ValueError, match=f"layer {layer} has .*% zero weights, the sidecar"):
        load_pruned(variant(pruned[0], tmp_path, "pct", sidecar=other_sparsity))

    def revived(state):   # a non-zero weight under a 0 mask, mask untouched
        mask = state[f"{layer}.weight_mask"]
        state[f"{layer}.weight_orig"][mask == 0] = 0.5
    with pytest.raises(ValueError, match=f"layer {layer} stores non-zero weights under its 0"):
        load_pruned(variant(pruned[0], tmp_path, "revived", state=revived))
    # an older sidecar (no mask_kept record, dense weights under the masks) still loads
    older = variant(pruned[0], tmp_path, "older", state=revived,
                    sidecar=lambda r: r.pop("mask_kept"))
    assert load_pruned(older)[0].tasks == ["seg", "depth"]


# ----------------------------------------------------------------------------- item 4
def _last(run):
    return (run / "last.pth").read_bytes()


def test_resume_refuses_changed_settings_and_lists_them(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    common = tiny_common(data_root)
    assert main(["train", *common, "--out", str(run), "--max-iters", "2", "--quiet"]) == 0
    before = _last(run)
    resume = ["train", *common, "--out", run, "--max-iters", "2", "--quiet", "--resume"]
    err = cli_error(capsys, *resume, "--lr", "0.5")
    assert "'lr'" in err and "0.001 -> 0.5" in err and str(run / "last.pth") in err
    err = cli_error(capsys, *resume, "--set", "LAMBDAS=[1, 1, 2]")
    assert "'LAMBDAS'" in err
    moved = tmp_path / "moved"
    shutil.copytree(data_root, moved)
    err = cli_error(capsys, "train", *tiny_common(moved), "--out", run, "--max-iters", "2",
                    "--quiet", "--resume", "--seed", "3")
    assert "'DATA_ROOT'" in err and "'seed'" in err
    err = cli_error(capsys, *resume, "--allow-changed", "INIT_LR")
    assert "only" in err and "VAL_FREQ" in err
    assert _last(run) == before
    # chosen changes are allowed: the moved data, and a longer run
    assert main(["train", *tiny_common(moved), "--out", str(run), "--max-iters", "3",
                 "--quiet", "--resume", "--allow-changed", "DATA_ROOT", "max_iters"]) == 0
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["iteration"] == 3 and ckpt["config"]["DATA_ROOT"] == str(moved)


def test_a_key_an_older_run_did_not_record_counts_as_its_default(data_root, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    common = tiny_common(data_root)
    assert main(["train", *common, "--out", str(run), "--max-iters", "2", "--quiet"]) == 0
    ckpt = torch.load(run / "last.pth", weights_only=True)
    del ckpt["config"]["RESIZE_TO_IMAGE_SHAPE"]   # as written before the key existed
    torch.save(ckpt, run / "last.pth")
    err = cli_error(capsys, "train", *common, "--out", run, "--max-iters", "2", "--quiet",
                    "--resume", "--set", "RESIZE_TO_IMAGE_SHAPE=False")
    assert "'RESIZE_TO_IMAGE_SHAPE'" in err and "True -> False" in err
    assert main(["train", *common, "--out", str(run), "--max-iters", "2", "--quiet",
                 "--resume"]) == 0


# ----------------------------------------------------------------------------- item 5
def test_sidecar_with_swapped_tasks_or_edited_sizes_is_refused(pruned, tmp_path, capsys):
    def swap(record):
        record["architecture"]["tasks"] = record["architecture"]["tasks"][::-1]
    swapped = variant(pruned[0], tmp_path, "swapped", sidecar=swap)
    err = cli_error(capsys, "export", "--checkpoint", swapped, "--out", tmp_path / "edge")
    assert "'depth'" in err and "40 output channel" in err
    # sizes from the record are compared on the meta device: a 100x wider network (hundreds of
    # GB at the reference size) is refused without being allocated
    for width, expected in ((100, "does not match the network"), (1e9, "cannot build"),
                            ("abc", "cannot build"), (0.3, "backbone.conv1.weight_orig")):
        edited = variant(pruned[0], tmp_path, "width",
                         sidecar=lambda r: r["architecture"].__setitem__("width_mult", width))
        err = cli_error(capsys, "export", "--checkpoint", edited, "--out", tmp_path / "edge")
        assert expected in err and str(edited) in err
    assert not (tmp_path / "edge").exists()


# ----------------------------------------------------------------------------- item 6
def test_set_errors_name_the_key_and_the_expected_kind(data_root, tmp_path, capsys):
    common = [*tiny_common(data_root), "--out", tmp_path / "run", "--quiet"]
    err = cli_error(capsys, "train", *common, "--set", "BATCHSIZE=4")
    assert "'BATCHSIZE'" in err and "did you mean BATCH_SIZE" in err
    err = cli_error(capsys, "train", *common, "--set", "BATCH_SIZE=abc")
    assert "BATCH_SIZE='abc'" in err and "type int" in err
    assert not (tmp_path / "run").exists()


def test_nan_loss_is_one_line_and_keeps_the_last_good_checkpoint(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    err = cli_error(capsys, "train", *tiny_common(data_root), "--out", run, "--quiet",
                    "--max-iters", "4", "--lr", "1e30", "--set", "CKPT_FREQ=1")
    assert "is nan" in err or "is inf" in err
    assert f"the last good checkpoint {run / 'last.pth'} (iteration 1) is intact" in err
    kept = read_checkpoint(run / "last.pth")
    assert kept["iteration"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values())
    assert not (run / "base_model.pth").exists()


def test_mixed_size_test_batch_names_the_items_and_sizes(pruned, tmp_path, capsys):
    root = write_dataset(tmp_path / "mixed", "nyuv2_3", 1, 2, 48, 64, seed=0)
    index = json.loads((root / "nyu_v2_3task.json").read_text())
    for rel in index["test"][1]:                     # the second test frame: 40 x 56
        path = root / rel
        if path.suffix == ".npy":
            np.save(path, cv2.resize(np.load(path), (56, 40), interpolation=cv2.INTER_NEAREST))
        else:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(path), cv2.resize(image, (56, 40), interpolation=cv2.INTER_NEAREST))
    err = cli_error(capsys, "evaluate", "--config", "nyuv2_3task", "--profile", "tiny",
                    "--data-root", root, "--set", "RESIZE_TO_IMAGE_SHAPE=False",
                    "--checkpoint", pruned[1], "--batch-size", "2", "--out", tmp_path / "m.json")
    names = [rel.split("/")[-1] for rel in (index["test"][0][0], index["test"][1][0])]
    assert "different sizes" in err and all(n in err for n in names)
    assert "(3, 48, 64)" in err and "(3, 40, 56)" in err and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- items 7, 10, 11
def _reproduce(data_root, base, out, *extra):
    return ["reproduce", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root", data_root,
            "--checkpoint", base, "--methods", "random", "--sparsities", "50",
            "--tasks", "seg", "depth", "--max-iters", "1", "--num-batches", "1",
            "--out", out, *extra]


def test_identical_studies_give_identical_results_and_bad_records_are_named(
        data_root, base_checkpoint, tmp_path, capsys, monkeypatch):
    import lib.reports
    from lib.experiments import StudySpec, run_study
    from lib.experiments import study as study_module

    # The figures are tested elsewhere (tests/test_experiments.py); drawing them is most of a
    # study's time here, and the results files do not depend on them.
    def no_figure(*args, **kwargs):
        return None
    for name in ("plot_metric_vs_sparsity", "plot_delta_vs_sparsity", "plot_predictions"):
        monkeypatch.setattr(lib.reports, name, no_figure)
    monkeypatch.setattr(study_module, "_save_fig", no_figure)

    def spec(out):
        return StudySpec(config="nyuv2_3task", profile="tiny", data_root=str(data_root),
                         out_dir=str(out), methods=("random",), sparsities=(50,),
                         selections=[("seg", "depth")], base_checkpoint=str(base_checkpoint),
                         finetune_iters=1, num_batches=1, dense_control=False)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_study(spec(out), progress=False)
    for name in ("results.csv", "results.md"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    assert "seconds" not in (outs[0] / "results.csv").read_text().splitlines()[0]
    timings = json.loads((outs[0] / "timings.json").read_text())
    assert list(timings) == ["random_50_seg-depth"] and timings["random_50_seg-depth"] > 0
    # item 7: a corrupt cell file is named, with how to recover; nothing is rewritten
    cell = outs[1] / "cells" / "random_50_seg-depth.json"
    cell.write_text('{"row": ')
    table = (outs[1] / "results.csv").stat().st_mtime_ns
    with pytest.raises(ValueError, match=f"delete the cell file {cell} to recompute it"):
        run_study(spec(outs[1]), progress=False)
    assert (outs[1] / "results.csv").stat().st_mtime_ns == table
    (outs[1] / "study.json").write_text("")
    err = cli_error(capsys, *_reproduce(data_root, base_checkpoint, outs[1]))
    assert str(outs[1] / "study.json") in err and "not valid JSON" in err and "restore it" in err


def test_reproduce_validates_everything_before_writing(data_root, base_checkpoint, tmp_path,
                                                       capsys):
    out = tmp_path / "study"
    for extra, expected in ((["--tasks", "seg", "seg"], "more than once"),
                            (["--tasks", "seg", "nope"], "unknown task"),
                            (["--methods", "cut", "frob"], "unknown method"),
                            (["--sparsities", "100"], "sparsity")):
        err = cli_error(capsys, *_reproduce(data_root, base_checkpoint, out), *extra)
        assert expected in err
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = cli_error(capsys, *_reproduce(data_root, base_checkpoint, blocker / "study"))
    assert "is not a folder" in err
    broken = tmp_path / "broken"
    shutil.copytree(data_root, broken)
    index = json.loads((broken / "nyu_v2_3task.json").read_text())
    (broken / index["test"][-1][3]).unlink()        # one depth file of the test list
    err = cli_error(capsys, *_reproduce(broken, base_checkpoint, out))
    assert index["test"][-1][3] in err and "1 of the" in err and not out.exists()


def test_runs_check_their_dataset_and_outputs_before_any_work(pruned, data_root, tmp_path,
                                                              capsys, monkeypatch):
    import lib.metrics
    import lib.pruning.workflow

    def never(*args, **kwargs):
        raise AssertionError("work started before the inputs were checked")
    broken = tmp_path / "broken"
    shutil.copytree(data_root, broken)
    index = json.loads((broken / "nyu_v2_3task.json").read_text())
    missing = index["train"][3][1]
    (broken / missing).unlink()
    run = tmp_path / "run"
    err = cli_error(capsys, "train", *tiny_common(broken), "--out", run, "--quiet",
                    "--max-iters", "2")
    assert missing in err and files_under(run) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(lib.pruning.workflow, "prune", never)
    err = cli_error(capsys, "prune", "--config", "nyuv2_3task", "--profile", "tiny",
                    "--checkpoint", pruned[1], "--tasks", "seg", "--sparsity", "50",
                    "--data-root", data_root, "--out", blocker)
    assert str(blocker) in err
    monkeypatch.setattr(lib.metrics, "evaluate", never)
    err = cli_error(capsys, "evaluate", *tiny_common(data_root), "--checkpoint", pruned[1],
                    "--out", blocker / "m.json")
    assert str(blocker) in err
    err = cli_error(capsys, "export", "--checkpoint", pruned[0], "--out", blocker)
    assert str(blocker) in err


def test_an_empty_synthetic_dataset_is_refused(tmp_path, capsys):
    err = cli_error(capsys, "synthetic", "--out", tmp_path / "ds", "--num-train", "0",
                    "--num-test", "0")
    assert "train=0 test=0" in err and not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- item 8
@register_model
class FlipToy(MultiTaskModel):
    """The smallest masked network with the artifact's every kind of entry (sparse, dense, BN)."""

    def __init__(self, tasks=("a", "b")):
        super().__init__()
        self.tasks = list(tasks)
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.heads = nn.ModuleDict({t: nn.Conv2d(4, 2, 1) for t in self.tasks})

    def shared_modules(self):
        return {"trunk": self.trunk}

    def task_modules(self, task):
        return {f"heads.{task}": self.heads[task]}

    def forward(self, x):
        features = self.trunk(x)
        return [self.heads[t](features) for t in self.tasks]

    def architecture(self):
        return {"model": "FlipToy", "tasks": list(self.tasks)}


def test_no_single_bit_flip_in_the_manifest_escapes_artifact_format_error(tmp_path):
    torch.manual_seed(0)
    net = FlipToy().eval()
    install_masks(net, {"trunk.0": torch.rand(4, 3, 3, 3) > 0.5}, fill=False)
    path = tmp_path / "toy.cutedge"
    save_artifact(net, path)
    expected = load_artifact(path).state_dict()
    data = path.read_bytes()
    prefix = struct.calcsize("<8sIQI")
    magic, version, length, crc = struct.unpack_from("<8sIQI", data)
    assert (magic, version, crc) == (MAGIC, FORMAT_VERSION, zlib.crc32(data[prefix:prefix + length]))

    def load(blob):
        try:
            return load_artifact(path, data=blob)
        except ArtifactFormatError:
            return None
    # Every bit of the header and the manifest, as stored: the checksums catch each one.
    for bit in range(8 * (prefix + length)):
        blob = bytearray(data)
        blob[bit // 8] ^= 1 << (bit % 8)
        assert load(bytes(blob)) is None, f"bit {bit} went unnoticed"
    # The schema and the shape checks behind the checksum: manifests that pass it after a flip
    # (checksum recomputed) load as before or raise ArtifactFormatError, nothing else.
    rng = random.Random(0)
    manifest = data[prefix:prefix + length]
    loaded = 0
    for bit in rng.sample(range(8 * length), 1000):
        text = bytearray(manifest)
        text[bit // 8] ^= 1 << (bit % 8)
        header = struct.pack("<8sIQI", MAGIC, FORMAT_VERSION, length, zlib.crc32(bytes(text)))
        net_b = load(header + bytes(text) + data[prefix + length:])
        if net_b is not None:
            loaded += 1
            state = net_b.state_dict()
            assert state.keys() == expected.keys()
            assert all(torch.equal(state[k], expected[k]) for k in state), f"bit {bit}"
    assert loaded < 200   # most flips break the manifest; those that load change nothing


# ----------------------------------------------------------------------------- item 9
def test_stale_temporaries_of_the_run_are_removed_on_resume_and_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pth").write_bytes(b"checkpoint")
    ours = [run / ".last.pth.k3j_x8ab.tmp", run / ".history.json.0a1b2c3d.tmp"]
    others = [run / ".notes.k3j_x8ab.tmp", run / "last.pth.tmp", run / ".last.pth.tmp",
              run / "notes.txt"]
    for path in ours + others:
        path.write_bytes(b"partial")
    prepare_run_dir(run, resume=True, overwrite=False)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)
    ours[0].write_bytes(b"partial")
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not ours[0].exists() and not (run / "last.pth").exists()
    assert all(p.exists() for p in others)

