"""Every reader checks dtype, channels, finiteness and documented ranges of each file it reads,
and refuses a bad one with a one-line error naming the file (a bad file in a tiny synthetic
dataset per case)."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from lib.cli import main
from lib.config import load_config
from lib.data import CityScapes, NYUv2, Taskonomy
from lib.data.synthetic import write_dataset

pytestmark = pytest.mark.filterwarnings("ignore:.*not comparable with published numbers")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("checks")
    return {layout: write_dataset(base / layout, layout, 1, 1, 24, 32, seed=2)
            for layout in ("nyuv2_3", "cityscapes", "taskonomy")}


@pytest.fixture
def copy_of(roots, tmp_path):
    def copy(layout):
        dst = tmp_path / layout
        shutil.copytree(roots[layout], dst)
        return dst
    return copy


def refused(read, path, *fragments):
    """``read()`` raises a one-line ValueError naming ``path`` and every fragment."""
    with pytest.raises(ValueError) as excinfo:
        read()
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- NYU-v2 -------------------
def nyu_file(root, field):
    ds = NYUv2(root, "test")
    return ds, root / ds.entries[0][field]


@pytest.mark.parametrize("depth,fragments", [
    (np.full((24, 32), 998, np.uint16), ("dtype uint16", "float32", "millimetres")),
    (np.full((24, 32), 998.0, np.float32), ("[998, 998]", "metres")),
    (np.where(np.eye(24, 32) > 0, np.nan, 1.0).astype(np.float32), ("24 NaN",)),
    (np.where(np.eye(24, 32) > 0, np.inf, 1.0).astype(np.float32), ("24 infinite",)),
    (np.full((24, 32), -0.5, np.float32), ("[-0.5, -0.5]",)),
    (np.full((24, 32), 2.0, np.float64), ("dtype float64",)),
])
def test_nyu_bad_depth_is_refused(copy_of, depth, fragments):
    ds, path = nyu_file(copy_of("nyuv2_3"), 3)
    np.save(path, depth)
    refused(lambda: ds[0], path, "NYUv2 depth", *fragments)


def test_nyu_seg_labels_out_of_range_are_refused(copy_of):
    ds, path = nyu_file(copy_of("nyuv2_3"), 1)
    seg = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    seg[0, :3] = 255                                     # ignore: fine
    cv2.imwrite(str(path), seg)
    ds[0]
    seg[1, :2] = (40, 77)
    cv2.imwrite(str(path), seg)
    refused(lambda: ds[0], path, "NYUv2 seg", "40, 77", "0..39 or 255")
    # The class count is the config's.
    assert NYUv2(ds.root, "test", num_class=80)[0]["seg"].max() == 255


@pytest.mark.parametrize("field,image,fragments", [
    (0, np.zeros((24, 32, 3), np.uint16), ("NYUv2 img", "dtype uint16", "8-bit RGB")),
    (0, np.zeros((24, 32), np.uint8), ("NYUv2 img", "shape (24, 32)", "H x W x 3")),
    (0, np.zeros((24, 32, 4), np.uint8), ("NYUv2 img", "shape (24, 32, 4)",)),
    (1, np.zeros((24, 32, 3), np.uint8), ("NYUv2 seg", "shape (24, 32, 3)", "H x W")),
    (1, np.zeros((24, 32), np.uint16), ("NYUv2 seg", "dtype uint16",)),
    (2, np.zeros((24, 32, 3), np.uint16), ("NYUv2 normal", "dtype uint16", "(n+1)*127.5")),
    (2, np.zeros((24, 32), np.uint8), ("NYUv2 normal", "shape (24, 32)",)),
])
def test_nyu_images_of_wrong_dtype_or_channels_are_refused(copy_of, field, image, fragments):
    ds, path = nyu_file(copy_of("nyuv2_3"), field)
    assert cv2.imwrite(str(path), image)
    refused(lambda: ds[0], path, *fragments)


def test_nyu_checks_hold_for_train_items(copy_of):
    root = copy_of("nyuv2_3")
    ds = NYUv2(root, "train", crop_h=16, crop_w=16)
    path = root / ds.entries[0][3]
    np.save(path, np.full((24, 32), 998, np.uint16))
    refused(lambda: ds[0], path, "dtype uint16")


def test_evaluate_refuses_millimetre_depth_before_writing(copy_of, tmp_path, capsys):
    from lib.models import SceneNet
    root = copy_of("nyuv2_3")
    ds, path = nyu_file(root, 3)
    np.save(path, (np.load(path) * 1000).astype(np.uint16))
    cfg = load_config("nyuv2_3task", profile="tiny")
    checkpoint = tmp_path / "net.pth"
    torch.save(SceneNet.from_config(cfg).state_dict(), checkpoint)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 str(root), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "uint16" in errors[0]
    assert "Traceback" not in err and not out.exists()


# ---------------------------------------------------------------- Cityscapes ---------------
def city_file(root, field):
    ds = CityScapes(root, "test")
    return ds, root / ds.entries[0][field]


@pytest.mark.parametrize("field,transform,fragments", [
    (0, lambda a: (a * 255).astype(np.uint8), ("CityScapes image", "dtype uint8", "[0, 1]")),
    (0, lambda a: a * 255, ("CityScapes image", "values in [",)),
    (0, lambda a: np.where(a > 0.5, np.nan, a), ("CityScapes image", "NaN")),
    (0, lambda a: a[:, :, :1], ("CityScapes image", "H x W x 3")),
    (1, lambda a: a.astype(np.uint16), ("CityScapes depth", "dtype uint16")),
    (1, lambda a: a - 1, ("CityScapes depth", "values in [-1",)),
    (1, lambda a: np.where(a > 0, np.inf, a), ("CityScapes depth", "infinite")),
    (4, lambda a: np.where(a == a.max(), 19, a), ("CityScapes label_19", "label(s) 19",
                                                  "0..18 or -1")),
    (3, lambda a: np.where(a == a.max(), 7, a), ("CityScapes label_7", "label(s) 7")),
    (2, lambda a: np.full_like(a, 0.5), ("CityScapes label_2", "non-integer")),
    (4, lambda a: np.full(a.shape, 3, np.uint8), ("CityScapes label_19", "dtype uint8")),
    (4, lambda a: np.full_like(a, np.nan), ("CityScapes label_19", "NaN")),
])
def test_cityscapes_bad_files_are_refused(copy_of, field, transform, fragments):
    ds, path = city_file(copy_of("cityscapes"), field)
    np.save(path, transform(np.load(path)))
    refused(lambda: ds[0], path, *fragments)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.float32,
                                   np.float64])
def test_cityscapes_labels_of_any_integral_dtype_load_alike(copy_of, dtype):
    root = copy_of("cityscapes")
    ds, _ = city_file(root, 0)
    before = ds[0]
    for field in (2, 3, 4):
        path = root / ds.entries[0][field]
        np.save(path, np.load(path).astype(dtype))
    after = ds[0]
    for key in ("label2", "label7", "label19"):
        assert after[key].dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
        assert torch.equal(after[key].double(), before[key].double())
    assert CityScapes(root, "test", num_class=7)[0]["seg"].min() >= -1


# ---------------------------------------------------------------- Taskonomy ----------------
def task_file(root, field):
    ds = Taskonomy(root, "test", size=(24, 32))
    return ds, root / ds.entries[0][field]


@pytest.mark.parametrize("field,image,fragments", [
    (0, np.zeros((24, 32), np.uint8), ("Taskonomy rgb", "H x W x 3")),
    (0, np.zeros((24, 32, 4), np.uint8), ("Taskonomy rgb", "shape (24, 32, 4)",)),
    (1, np.zeros((24, 32, 3), np.uint8), ("Taskonomy segment_semantic", "H x W")),
    (1, np.zeros((24, 32), np.uint16), ("Taskonomy segment_semantic", "dtype uint16")),
    (2, np.zeros((24, 32), np.uint8), ("Taskonomy normal", "H x W x 3")),
    (3, np.zeros((24, 32), np.uint8), ("Taskonomy depth_zbuffer", "dtype uint8",
                                       "16-bit PNG, 1/512 m")),
    (4, np.zeros((24, 32), np.uint8), ("Taskonomy keypoints2d", "dtype uint8")),
    (5, np.zeros((24, 32, 3), np.uint8), ("Taskonomy edge_texture", "dtype uint8")),
    (3, np.zeros((12, 16), np.uint16), ("Taskonomy depth_zbuffer", "12x16", "24x32")),
])
def test_taskonomy_bad_files_are_refused(copy_of, field, image, fragments):
    ds, path = task_file(copy_of("taskonomy"), field)
    assert cv2.imwrite(str(path), image)
    refused(lambda: ds[0], path, *fragments)


@pytest.mark.parametrize("prior,fragments", [
    (np.array([1.0, np.nan, 2.0]), ("NaN",)),
    (np.array([1.0, -2.0]), ("[-2",)),
    (np.ones((3, 2)), ("shape (3, 2)",)),
    (np.arange(17), ("dtype int64",)),
])
def test_taskonomy_bad_prior_is_refused(copy_of, prior, fragments):
    root = copy_of("taskonomy")
    path = root / "semseg_prior_factor.npy"
    np.save(path, prior)
    refused(lambda: Taskonomy(root, "test"), path, "Taskonomy class prior", *fragments)


def test_synthetic_files_pass_every_check(roots):
    for cls, layout in ((NYUv2, "nyuv2_3"), (CityScapes, "cityscapes"), (Taskonomy, "taskonomy")):
        index = json.load(open(os.path.join(roots[layout], cls.INDEX_FILE)))
        for split in ("train", "test"):
            ds = cls(roots[layout], split, augment=False)
            assert len(ds) == len(index[split]) and all(ds[i] for i in range(len(ds)))
