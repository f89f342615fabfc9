"""The layout readers and loaders, on tiny synthetic datasets written in each real layout.

Expected items are recomputed here from the files with cv2/PIL/numpy, following the reference
loaders' procedure independently of lib.data's code.
"""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lib.config import load_config
from lib.data import CityScapes, NYUv2, Taskonomy, build_dataset, build_loader
from lib.data.synthetic import write_dataset

MEAN = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
H, W = 48, 64


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    return str(write_dataset(tmp_path_factory.mktemp("nyu") / "ds", "nyuv2_3", 4, 2, H, W, seed=3))


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    return str(write_dataset(tmp_path_factory.mktemp("city") / "ds", "cityscapes", 2, 2, H, 96, seed=4))


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    return str(write_dataset(tmp_path_factory.mktemp("task") / "ds", "taskonomy", 2, 2, H, H, seed=5))


def copy_root(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def assert_one_line_naming(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message


# ---------------------------------------------------------------- NYU-v2 -------------------
def test_nyu_test_item_equals_reference_procedure(nyu_root):
    ds = NYUv2(nyu_root, "test")
    index = json.load(open(os.path.join(nyu_root, "nyu_v2_3task.json")))
    assert len(ds) == len(index["test"]) == 2
    for i, (img_p, seg_p, normal_p, depth_p) in enumerate(index["test"]):
        item = ds[i]
        img = cv2.imread(os.path.join(nyu_root, img_p)).astype("float") - MEAN
        seg = cv2.imread(os.path.join(nyu_root, seg_p), cv2.IMREAD_GRAYSCALE)[None]
        normal = cv2.imread(os.path.join(nyu_root, normal_p)).transpose(2, 0, 1)
        depth = np.load(os.path.join(nyu_root, depth_p))[None]
        assert set(item) == {"img", "seg", "normal", "depth", "name"}
        assert item["img"].dtype == torch.float32 and item["img"].shape == (3, H, W)
        assert torch.equal(item["img"], torch.from_numpy(img.transpose(2, 0, 1)).float())
        assert item["seg"].dtype == torch.uint8 and torch.equal(item["seg"], torch.from_numpy(seg))
        assert item["normal"].dtype == torch.uint8 and torch.equal(item["normal"], torch.from_numpy(normal))
        assert item["depth"].dtype == torch.float32 and torch.equal(item["depth"], torch.from_numpy(depth))
        assert item["name"] == img_p.split("/")[-1]
        s = item["seg"]
        assert ((s < 40) | (s == 255)).all()


def test_nyu_img_is_bgr_minus_mean(nyu_root):
    ds = NYUv2(nyu_root, "test")
    rel = ds.entries[0][0]
    rgb = np.array(Image.open(os.path.join(nyu_root, rel)).convert("RGB")).astype(np.float64)
    expected = rgb[:, :, ::-1] - MEAN
    assert np.allclose(ds[0]["img"].numpy().transpose(1, 2, 0), expected, atol=1e-4)


def expected_nyu_train(root, entry, rng, crop_h, crop_w):
    """The reference's scale/mirror/pad/crop procedure written out with numpy and cv2."""
    img = cv2.imread(os.path.join(root, entry[0]))
    seg = cv2.imread(os.path.join(root, entry[1]), cv2.IMREAD_GRAYSCALE)
    normal = cv2.imread(os.path.join(root, entry[2]))
    depth = np.load(os.path.join(root, entry[3]))
    scale = rng.random() + 0.5
    h, w = int(img.shape[0] * scale), int(img.shape[1] * scale)
    img = cv2.resize(img, (w, h)).astype(np.float64)
    seg = cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST)[:, :, None]
    normal = cv2.resize(normal, (w, h), interpolation=cv2.INTER_NEAREST)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)[:, :, None]
    if rng.random() > 0.5:
        img, seg, normal, depth = img[:, ::-1], seg[:, ::-1], normal[:, ::-1], depth[:, ::-1]
    ph, pw = max(h, crop_h), max(w, crop_w)
    oh, ow = (ph - h) // 2, (pw - w) // 2
    sh, sw = rng.integers(0, ph - crop_h + 1), rng.integers(0, pw - crop_w + 1)
    out = []
    for a, pad in ((img, 0), (seg, 255), (normal, 255), (depth, 0)):
        p = np.full((ph, pw, a.shape[2]), pad, dtype=a.dtype)
        p[oh:oh + h, ow:ow + w] = a
        out.append(p[sh:sh + crop_h, sw:sw + crop_w])
    img, seg, normal, depth = out
    return img - MEAN, seg, normal, depth


