"""The min-max framework's data: NYUv2 in MTAN's layout and CIFAR-100 as 20 domains, read from
the synthetic writers' files; the restricted CIFAR unpickler."""
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lib.data.cifar_mtl import (MEAN, STD, CIFAR100Split, MultiDomainLoader, build_domains,
                                load_cifar_pickle)
from lib.data.cifar_classes import CIFAR100_FINE_NAMES, FINE_TO_COARSE
from lib.data.nyuv2_mtan import NYUv2MTAN
from lib.data.synthetic.minmax import _Py2Pickle, write_cifar100, write_nyuv2_mtan

H, W = 32, 48


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    return write_nyuv2_mtan(tmp_path_factory.mktemp("mtan") / "nyu", 3, 2, H, W, seed=1)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar") / "c", 2, 1, seed=3)


def copy_root(root, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return target


def assert_one_line_naming(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, message


# ---------------------------------------------------------------------- NYUv2 (MTAN layout)
def files(root, folder, i):
    return [np.load(root / folder / f / f"{i}.npy") for f in ("image", "label", "depth", "normal")]


def test_nyu_test_item_is_the_files(nyu_root):
    ds = NYUv2MTAN(nyu_root, "test")
    assert len(ds) == 2 and not ds.augment
    image, label, depth, normal = files(nyu_root, "val", 1)
    item = ds[1]
    assert item["name"] == "1.npy"
    assert item["img"].dtype == torch.float32 and item["img"].shape == (3, H, W)
    torch.testing.assert_close(item["img"], torch.from_numpy(2 * image - 1).permute(2, 0, 1))
    assert item["seg"].dtype == torch.int64 and item["seg"].shape == (1, H, W)
    assert torch.equal(item["seg"][0], torch.from_numpy(label).long())
    assert torch.equal(item["depth"], torch.from_numpy(depth).permute(2, 0, 1))
    assert torch.equal(item["normal"], torch.from_numpy(normal).permute(2, 0, 1))
    assert set(item["seg"].unique().tolist()) <= set(range(-1, 13))


def test_nyu_synthetic_files_have_the_documented_format(nyu_root):
    image, label, depth, normal = files(nyu_root, "train", 0)
    assert image.shape == (H, W, 3) and 0 <= image.min() and image.max() <= 1
    assert label.shape == (H, W) and set(np.unique(label)) <= set(range(-1, 13))
    assert depth.shape == (H, W, 1) and depth.min() >= 0
    norms = np.linalg.norm(normal, axis=2)
    valid = depth[..., 0] > 0
    assert np.allclose(norms[valid], 1, atol=2e-3) and (norms[~valid] == 0).all()


def repeated(array, factor):
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def test_nyu_train_scale_crop_flip_follow_the_procedure(nyu_root):
    """Scale 2 with nearest targets: the crop is a window of the 2x-repeated targets, the same
    window for every target, depth divided by 2, normals' x negated when flipped."""
    ds = NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, scales=[2.0], seed=5)
    image, label, depth, normal = files(nyu_root, "train", 2)
    big_label, big_depth, big_normal = (repeated(a, 2) for a in (label, depth[..., 0], normal))
    flips = set()
    for epoch in range(6):
        item = ds[(epoch, 2)]
        assert item["img"].shape == (3, H, W) and item["img"].abs().max() <= 1 + 1e-5
        found = None
        for flip in (False, True):
            seg = item["seg"][0].numpy()
            dep = item["depth"][0].numpy()
            nor = item["normal"].numpy().transpose(1, 2, 0)
            if flip:
                seg, dep, nor = seg[:, ::-1], dep[:, ::-1], nor[:, ::-1] * [-1, 1, 1]
            for top in range(H + 1):
                for left in range(W + 1):
                    window = (slice(top, top + H), slice(left, left + W))
                    if (np.array_equal(big_label[window], seg)
                            and np.allclose(big_depth[window] / 2, dep)
                            and np.allclose(big_normal[window], nor)):
                        found = flip
        assert found is not None, f"epoch {epoch}: no window of the 2x targets matches"
        flips.add(found)
    assert flips == {False, True}


def test_nyu_augmentation_is_seeded(nyu_root):
    a = NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, seed=7)
    b = NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, seed=7)
    c = NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, seed=8)
    for key in ("img", "seg", "depth", "normal"):
        assert torch.equal(a[(3, 1)][key], b[(3, 1)][key])
    assert any(not torch.equal(a[(e, 1)]["img"], c[(e, 1)]["img"]) for e in range(4))


