"""The synthetic scene generator: determinism, geometric consistency of labels, layouts."""
import argparse
import filecmp
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lib.config import load_config
from lib.data import NYUv2
from lib.data.synthetic import (MARKER, is_complete, prepare_synthetic, write_dataset)
from lib.data.synthetic import layouts as layouts_module
from lib.data.synthetic.classes import CITYSCAPES19, NYU40, TASKONOMY17
from lib.data.synthetic.layouts import sample_frame

SIZES = {"nyuv2_3": (48, 64), "cityscapes": (48, 96), "taskonomy": (48, 48)}
NUM_CLASSES = {"nyuv2_3": 40, "cityscapes": 19, "taskonomy": 17}


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def test_class_sets_match_layout_class_counts():
    assert (len(NYU40), len(CITYSCAPES19), len(TASKONOMY17)) == (40, 19, 17)


@pytest.mark.parametrize("layout", ["nyuv2_3", "cityscapes", "taskonomy"])
def test_same_seed_same_bytes_other_seed_differs(layout, tmp_path):
    h, w = SIZES[layout]
    a = write_dataset(tmp_path / "a", layout, 2, 1, h, w, seed=11)
    b = write_dataset(tmp_path / "b", layout, 2, 1, h, w, seed=11)
    c = write_dataset(tmp_path / "c", layout, 2, 1, h, w, seed=12)
    files = all_files(a)
    assert files == all_files(b) and MARKER in files
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    _, mismatch_c, _ = filecmp.cmpfiles(a, c, files, shallow=False)
    assert mismatch_c