@pytest.mark.parametrize("crop", [(40, 48), (80, 100)])
def test_nyu_train_augmentation_follows_reference_procedure(nyu_root, crop):
    ds = NYUv2(nyu_root, "train", crop_h=crop[0], crop_w=crop[1], seed=7, reference_flip=True)
    for i in range(len(ds)):
        item = ds[i]
        img, seg, normal, depth = expected_nyu_train(nyu_root, ds.entries[i], ds.item_rng(i, 0), *crop)
        assert item["img"].shape == (3, *crop) and item["img"].dtype == torch.float32
        assert torch.equal(item["img"], torch.from_numpy(img.transpose(2, 0, 1).copy()).float())
        assert torch.equal(item["seg"], torch.from_numpy(seg.transpose(2, 0, 1).copy()))
        assert torch.equal(item["normal"], torch.from_numpy(normal.transpose(2, 0, 1).copy()))
        assert item["depth"].dtype == torch.float32
        assert torch.equal(item["depth"], torch.from_numpy(depth.transpose(2, 0, 1).astype(np.float32)))


def test_nyu_train_pads_with_ignore_values(nyu_root):
    # Crops larger than any scaled image (<= 1.5 x 48x64) always contain padding.
    ds = NYUv2(nyu_root, "train", crop_h=80, crop_w=100, seed=0)
    item = ds[0]
    pad = (item["img"] == -torch.from_numpy(MEAN)[:, None, None]).all(0)
    assert pad.float().mean() > 0.1
    assert (item["seg"][0][pad] == 255).all()
    assert (item["normal"][:, pad] == 255).all()
    assert (item["depth"][0][pad] == 0).all()


def test_nyu_augmentation_is_seeded(nyu_root):
    a = NYUv2(nyu_root, "train", crop_h=40, crop_w=48, seed=1)
    b = NYUv2(nyu_root, "train", crop_h=40, crop_w=48, seed=1)
    c = NYUv2(nyu_root, "train", crop_h=40, crop_w=48, seed=2)
    for i in range(len(a)):
        assert torch.equal(a[i]["img"], b[i]["img"]) and torch.equal(a[i]["seg"], b[i]["seg"])
    assert any(not torch.equal(a[i]["img"], c[i]["img"]) for i in range(len(a)))
    # Epochs: explicit (epoch, index) keys and set_epoch agree; epochs differ from each other.
    assert any(not torch.equal(a[(0, i)]["img"], a[(1, i)]["img"]) for i in range(len(a)))
    a.set_epoch(1)
    assert torch.equal(a[2]["img"], b[(1, 2)]["img"])


def test_nyu_flip_negates_normal_x_unless_reference(nyu_root):
    fixed = NYUv2(nyu_root, "train", crop_h=40, crop_w=48, seed=0)
    ref = NYUv2(nyu_root, "train", crop_h=40, crop_w=48, seed=0, reference_flip=True)
    seen = set()
    for epoch in range(3):
        for i in range(len(fixed)):
            rng = fixed.item_rng(i, epoch)
            rng.random()
            flipped = rng.random() > 0.5
            a, b = fixed[(epoch, i)]["normal"].int(), ref[(epoch, i)]["normal"].int()
            assert torch.equal(a[:2], b[:2])
            invalid = (b == 255).all(0)
            if flipped:
                assert torch.equal(a[2][~invalid], 255 - b[2][~invalid])
                assert (a[:, invalid] == 255).all()
            else:
                assert torch.equal(a, b)
            seen.add(flipped)
    assert seen == {True, False}


