"""Profiles read the real layouts at their own size: the load-time resize, rule by rule.

Datasets are synthetic but written at the real stored sizes (``real_size_root`` in conftest);
expected frames are recomputed here from the files with cv2/PIL/numpy.
"""
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lib.config import load_config
from lib.data import build_dataset, build_loader, loader as loader_module
from lib.data.transforms import BILINEAR, NEAREST, UNIT_VECTORS, resize_frame
from lib.metrics import SceneNetEval

pytestmark = pytest.mark.filterwarnings("ignore:.*not comparable with published numbers")

MEAN = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)


def linear(a, h, w):
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)


def nearest(a, h, w):
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST)


def chw(a):
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


@pytest.fixture(autouse=True)
def fresh_announcements(monkeypatch):
    """Each test sees the once-per-process resize warning anew."""
    monkeypatch.setattr(loader_module, "_ANNOUNCED_RESIZES", set())


def test_resize_frame_rules():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    seg = rng.integers(0, 5, (30, 40, 1)).astype(np.uint8)
    normal = rng.normal(size=(30, 40, 3)).astype(np.float32)
    out_img, out_seg, out_normal = resize_frame([img, seg, normal],
                                                [BILINEAR, NEAREST, UNIT_VECTORS], 12, 16)
    assert np.array_equal(out_img, linear(img, 12, 16))
    assert np.array_equal(out_seg[:, :, 0], nearest(seg, 12, 16))
    assert out_normal.dtype == np.float32 and out_normal.shape == (12, 16, 3)
    assert np.allclose(np.linalg.norm(out_normal, axis=2), 1, atol=1e-5)
    blended = linear(normal, 12, 16)
    cos = (out_normal * blended).sum(2) / np.linalg.norm(blended, axis=2)
    assert np.allclose(cos, 1, atol=1e-5)              # same direction as the blend
    same = resize_frame([img, seg], [BILINEAR, NEAREST], 30, 40)
    assert same[0] is img and same[1] is seg           # already at size: untouched
    with pytest.raises(ValueError, match="resize rule 'cubic'"):
        resize_frame([img], ["cubic"], 12, 16)


@pytest.mark.parametrize("profile", ["tiny", "cpu"])
def test_nyu_real_size_frames_are_resized_per_target(real_size_root, profile):
    root = real_size_root("nyuv2_3task")
    cfg = load_config("nyuv2_3task", profile=profile, DATA_ROOT=root)
    h, w = cfg.IMAGE_SHAPE
    test = build_dataset(cfg, "test")
    entry = json.load(open(os.path.join(root, "nyu_v2_3task.json")))["test"][0]
    img, seg, normal = (cv2.imread(os.path.join(root, p), f) for p, f in
                        zip(entry[:3], (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE, cv2.IMREAD_COLOR)))
    depth = np.load(os.path.join(root, entry[3]))
    assert img.shape[:2] == (480, 640)
    item = test[0]
    assert torch.equal(item["img"], chw(linear(img, h, w).astype(np.float64) - MEAN).float())
    assert item["seg"].dtype == torch.uint8 and torch.equal(item["seg"], chw(nearest(seg, h, w)))
    assert torch.equal(item["normal"], chw(nearest(normal, h, w)))   # still encoded, 255 = invalid
    assert item["depth"].dtype == torch.float32
    assert torch.equal(item["depth"], chw(nearest(depth, h, w)))     # values unchanged
    train = build_dataset(cfg, "train")[0]
    assert train["img"].shape == (3, cfg.CROP_H, cfg.CROP_W)
    assert ((train["seg"] < 40) | (train["seg"] == 255)).all()


def test_cityscapes_real_size_frames_are_resized_per_target(real_size_root):
    root = real_size_root("cityscapes")
    cfg = load_config("cityscapes", profile="tiny", DATA_ROOT=root)
    h, w = cfg.IMAGE_SHAPE
    entry = json.load(open(os.path.join(root, "cityscape.json")))["test"][0]
    arrays = [np.load(os.path.join(root, p)) for p in entry]
    assert arrays[0].shape == (256, 512, 3)
    item = build_dataset(cfg, "test")[0]
    img = linear(np.ascontiguousarray(arrays[0][:, :, ::-1] * 255), h, w)
    assert torch.equal(item["img"], chw(img.astype(np.float64) - MEAN).float())
    assert torch.equal(item["depth"], chw(nearest(arrays[1], h, w)).float())
    for key, label in zip(("label2", "label7", "label19"), arrays[2:]):
        assert torch.equal(item[key], chw(nearest(label, h, w)))
    assert torch.equal(item["seg"], item["label19"])
    assert build_dataset(cfg, "train")[0]["seg"].shape == (1, cfg.CROP_H, cfg.CROP_W)