def test_nyu_pads_bottom_right_with_ignore_values(nyu_root):
    ds = NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, scales=[0.75])
    item = ds[0]                  # resized to 24 x 36, padded at the bottom and right
    right = slice(36, None) if (item["seg"][:, :, 36:] == -1).all() else slice(0, 12)  # flip
    assert (item["seg"][:, 24:] == -1).all() and (item["seg"][:, :, right] == -1).all()
    assert (item["depth"][:, 24:] == 0).all() and (item["depth"][:, :, right] == 0).all()
    assert (item["normal"][:, 24:] == 0).all() and (item["normal"][:, :, right] == 0).all()
    assert (item["seg"][:, :24, 12:36] != -1).any()
    torch.testing.assert_close(item["img"][:, 24:], item["img"][:, 15:23].flip(1))   # reflected
    with pytest.raises(ValueError, match="scale 0.25 .* too small to reflect-pad"):
        NYUv2MTAN(nyu_root, "train", crop_h=H, crop_w=W, scales=[0.25])[0]


@pytest.mark.parametrize("case,expected", [
    ("gap", "no 1.npy"),
    ("bad_name", "expected files named <i>.npy"),
    ("missing_label", "label file"),
    ("label_shape", "has shape (4, 4)"),
    ("label_value", "label(s) 13 outside 0..12"),
    ("image_range", "RGB scaled to [0, 1]"),
    ("depth_nan", "1 NaN"),
    ("depth_negative", "metres, 0 = invalid"),
    ("normal_range", "unit normal components"),
    ("image_object", "allow_pickle"),
])
def test_nyu_bad_inputs_raise_one_line_errors_naming_the_file(nyu_root, tmp_path, case, expected):
    root = copy_root(nyu_root, tmp_path)
    train = root / "train"
    folder = {"gap": "image", "bad_name": "image", "missing_label": "label",
              "label_shape": "label", "label_value": "label", "image_range": "image",
              "image_object": "image", "depth_nan": "depth", "depth_negative": "depth",
              "normal_range": "normal"}[case]
    bad = train / folder / {"gap": "1.npy", "bad_name": "x.npy"}.get(case, "0.npy")
    if case == "gap":
        bad.unlink()
    elif case == "bad_name":
        np.save(bad, np.zeros(1))
    elif case == "missing_label":
        bad.unlink()
    elif case == "image_object":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        array = np.load(bad)
        if case == "label_shape":
            array = np.zeros((4, 4), np.float32)
        elif case == "label_value":
            array[0, 0] = 13
        elif case == "image_range":
            array = array * 255
        elif case == "depth_nan":
            array[0, 0, 0] = np.nan
        elif case == "depth_negative":
            array[0, 0, 0] = -1
        elif case == "normal_range":
            array[0, 0, 0] = 1.5
        np.save(bad, array)
    with pytest.raises((ValueError, FileNotFoundError)) as excinfo:
        NYUv2MTAN(root, "train", crop_h=H, crop_w=W)[0]
    assert_one_line_naming(excinfo, expected, bad.parent if case in ("gap", "bad_name") else bad)


def test_nyu_load_shape_resizes_targets_nearest(nyu_root):
    ds = NYUv2MTAN(nyu_root, "test", load_shape=(40, 60))
    item = ds[0]
    assert item["img"].shape == (3, 40, 60) and item["seg"].shape == (1, 40, 60)
    image, label, depth, normal = files(nyu_root, "val", 0)
    assert set(item["seg"].unique().tolist()) <= set(np.unique(label).astype(int).tolist())
    assert set(item["depth"].unique().tolist()) <= set(np.unique(depth).tolist())
    assert NYUv2MTAN(nyu_root, "test", load_shape=(H, W))[0]["img"].equal(
        NYUv2MTAN(nyu_root, "test")[0]["img"])