def test_nyu_missing_root_index_and_file(nyu_root, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        NYUv2(missing, "test")
    assert_one_line_naming(e, missing)
    assert "nyu_v2_3task.json" in str(e.value)
    root = copy_root(nyu_root, tmp_path)
    os.remove(root / "nyu_v2_3task.json")
    with pytest.raises(FileNotFoundError) as e:
        NYUv2(root, "test")
    assert_one_line_naming(e, root / "nyu_v2_3task.json")
    root2 = copy_root(nyu_root, tmp_path / "b")
    ds = NYUv2(root2, "test")
    victim = root2 / ds.entries[1][3]
    os.remove(victim)
    ds[0]  # other samples still load
    with pytest.raises(FileNotFoundError) as e:
        ds[1]
    assert_one_line_naming(e, victim)


def test_nyu_bad_inputs(nyu_root, tmp_path):
    root = copy_root(nyu_root, tmp_path)
    with pytest.raises(ValueError, match="split 'val'"):
        NYUv2(root, "val")
    with pytest.raises(ValueError, match="crop_h"):
        NYUv2(root, "train")
    ds = NYUv2(root, "test")
    corrupt = root / ds.entries[0][0]
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ValueError) as e:
        ds[0]
    assert_one_line_naming(e, corrupt)
    depth = root / ds.entries[1][3]
    np.save(depth, np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError) as e:
        ds[1]
    assert_one_line_naming(e, depth)
    with pytest.raises(IndexError):
        ds[2]
    index = root / "nyu_v2_3task.json"
    index.write_text('{"train": [], "test": [["img/a.png"]]}')
    with pytest.raises(ValueError) as e:
        NYUv2(root, "test")
    assert_one_line_naming(e, index)
    index.write_text("{broken")
    with pytest.raises(ValueError) as e:
        NYUv2(root, "test")
    assert_one_line_naming(e, index)
    index.write_text('{"train": []}')
    with pytest.raises(ValueError, match="'test'"):
        NYUv2(root, "test")


# ---------------------------------------------------------------- loaders ------------------
def nyu_cfg(root, **kw):
    return load_config("nyuv2_3task", profile="tiny", DATA_ROOT=root, **kw)


def test_build_dataset_uses_config(nyu_root):
    cfg = nyu_cfg(nyu_root)
    train = build_dataset(cfg, "train")
    assert isinstance(train, NYUv2) and train.augment and (train.crop_h, train.crop_w) == (40, 48)
    test = build_dataset(cfg, "test")
    assert not test.augment and test[0]["img"].shape == (3, H, W)
    assert not build_dataset(cfg, "train", augment=False).augment


def test_build_loader_batches_and_seeded_order(nyu_root):
    cfg = nyu_cfg(nyu_root)
    loader = build_loader(cfg, "train", seed=0)
    batches = list(loader)
    assert len(batches) == 2                      # 4 items, BATCH_SIZE 2, drop_last
    b = batches[0]
    assert set(b) == {"img", "seg", "normal", "depth", "name"}
    assert b["img"].shape == (2, 3, 40, 48) and b["img"].dtype == torch.float32
    assert b["seg"].shape == (2, 1, 40, 48) and b["normal"].shape == (2, 3, 40, 48)
    assert b["depth"].shape == (2, 1, 40, 48) and isinstance(b["name"], list)
    epoch0 = [n for b in batches for n in b["name"]]
    epoch1 = [n for b in loader for n in b["name"]]
    again = build_loader(cfg, "train", seed=0)
    assert [n for b in again for n in b["name"]] == epoch0
    again_b = next(iter(build_loader(cfg, "train", seed=0)))
    assert torch.equal(again_b["img"], batches[0]["img"])
    orders = {tuple(n for b in build_loader(cfg, "train", seed=s) for n in b["name"]) for s in range(4)}
    assert len(orders) > 1 and sorted(epoch1) == sorted(epoch0)
    test = list(build_loader(cfg, "test"))
    assert [n for b in test for n in b["name"]] == [NYUv2(nyu_root, "test")[i]["name"] for i in range(2)]
    assert test[0]["img"].shape == (2, 3, H, W)