def test_taskonomy_real_size_frames_are_resized_per_target(real_size_root):
    root = real_size_root("taskonomy")
    cfg = load_config("taskonomy", profile="tiny", DATA_ROOT=root)
    h, w = cfg.IMAGE_SHAPE
    ds = build_dataset(cfg, "test")
    prior = np.load(os.path.join(root, "semseg_prior_factor.npy"))

    def read(k):
        return np.array(Image.open(os.path.join(root, ds.entries[0][k])))

    rgb = read(0)
    assert rgb.shape == (512, 512, 3)
    seg = read(1).astype(np.int64)
    labeled = seg > 0
    seg = np.where(seg == 0, 1, seg) - 1
    depth_raw = read(3).astype(np.float32)
    expected = {
        "img": linear(np.ascontiguousarray(rgb[:, :, ::-1]).astype(np.float32), h, w) - MEAN,
        "seg": nearest(seg.astype(np.int32), h, w),
        "seg_mask": nearest((labeled * prior[seg]).astype(np.float32), h, w),
        "depth": nearest(np.log(1 + depth_raw) / np.log(2.0 ** 16), h, w),
        "depth_mask": nearest((depth_raw < 64500).astype(np.float32), h, w),
        "keypoint": linear(np.clip(read(4) / 2 ** 16, 0, 0.005).astype(np.float32) / 0.005 * 2 - 1,
                           h, w),
        "edge": linear(np.clip(read(5) / 2 ** 16, 0, 0.08).astype(np.float32) / 0.08 * 2 - 1, h, w),
    }
    item = ds[0]
    for key, value in expected.items():
        assert item[key].shape[-2:] == (h, w), key
        assert torch.allclose(item[key].double(), chw(value).double(), atol=1e-5), key
    blend = linear(read(2).astype(np.float32) / 255 * 2 - 1, h, w)
    normal = item["normal"].numpy().transpose(1, 2, 0)
    assert np.allclose(normal, blend / np.linalg.norm(blend, axis=2, keepdims=True), atol=1e-5)
    assert torch.equal(item["normal_mask"], item["depth_mask"].expand(3, -1, -1))
    train = build_dataset(cfg, "train")[0]
    assert train["depth_mask"].shape == (1, cfg.CROP_H, cfg.CROP_W)


def test_reference_profile_reads_frames_as_stored(real_size_root):
    cfg = load_config("nyuv2_3task", DATA_ROOT=real_size_root("nyuv2_3task"))
    assert cfg.RESIZE_TO_IMAGE_SHAPE is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no resize, so no warning
        item = build_dataset(cfg, "test")[0]
    assert item["img"].shape == (3, 480, 640)
    cfg = load_config("taskonomy", DATA_ROOT=real_size_root("taskonomy"))
    assert build_dataset(cfg, "test").size == (256, 256)  # the reference's own nearest resize


@pytest.mark.parametrize("config", ["nyuv2_3task", "cityscapes", "taskonomy"])
def test_evaluator_accepts_resized_test_batches(real_size_root, config):
    cfg = load_config(config, profile="tiny", DATA_ROOT=real_size_root(config))
    evaluator = SceneNetEval.from_config(cfg)
    assert evaluator.image_shape == tuple(cfg.IMAGE_SHAPE)
    batch = next(iter(build_loader(cfg, "test", batch_size=1)))
    h, w = cfg.IMAGE_SHAPE
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(1, c, h // 8 + 1, w // 8 + 1, generator=g) for c in cfg.TASKS_NUM_CLASS]
    evaluator.update(preds, batch)
    assert set(evaluator.compute()) == set(cfg.TASKS)


def test_resize_is_announced_once_per_dataset(real_size_root, tmp_path):
    root = real_size_root("nyuv2_3task")
    cfg = load_config("nyuv2_3task", profile="tiny", DATA_ROOT=root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_dataset(cfg, "train")
        build_dataset(cfg, "test")
        build_loader(cfg, "test")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert root in messages[0] and "480x640" in messages[0] and "48x64" in messages[0]
    assert "not comparable with published numbers" in messages[0]
    # Frames stored at the profile's size are not resized: nothing to announce.
    from lib.data.synthetic import write_dataset
    small = write_dataset(tmp_path / "small", "nyuv2_3", 1, 1, 48, 64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_dataset(load_config("nyuv2_3task", profile="tiny", DATA_ROOT=str(small)), "test")