def test_nyu_missing_root_and_split(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        NYUv2MTAN(tmp_path / "nope", "test")
    assert_one_line_naming(excinfo, tmp_path / "nope")
    (tmp_path / "r" / "train" / "image").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as excinfo:
        NYUv2MTAN(tmp_path / "r", "test")
    assert_one_line_naming(excinfo, tmp_path / "r" / "val" / "image")


def test_nyu_build_loader_from_a_config(nyu_root):
    from types import SimpleNamespace

    from lib.data import build_loader
    cfg = SimpleNamespace(DATASET="nyuv2_mtan", DATA_ROOT=str(nyu_root), CROP_H=H, CROP_W=W,
                          BATCH_SIZE=2, TASKS=["seg", "depth", "normal"],
                          TASKS_NUM_CLASS=[13, 1, 3], IMAGE_SHAPE=(H, W),
                          RESIZE_TO_IMAGE_SHAPE=False)
    batch = next(iter(build_loader(cfg, "train", seed=0)))
    assert batch["img"].shape == (2, 3, H, W) and batch["seg"].shape == (2, 1, H, W)
    assert batch["normal"].shape == (2, 3, H, W) and batch["depth"].shape == (2, 1, H, W)


# ---------------------------------------------------------------------- CIFAR-100
def test_cifar_files_are_the_standard_pickles(cifar_root):
    folder = cifar_root / "cifar-100-python"
    with open(folder / "train", "rb") as f:       # what torchvision does
        plain = pickle.load(f, encoding="latin1")
    restricted = load_cifar_pickle(folder / "train")
    assert list(plain) == ["filenames", "batch_label", "fine_labels", "coarse_labels", "data"]
    assert plain["data"].dtype == np.uint8 and plain["data"].shape == (200, 3072)
    assert np.array_equal(plain["data"], restricted["data"])
    assert plain["fine_labels"] == restricted["fine_labels"]
    assert sorted(plain["fine_labels"]) == sorted(list(range(100)) * 2)
    assert list(FINE_TO_COARSE[plain["fine_labels"]]) == plain["coarse_labels"]
    meta = load_cifar_pickle(folder / "meta")
    assert meta["fine_label_names"] == list(CIFAR100_FINE_NAMES)
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "train").read_bytes()


def test_cifar_domains_remap_fine_labels_in_order(cifar_root):
    source = CIFAR100Split(cifar_root, "train")
    domains = build_domains(cifar_root, "train", augment=False)
    assert [d.task for d in domains] == [f"class_{i}" for i in range(20)]
    for d in domains:
        assert len(d) == 10
        fine = np.flatnonzero(FINE_TO_COARSE == d.domain)          # sorted fine ids
        assert d.classes == [CIFAR100_FINE_NAMES[f] for f in fine]
        for i in range(len(d)):
            item = d[i]
            j = d.indices[i]
            assert fine[int(item["label"])] == source.fine[j]
    d = domains[7]
    item = d[3]
    raw = source.images[d.indices[3]].transpose(2, 0, 1) / 255.0
    expected = (raw - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    torch.testing.assert_close(item["img"], torch.from_numpy(expected).float())
    assert item["name"] == source.filenames[d.indices[3]]


def test_cifar_train_augmentation_is_a_padded_crop_and_flip(cifar_root):
    (d,) = build_domains(cifar_root, "train", domains=[4], seed=2)
    assert d.augment
    image = d.source.images[d.indices[5]]
    padded = np.zeros((40, 40, 3), np.uint8)
    padded[4:36, 4:36] = image
    seen = set()
    for epoch in range(8):
        img = d[(epoch, 5)]["img"].numpy()
        pixels = np.round((img * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None])
                          * 255).transpose(1, 2, 0)
        matches = [(t, l, f) for t in range(9) for l in range(9) for f in (False, True)
                   if np.array_equal(padded[t:t + 32, l:l + 32][:, ::-1] if f
                                     else padded[t:t + 32, l:l + 32], pixels)]
        assert matches, f"epoch {epoch}: not a padded crop of the image"
        seen.add(matches[0][2])
        assert torch.equal(d[(epoch, 5)]["img"], d[(epoch, 5)]["img"])    # seeded
    assert seen == {False, True}