def test_build_loader_epochs_and_resume(nyu_root):
    cfg = nyu_cfg(nyu_root)
    loader = build_loader(cfg, "train", seed=5, batch_size=4, drop_last=False)
    first, second = next(iter(loader)), next(iter(loader))
    assert not torch.equal(first["img"], second["img"])
    resumed = build_loader(cfg, "train", seed=5, batch_size=4, drop_last=False)
    resumed.sampler.set_epoch(1)
    assert torch.equal(next(iter(resumed))["img"], second["img"])


def test_build_loader_workers_match_main_process(nyu_root):
    cfg = nyu_cfg(nyu_root)
    main = next(iter(build_loader(cfg, "train", seed=3)))
    worker = next(iter(build_loader(cfg, "train", seed=3, num_workers=1)))
    assert torch.equal(main["img"], worker["img"]) and main["name"] == worker["name"]


def test_build_loader_indices_and_empty(nyu_root, tmp_path):
    cfg = nyu_cfg(nyu_root)
    loader = build_loader(cfg, "train", indices=[1, 3], batch_size=1, shuffle=False, augment=False)
    names = [b["name"][0] for b in loader]
    full = NYUv2(nyu_root, "train", augment=False)
    assert names == [full[1]["name"], full[3]["name"]]
    assert len(loader.dataset) == 2
    subset = build_loader(cfg, "train", indices=[1, 3]).dataset
    subset.set_epoch(2)
    assert torch.equal(subset[1]["img"], NYUv2(nyu_root, "train", crop_h=40, crop_w=48)[(2, 3)]["img"])
    with pytest.raises(ValueError, match="select no item"):
        build_loader(cfg, "train", indices=[])
    with pytest.raises(IndexError):
        build_loader(cfg, "train", indices=[9])
    root = copy_root(nyu_root, tmp_path)
    (root / "nyu_v2_3task.json").write_text('{"train": [], "test": []}')
    with pytest.raises(ValueError, match="no items") as e:
        build_loader(nyu_cfg(str(root)), "test")
    assert str(root) in str(e.value)
    with pytest.raises(ValueError, match="drop_last"):
        build_loader(cfg, "train", batch_size=8, drop_last=True)


def test_build_loader_missing_root_names_it(tmp_path):
    cfg = nyu_cfg(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError) as e:
        build_loader(cfg, "train")
    assert_one_line_naming(e, tmp_path / "absent")


# ---------------------------------------------------------------- Cityscapes ---------------
def test_cityscapes_test_item_equals_reference_procedure(city_root):
    ds = CityScapes(city_root, "test")
    index = json.load(open(os.path.join(city_root, "cityscape.json")))
    for i, entry in enumerate(index["test"]):
        arrays = [np.load(os.path.join(city_root, p)) for p in entry]
        item = ds[i]
        img = arrays[0][:, :, ::-1] * 255
        img = img.astype("float") - MEAN
        assert torch.equal(item["img"], torch.from_numpy(img.transpose(2, 0, 1).copy()).float())
        assert torch.equal(item["depth"], torch.from_numpy(arrays[1].transpose(2, 0, 1)).float())
        for key, arr in zip(("label2", "label7", "label19"), arrays[2:]):
            assert torch.equal(item[key], torch.from_numpy(arr[None]))
        assert torch.equal(item["seg"], item["label19"])
        assert item["name"] == entry[0].split("/")[-1]
        assert item["seg"].min() >= -1 and item["seg"].max() <= 18
    assert torch.equal(CityScapes(city_root, "test", num_class=7)[0]["seg"], ds[0]["label7"])
    with pytest.raises(ValueError, match="num_class 5"):
        CityScapes(city_root, "test", num_class=5)