def back_projected_normals(depth, focal):
    """Camera-frame normals (x right, y up, z to the viewer) from a depth map by finite
    differences of the back-projected points."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w] + 0.5
    pts = np.stack([(u - w / 2) / focal * depth, -(v - h / 2) / focal * depth, -depth], -1)
    du = pts[1:-1, 2:] - pts[1:-1, :-2]
    dv = pts[2:, 1:-1] - pts[:-2, 1:-1]
    n = np.cross(dv, du)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


@pytest.mark.parametrize("layout", ["nyuv2_3", "cityscapes", "taskonomy"])
def test_labels_are_geometrically_consistent(layout):
    h, w = 64, 80
    for index in range(3):
        f = sample_frame(layout, 0, "train", index, h, w)
        hit = np.isfinite(f.depth)
        assert (f.depth[f.depth_valid] > 0).all()
        assert not (f.depth_valid & ~hit).any()
        norms = np.linalg.norm(f.normal, axis=-1)
        assert np.allclose(norms[hit], 1, atol=1e-4)
        v, u = np.mgrid[0:h, 0:w] + 0.5
        rays = np.stack([(u - w / 2) / f.focal, -(v - h / 2) / f.focal, -np.ones((h, w))], -1)
        assert ((f.normal * rays).sum(-1)[hit] < 1e-6).all()      # surfaces face the camera
        # Normals agree with the depth map where the 3x3 neighbourhood is one primitive.
        s = f.surface
        same = np.ones((h - 2, w - 2), bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                same &= s[dy:dy + h - 2, dx:dx + w - 2] == s[1:-1, 1:-1]
        same &= hit[1:-1, 1:-1]
        est = back_projected_normals(np.where(hit, f.depth, 1.0).astype(np.float64), f.focal)
        cos = (est * f.normal[1:-1, 1:-1]).sum(-1)[same]
        assert same.sum() > 100 and np.median(cos) > 0.995
        # Edges lie where neighbouring primitives' depths jump; none inside smooth regions.
        assert f.edge.min() >= 0 and f.edge.max() <= 1
        z = np.where(hit, f.depth, 1e4)
        # No edge response where the 5x5 neighbourhood is one primitive.
        same5 = np.ones((h - 4, w - 4), bool)
        for dy in range(5):
            for dx in range(5):
                same5 &= s[dy:dy + h - 4, dx:dx + w - 4] == s[2:-2, 2:-2]
        assert (f.edge[2:-2, 2:-2][same5] == 0).all()
        jump = (np.abs(z[:, 1:] - z[:, :-1]) > 0.2 * np.minimum(z[:, 1:], z[:, :-1])) & \
               (s[:, 1:] != s[:, :-1])
        near = np.where(z[:, 1:] < z[:, :-1], f.edge[:, 1:], f.edge[:, :-1])
        assert (near[jump] == 1).all()
        assert 0 <= f.keypoint.min() and f.keypoint.max() <= 1
        labels = f.label[f.label >= 0]
        assert labels.max() < NUM_CLASSES[layout]


def test_scenes_vary_and_use_few_classes_each():
    seen = set()
    for index in range(6):
        f = sample_frame("nyuv2_3", 1, "train", index, 32, 40)
        classes = set(np.unique(f.label[f.label >= 0]).tolist())
        assert 2 <= len(classes) <= 14
        seen |= classes
    assert len(seen) >= 8


def test_nyu_rooms_show_only_the_scene_classes():
    from lib.data.synthetic.classes import NYU13_SCENE_CLASSES, class_index
    from lib.data.synthetic.scenes import IndoorStyle

    allowed = {class_index(NYU40, n) for n in NYU13_SCENE_CLASSES}
    seen = set()
    for index in range(8):
        f = sample_frame("nyuv2_3", 3, "train", index, 32, 40)
        seen |= set(np.unique(f.label[f.label >= 0]).tolist())
    assert seen <= allowed and len(seen) >= 8
    assert IndoorStyle().palette(NYU40) == list(range(40))
    with pytest.raises(ValueError, match="unknown class"):
        IndoorStyle(classes=("wall", "unicorn")).palette(NYU40)


def test_defects_exercise_invalid_markers(tmp_path):
    root = write_dataset(tmp_path / "ds", "nyuv2_3", 8, 0, 32, 40, seed=0)
    ds = NYUv2(root, "train", augment=False)
    items = [ds[i] for i in range(len(ds))]
    assert any((it["depth"] == 0).any() for it in items)
    assert any((it["seg"] == 255).any() for it in items)
    for it in items:
        invalid = it["depth"][0] == 0
        assert (it["normal"][:, invalid] == 255).all()
        assert (it["normal"][:, ~invalid].max(0).values < 255).all()


def test_taskonomy_and_cityscapes_file_formats(tmp_path):
    t = write_dataset(tmp_path / "t", "taskonomy", 2, 1, 32, 32, seed=0)
    index = json.loads((t / "taskonomy.json").read_text())
    building, domain, file = index["train"][0][3].split("/")
    assert domain == "depth_zbuffer"
    import cv2
    depth = cv2.imread(str(t / domain / "taskonomy" / building / file), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (32, 32)
    prior = np.load(t / "semseg_prior_factor.npy")
    assert prior.shape == (17,) and prior.dtype == np.float32 and (prior > 0).all()
    c = write_dataset(tmp_path / "c", "cityscapes", 1, 1, 32, 64, seed=0)
    entry = json.loads((c / "cityscape.json").read_text())["test"][0]
    image, depth, l2, l7, l19 = (np.load(c / p) for p in entry)
    assert image.shape == (32, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert depth.shape == (32, 64, 1) and l19.shape == (32, 64)
    assert set(np.unique(l2)) <= {-1, 0, 1} and l7.max() <= 6 and l19.max() <= 18
    assert ((l19 == -1) == (l7 == -1)).all()


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = layouts_module.write_nyuv2

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setitem(layouts_module.WRITERS, "nyuv2_3", failing)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", "nyuv2_3", 3, 1, 32, 40)
    assert list(tmp_path.iterdir()) == []


def test_write_dataset_refuses_bad_targets(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="full"):
        write_dataset(tmp_path / "full", "nyuv2_3", 1, 1, 32, 40)
    with pytest.raises(ValueError, match="layout 'nyu'"):
        write_dataset(tmp_path / "x", "nyu", 1, 1, 32, 40)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, "nyuv2_3", 1, 1, 32, 40)
    assert is_complete(empty, "nyuv2_3", 1, 1, 32, 40, 0)


def test_prepare_synthetic_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "cache"))
    cfg = load_config("nyuv2_3task", profile="tiny")
    root = prepare_synthetic(cfg, num_train=2, num_test=1, seed=3, progress=False)
    assert Path(root).parent == tmp_path / "cache"
    assert "nyuv2_3" in Path(root).name and "48x64" in Path(root).name
    marker_time = os.stat(Path(root) / MARKER).st_mtime_ns
    assert prepare_synthetic(cfg, num_train=2, num_test=1, seed=3, progress=False) == root
    assert os.stat(Path(root) / MARKER).st_mtime_ns == marker_time
    cfg.DATA_ROOT = root
    assert len(NYUv2(root, "test")) == 1
    # A folder without the completion marker is never taken for a dataset nor overwritten.
    other = tmp_path / "other"
    other.mkdir()
    (other / "nyu_v2_3task.json").write_text('{"train": [], "test": []}')
    with pytest.raises(FileExistsError, match="other"):
        prepare_synthetic(cfg, root=other, num_train=2, num_test=1)
    explicit = prepare_synthetic(cfg, root=tmp_path / "mine", num_train=2, num_test=1, progress=False)
    assert explicit == str(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="other parameters"):
        prepare_synthetic(cfg, root=tmp_path / "mine", num_train=3, num_test=1, progress=False)


def test_cli_writes_dataset(tmp_path):
    from lib.data import cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--layout", "cityscapes", "--out", str(tmp_path / "ds"),
                              "--num-train", "1", "--num-test", "1", "--height", "32",
                              "--width", "64", "--seed", "2", "--num-workers", "1"])
    assert cli.run(args) == 0
    assert is_complete(tmp_path / "ds", "cityscapes", 1, 1, 32, 64, 2)


def test_worker_processes_write_identical_files(tmp_path):
    a = write_dataset(tmp_path / "a", "taskonomy", 3, 1, 32, 32, seed=4, workers=1)
    b = write_dataset(tmp_path / "b", "taskonomy", 3, 1, 32, 32, seed=4, workers=2)
    files = all_files(a)
    assert files == all_files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors


def test_cli_writes_the_min_max_layouts_a_config_reads(tmp_path):
    from lib.data import build_loader, cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--config", "nyuv2_mtan", "--profile", "tiny", "--out",
                                      str(tmp_path / "nyu"), "--num-train", "2",
                                      "--num-test", "1"])) == 0
    cfg = load_config("nyuv2_mtan", profile="tiny", DATA_ROOT=str(tmp_path / "nyu"))
    batch = next(iter(build_loader(cfg, "test")))
    assert batch["img"].shape == (1, 3, *cfg.IMAGE_SHAPE) and batch["normal"].shape[1] == 3
    assert cli.run(parser.parse_args(["--layout", "cifar100_mtl", "--out",
                                      str(tmp_path / "cifar"), "--num-train", "1",
                                      "--num-test", "1"])) == 0
    cfg = load_config("cifar100_mtl", DATA_ROOT=str(tmp_path / "cifar"))
    step = next(iter(build_loader(cfg, "test")))
    assert len(step) == 20 and step["class_3"]["img"].shape == (5, 3, 32, 32)   # 5 fine classes
    with pytest.raises(ValueError, match="CIFAR-100 images are 32x32"):
        cli.run(parser.parse_args(["--layout", "cifar100_mtl", "--out", str(tmp_path / "c2"),
                                   "--height", "64"]))
    assert not (tmp_path / "c2").exists()


def test_prepare_synthetic_writes_the_config_s_min_max_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path))
    root = prepare_synthetic(load_config("cifar100_mtl", profile="tiny"), progress=False)
    assert (Path(root) / "cifar-100-python" / "meta").is_file()
    assert prepare_synthetic(load_config("cifar100_mtl", profile="tiny"), progress=False) == root