def test_multidomain_loader_steps_every_domain_and_is_seeded(cifar_root):
    domains = build_domains(cifar_root, "train", domains=[0, 5, 19], seed=1)
    loader = MultiDomainLoader(domains, batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3                          # ceil(10 / 4)
    steps = list(loader)
    assert len(steps) == 3 and list(steps[0]) == ["class_0", "class_5", "class_19"]
    assert [s["class_5"]["img"].shape[0] for s in steps] == [4, 4, 2]
    again = MultiDomainLoader(build_domains(cifar_root, "train", domains=[0, 5, 19], seed=1),
                              batch_size=4, shuffle=True, seed=1)
    first = next(iter(again))
    assert all(torch.equal(first[t]["label"], steps[0][t]["label"]) for t in first)
    second_pass = next(iter(loader))                 # the order changes per pass
    assert any(second_pass[t]["name"] != steps[0][t]["name"] for t in first)


def test_restricted_unpickler_refuses_a_payload_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (subprocess.call, ([sys.executable, "-c",
                                       f"open({str(marker)!r}, 'w').close()"],))

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(ValueError) as excinfo:
        load_cifar_pickle(folder / "train")
    assert_one_line_naming(excinfo, folder / "train", "refusing global")
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("numpy", "load"), ("os", "system"),
                         ("numpy", "__builtins__")):
        (folder / "x").write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N\x85R.")
        with pytest.raises(ValueError, match=f"refusing global {module}.{name}"):
            load_cifar_pickle(folder / "x")


def test_restricted_unpickler_reads_python3_pickles_and_refuses_other_codecs(tmp_path):
    obj = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "fine_labels": [1, 2]}
    path = tmp_path / "p3"
    path.write_bytes(pickle.dumps(obj, protocol=2))          # bytes via _codecs.encode
    loaded = load_cifar_pickle(path)
    assert np.array_equal(loaded["data"], obj["data"]) and loaded["fine_labels"] == [1, 2]
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64"
                     b"\x86R.")
    with pytest.raises(ValueError, match="refusing _codecs.encode"):
        load_cifar_pickle(path)


@pytest.mark.parametrize("case,expected", [
    ("no_meta", "meta not found"),
    ("truncated", "is not a CIFAR pickle"),
    ("data_dtype", "'data' is a float32 array"),
    ("coarse", "CIFAR-100 puts it in coarse class"),
    ("labels", "'fine_labels' must be a list of 200 ints"),
    ("missing_key", "no 'coarse_labels' entry"),
    ("not_dict", "holds list"),
])
def test_cifar_bad_files_raise_one_line_errors_naming_the_file(cifar_root, tmp_path, case,
                                                               expected):
    root = copy_root(cifar_root, tmp_path)
    folder = root / "cifar-100-python"
    path = folder / ("meta" if case == "no_meta" else "train")
    obj = load_cifar_pickle(folder / "train")
    if case == "no_meta":
        path.unlink()
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        if case == "data_dtype":
            obj["data"] = obj["data"].astype(np.float32)
        elif case == "coarse":
            obj["coarse_labels"][0] = (obj["coarse_labels"][0] + 1) % 20
        elif case == "labels":
            obj["fine_labels"][3] = 100
        elif case == "missing_key":
            del obj["coarse_labels"]
        path.write_bytes(_Py2Pickle().dumps([1, 2] if case == "not_dict" else obj))
    with pytest.raises((ValueError, FileNotFoundError)) as excinfo:
        CIFAR100Split(root, "train")
    assert_one_line_naming(excinfo, expected, path)


def test_prepare_minmax_synthetic_writes_once_and_refuses_other_folders(tmp_path, monkeypatch):
    from lib.config import load_config
    from lib.data.synthetic.minmax import prepare_minmax_synthetic
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "synthetic"))
    cfg = load_config("cifar100_mtl", profile="tiny")
    root = prepare_minmax_synthetic(cfg, progress=False)
    assert prepare_minmax_synthetic(cfg, progress=False) == root
    assert len(build_domains(root, "test")[0]) == 5              # 1 image x 5 fine classes
    nyu = load_config("nyuv2_deeplab", profile="tiny")
    nyu_root = prepare_minmax_synthetic(nyu, num_train=2, num_test=1, progress=False)
    assert len(NYUv2MTAN(nyu_root, "test")) == 1
    assert NYUv2MTAN(nyu_root, "test")[0]["img"].shape == (3, *nyu.IMAGE_SHAPE)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="holds other files"):
        prepare_minmax_synthetic(cfg, root=tmp_path / "other", progress=False)