def test_cityscapes_train_crop_and_void_padding(city_root):
    ds = CityScapes(city_root, "train", crop_h=80, crop_w=150, seed=0)
    item = ds[0]
    assert item["img"].shape == (3, 80, 150) and item["depth"].shape == (1, 80, 150)
    assert item["seg"].dtype == torch.int64
    pad = (item["img"] == -torch.from_numpy(MEAN)[:, None, None]).all(0)
    assert pad.any()
    assert (item["seg"][0][pad] == -1).all() and (item["depth"][0][pad] == 0).all()
    again = CityScapes(city_root, "train", crop_h=80, crop_w=150, seed=0)[0]
    assert torch.equal(item["img"], again["img"])


def test_cityscapes_build_loader(city_root):
    cfg = load_config("cityscapes", profile="tiny", DATA_ROOT=city_root)
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["img"].shape == (2, 3, 40, 40) and batch["seg"].shape == (2, 1, 40, 40)
    assert batch["depth"].shape == (2, 1, 40, 40)


# ---------------------------------------------------------------- Taskonomy ----------------
def expected_taskonomy_test(root, entry, prior, size):
    def read(p):
        return np.array(Image.open(os.path.join(root, p)))

    def rs(a):
        return cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    paths = []
    for p in entry:                     # <building>/<domain>/<file> -> <domain>/taskonomy/<building>/<file>
        b, d, f = p.split("/")
        paths.append(f"{d}/taskonomy/{b}/{f}")
    img = rs(np.ascontiguousarray(read(paths[0]).astype("float32")[:, :, ::-1])) - MEAN
    seg = rs(read(paths[1]))
    mask = (seg > 0.1).astype(float)
    seg[seg == 0] = 1
    seg = seg - 1
    seg_mask = mask * prior[seg]
    sn = rs(read(paths[2]).astype("float32") / 255) * 2 - 1
    depth_raw = read(paths[3]).astype("float32")
    depth = rs(np.log(1 + depth_raw) / np.log(2.0 ** 16))
    depth_mask = rs((depth_raw < 64500).astype(np.float32))
    kp = (np.clip(rs(read(paths[4]).astype("float32") / 2 ** 16), 0, 0.005) / 0.005) * 2 - 1
    edge = (np.clip(rs(read(paths[5]).astype("float32") / 2 ** 16), 0, 0.08) / 0.08) * 2 - 1
    return dict(img=img, seg=seg, seg_mask=seg_mask, normal=sn, depth=depth,
                depth_mask=depth_mask, keypoint=kp, edge=edge, name="-".join(paths[0].split("/")))


@pytest.mark.parametrize("size", [(48, 48), (32, 40)])
def test_taskonomy_test_item_equals_reference_procedure(task_root, size):
    ds = Taskonomy(task_root, "test", size=size)
    index = json.load(open(os.path.join(task_root, "taskonomy.json")))
    prior = np.load(os.path.join(task_root, "semseg_prior_factor.npy"))
    assert prior.shape == (17,)
    for i, entry in enumerate(index["test"]):
        item = ds[i]
        exp = expected_taskonomy_test(task_root, entry, prior, size)
        assert item["name"] == exp["name"]
        assert item["seg"].dtype == torch.int32
        for key in ("img", "seg", "seg_mask", "normal", "depth", "depth_mask", "keypoint", "edge"):
            e = exp[key]
            e = e[:, :, None] if e.ndim == 2 else e
            expected = torch.from_numpy(np.ascontiguousarray(e.transpose(2, 0, 1)))
            assert item[key].shape == expected.shape, key
            assert torch.allclose(item[key].double(), expected.double(), atol=1e-6), key
        assert torch.equal(item["normal_mask"], item["depth_mask"].expand(3, -1, -1))
        for key in ("keypoint", "edge", "normal"):
            assert item[key].min() >= -1 and item[key].max() <= 1


def expected_train(arrays, nearest, pads, rng, crop_h, crop_w):
    """Scale / mirror / centred pad / random crop of H x W x C arrays, written out."""
    scale = rng.random() + 0.5
    h, w = int(arrays[0].shape[0] * scale), int(arrays[0].shape[1] * scale)
    out = []
    for a, n in zip(arrays, nearest):
        r = cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST if n else cv2.INTER_LINEAR)
        out.append(r[:, :, None] if r.ndim == 2 else r)
    flipped = rng.random() > 0.5
    if flipped:
        out = [a[:, ::-1] for a in out]
    ph, pw = max(h, crop_h), max(w, crop_w)
    oh, ow = (ph - h) // 2, (pw - w) // 2
    sh, sw = rng.integers(0, ph - crop_h + 1), rng.integers(0, pw - crop_w + 1)
    cropped = []
    for a, pad in zip(out, pads):
        p = np.full((ph, pw, a.shape[2]), pad, dtype=a.dtype)
        p[oh:oh + h, ow:ow + w] = a
        cropped.append(p[sh:sh + crop_h, sw:sw + crop_w])
    return cropped, flipped


def test_taskonomy_train_follows_reference_procedure(task_root):
    crop = (56, 60)
    ds = Taskonomy(task_root, "train", crop_h=crop[0], crop_w=crop[1], seed=0, size=(H, H))
    index = json.load(open(os.path.join(task_root, "taskonomy.json")))
    prior = np.load(os.path.join(task_root, "semseg_prior_factor.npy"))
    keys = ["img", "seg", "seg_mask", "normal", "depth", "depth_mask", "keypoint", "edge"]
    seen = set()
    for epoch in range(3):
        for i, entry in enumerate(index["train"]):
            exp = expected_taskonomy_test(task_root, entry, prior, (H, H))
            exp["img"] = exp["img"] + MEAN
            arrays = [np.asarray(exp[k], np.float32) for k in keys]
            arrays = [a[:, :, None] if a.ndim == 2 else a for a in arrays]
            out, flipped = expected_train(arrays, [k != "img" for k in keys],
                                          [0] + [255] * 7, ds.item_rng(i, epoch), *crop)
            seen.add(flipped)
            exp = dict(zip(keys, out))
            if flipped:
                x = exp["normal"][:, :, 0]
                exp["normal"] = exp["normal"].copy()
                exp["normal"][:, :, 0] = np.where(x == 255, 255, -x)
            exp["img"] = exp["img"] - MEAN
            item = ds[(epoch, i)]
            for k in keys:
                expected = torch.from_numpy(np.ascontiguousarray(exp[k].transpose(2, 0, 1)))
                assert torch.allclose(item[k].double(), expected.double(), atol=1e-4), k
            pad = (item["img"] == -torch.from_numpy(MEAN)[:, None, None]).all(0)
            for k in keys[1:]:
                assert (item[k][:, pad] == 255).all(), k
            assert item["seg"].dtype == torch.int32
            assert torch.equal(item["normal_mask"], item["depth_mask"].expand(3, -1, -1))
    assert seen == {True, False}


def test_taskonomy_bad_inputs(task_root, tmp_path):
    root = copy_root(task_root, tmp_path)
    os.remove(root / "semseg_prior_factor.npy")
    with pytest.raises(FileNotFoundError) as e:
        Taskonomy(root, "test")
    assert_one_line_naming(e, root / "semseg_prior_factor.npy")
    root = copy_root(task_root, tmp_path / "b")
    ds = Taskonomy(root, "test", size=(H, H))
    victim = root / ds.entries[0][3]
    assert "depth_zbuffer/taskonomy/" in ds.entries[0][3]
    os.remove(victim)
    with pytest.raises(FileNotFoundError) as e:
        ds[0]
    assert_one_line_naming(e, victim)
    seg_path = root / ds.entries[1][1]
    cv2.imwrite(str(seg_path), np.full((H, H), 40, np.uint8))
    with pytest.raises(ValueError) as e:
        ds[1]
    assert_one_line_naming(e, seg_path)


def test_taskonomy_build_loader(task_root):
    cfg = load_config("taskonomy", profile="tiny", DATA_ROOT=task_root)
    batch = next(iter(build_loader(cfg, "test")))
    assert set(batch) >= {"img", "seg", "normal", "depth", "depth_mask", "keypoint", "edge", "name"}
    assert batch["img"].shape == (2, 3, 48, 48)
    train = next(iter(build_loader(cfg, "train")))
    assert train["depth_mask"].shape == (2, 1, 40, 40)


def test_build_loader_shards_for_distributed_runs(nyu_root):
    cfg = nyu_cfg(nyu_root)
    names = []
    for rank in range(3):
        loader = build_loader(cfg, "train", seed=2, batch_size=1, num_replicas=3, rank=rank,
                              augment=False)
        names.append([b["name"][0] for b in loader])
    assert [len(n) for n in names] == [2, 2, 2]               # 4 items padded to 6
    assert set(sum(names, [])) == {NYUv2(nyu_root, "train", augment=False)[i]["name"] for i in range(4)}
    test = [[b["name"][0] for b in build_loader(cfg, "test", batch_size=1, num_replicas=2, rank=r)]
            for r in range(2)]
    assert sorted(sum(test, [])) == sorted(NYUv2(nyu_root, "test")[i]["name"] for i in range(2))
    with pytest.raises(ValueError, match="rank 3"):
        build_loader(cfg, "train", num_replicas=2, rank=3)


@pytest.mark.parametrize("config,root_fixture", [("nyuv2_3task", "nyu_root"),
                                                  ("cityscapes", "city_root"),
                                                  ("taskonomy", "task_root")])
def test_batches_feed_the_reference_losses(config, root_fixture, request):
    from lib.losses import SceneNetLoss
    root = request.getfixturevalue(root_fixture)
    cfg = load_config(config, profile="tiny", DATA_ROOT=root)
    loss = SceneNetLoss.from_config(cfg)
    for split in ("train", "test"):
        batch = next(iter(build_loader(cfg, split)))
        h, w = batch["img"].shape[-2:]
        g = torch.Generator().manual_seed(0)
        preds = [torch.randn(batch["img"].shape[0], c, h // 8 + 1, w // 8 + 1, generator=g)
                 for c in cfg.TASKS_NUM_CLASS]
        per_task = loss.per_task(preds, batch)
        assert set(per_task) == set(cfg.TASKS)
        assert all(torch.isfinite(v) for v in per_task.values()), (split, per_task)


def test_image_tensor_is_the_reference_float64_mean_subtraction_bit_for_bit():
    """lib.data.base.image_tensor (one buffered pass) equals the reference's
    ToTensor(img.astype(float) - IMG_MEAN).float() for uint8 and float64 frames."""
    from lib.data.base import IMG_MEAN_BGR, image_tensor

    rng = np.random.default_rng(0)
    for img in (rng.integers(0, 256, (7, 9, 3), dtype=np.uint8),
                rng.uniform(0, 255, (5, 4, 3))):
        reference = torch.from_numpy((img.astype(np.float64) - IMG_MEAN_BGR)
                                     .transpose(2, 0, 1).copy()).float()
        out = image_tensor(img)
        assert out.dtype == torch.float32 and out.is_contiguous()
        assert torch.equal(out, reference)
