"""Tiny-Taskonomy (5 tasks) in AdaShare's layout (``cfg.DATASET == "taskonomy"``).

``DATA_ROOT/taskonomy.json`` = ``{"train": [...], "test": [...]}``, each entry
``[rgb, segment_semantic, normal, depth_zbuffer, keypoints2d, edge_texture]`` as
``<building>/<domain>/<file>``; the files live at ``DATA_ROOT/<domain>/taskonomy/<building>/<file>``
(the reference rewrites every path so). ``DATA_ROOT/semseg_prior_factor.npy`` holds one float
weight per class. rgb/normal: 8-bit RGB PNG; segment_semantic: 8-bit PNG, 0 = unlabeled, 1..17;
depth_zbuffer/keypoints2d/edge_texture: 16-bit PNG (depth 65535 = missing). Every file's bit
depth, channels and size (that of its rgb) are checked on read, and the prior must be a finite,
non-negative float vector; a mismatch raises naming the file.

Item (test split: exactly the reference loader's item), all resized (nearest) to ``size``
(the reference's step; ``size=None`` keeps the stored size), then to ``load_shape`` if given
(:data:`RESIZE_RULES`):

    img          float32 3xHxW  BGR, 0..255 minus IMG_MEAN_BGR
    seg          int32   1xHxW  class 0..16 (unlabeled 0 -> 1 -> class 0)
    seg_mask     float32 1xHxW  prior weight of the class where labeled, else 0
    normal       float32 3xHxW  RGB /255*2-1 (x, y, z in [-1, 1])
    normal_mask  float32 3xHxW  depth_mask tiled
    depth        float32 1xHxW  log(1+d)/log(2^16)
    depth_mask   float32 1xHxW  1 where d < 64500
    keypoint     float32 1xHxW  clip(k/2^16, 0, 0.005) rescaled to [-1, 1]
    edge         float32 1xHxW  clip(e/2^16, 0, 0.08) rescaled to [-1, 1]
    name         str            the rewritten rgb path with '/' -> '-'

Train split: scale / flip (negating normal x) / pad / crop; padding is -mean in ``img`` and
255 in every label and mask. Unlike the reference, an unreadable sample raises; it is never
replaced by item 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.tasks import SEG_PRIOR_FILE

from .base import IMG_MEAN_BGR, LayoutDataset, to_chw
from .checks import FLOAT_DTYPES, check_channels, check_dtype, check_finite, check_range
from .transforms import BILINEAR, NEAREST, UNIT_VECTORS, augment, resize

TASKONOMY_IGNORE = 255
DEPTH_MISSING_FROM = 64500          # depth_zbuffer values >= this are masked
KEYPOINT_RANGE = (0.0, 0.005)
EDGE_RANGE = (0.0, 0.08)
PRIOR_FILE = SEG_PRIOR_FILE
# Load-time resize per map: decoded normals are blended and re-normalised, keypoints and edges
# (continuous maps) blended, labels, masks and depth sampled.
RESIZE_RULES = {"img": BILINEAR, "seg": NEAREST, "seg_mask": NEAREST, "normal": UNIT_VECTORS,
                "depth": NEAREST, "depth_mask": NEAREST, "keypoint": BILINEAR, "edge": BILINEAR}
# What each file must hold: (dtype, channels or None for H x W, description).
FILE_FORMATS = {
    "rgb": (np.uint8, 3, "an 8-bit RGB PNG"),
    "segment_semantic": (np.uint8, None, "an 8-bit single-channel PNG, 0 = unlabeled"),
    "normal": (np.uint8, 3, "an 8-bit RGB PNG of (n+1)*127.5"),
    "depth_zbuffer": (np.uint16, None, "a 16-bit PNG, 1/512 m, 65535 = missing"),
    "keypoints2d": (np.uint16, None, "a 16-bit PNG"),
    "edge_texture": (np.uint16, None, "a 16-bit PNG"),
}


def rewrite_path(path: str) -> str:
    """``<building>/<domain>/<file>`` -> ``<domain>/taskonomy/<building>/<file>``."""
    parts = path.split("/")
    parts[0], parts[1] = parts[1], parts[0]
    parts.insert(1, "taskonomy")
    return "/".join(parts)


def rescale(values: np.ndarray, current: tuple[float, float] | None) -> np.ndarray:
    """The reference's ``rescale_image`` to [-1, 1]: clip to ``current`` and map it linearly."""
    values = values.astype(np.float32)
    if current is not None:
        low, high = current
        values = (np.clip(values, low, high) - low) / (high - low)
    return values * 2.0 - 1.0


class Taskonomy(LayoutDataset):
    NAME = "Taskonomy"
    LAYOUT = "taskonomy"
    INDEX_FILE = "taskonomy.json"
    ENTRY_FIELDS = ("rgb", "segment_semantic", "normal", "depth_zbuffer", "keypoints2d",
                    "edge_texture")
    EXPECTED = ("DATA_ROOT/taskonomy.json {'train': [...], 'test': [...]} of 6 "
                "'<building>/<domain>/<file>' paths stored at "
                "DATA_ROOT/<domain>/taskonomy/<building>/<file>, plus DATA_ROOT/" + PRIOR_FILE)

    def __init__(self, root, split: str = "train", crop_h: int | None = None,
                 crop_w: int | None = None, seed: int = 0, augment: bool | None = None,
                 load_shape: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = (256, 256)):
        super().__init__(root, split, crop_h, crop_w, seed, augment, load_shape)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        prior_path = self.root / PRIOR_FILE
        if not prior_path.is_file():
            raise FileNotFoundError(f"Taskonomy class prior {prior_path} not found (expected "
                                    f"{self.EXPECTED})")
        self.prior_factor = self.read_npy(prior_path)
        source = f"Taskonomy class prior {prior_path}"
        if self.prior_factor.ndim != 1 or len(self.prior_factor) == 0:
            raise ValueError(f"{source} has shape {self.prior_factor.shape}; expected one "
                             f"weight per class")
        check_dtype(source, self.prior_factor, FLOAT_DTYPES, "one weight per class")
        check_finite(source, self.prior_factor)
        check_range(source, self.prior_factor, 0.0, None, "class weights")

    def rewrite_entry(self, entry: list[str]) -> list[str]:
        for path in entry:
            if len(path.split("/")) < 3:
                raise ValueError(f"Taskonomy index {self.index_path} path {path!r} is not "
                                 f"'<building>/<domain>/<file>'")
        return [rewrite_path(p) for p in entry]

    def read_pil(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                return np.array(image)
        except Exception as exc:  # PIL.UnidentifiedImageError, OSError, ...
            raise ValueError(f"Taskonomy cannot decode image {path}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None

    def _resize(self, array: np.ndarray) -> np.ndarray:
        """The reference's nearest resize to ``size`` (none if ``size`` is None), ``H x W x C``."""
        if self.size is None:
            return array[:, :, None] if array.ndim == 2 else array
        return resize(array, self.size[0], self.size[1], nearest=True)

    def read_file(self, index: int, field: int, shape: tuple[int, int] | None) -> np.ndarray:
        """Entry ``index``'s ``field`` file decoded, its format checked (and its ``H x W``
        against ``shape`` when given)."""
        path = self.file(index, field)
        array = self.read_pil(path)
        domain = self.ENTRY_FIELDS[field]
        dtype, channels, expected = FILE_FORMATS[domain]
        source = f"Taskonomy {domain} {path}"
        check_dtype(source, array, (dtype,), expected)
        check_channels(source, array, channels, expected)
        if shape is not None and array.shape[:2] != shape:
            raise ValueError(f"{source} is {array.shape[0]}x{array.shape[1]}; expected "
                             f"{shape[0]}x{shape[1]} (the size of the sample's rgb)")
        return array

    def read_arrays(self, index: int) -> dict[str, np.ndarray]:
        """Every map decoded and resized as the reference does, each ``H x W x C`` float32."""
        rgb = self.read_file(index, 0, None)
        shape = rgb.shape[:2]
        img = self._resize(rgb.astype(np.float32)[:, :, ::-1])
        seg_raw = self.read_file(index, 1, shape)
        seg = self._resize(seg_raw)[:, :, 0]
        labeled = seg > 0.1
        seg = np.where(seg == 0, 1, seg).astype(np.int64) - 1
        if seg.max() >= len(self.prior_factor):
            raise ValueError(f"Taskonomy segment_semantic {self.file(index, 1)} has class "
                             f"{seg.max() + 1}; {PRIOR_FILE} has weights for "
                             f"1..{len(self.prior_factor)}")
        seg_mask = labeled * self.prior_factor[seg]
        normal = self._resize(self.read_file(index, 2, shape).astype(np.float32) / 255)
        normal = rescale(normal, None)
        depth_raw = self.read_file(index, 3, shape).astype(np.float32)
        depth = self._resize(np.log(1.0 + depth_raw) / np.log(2.0 ** 16))
        depth_mask = self._resize((depth_raw < DEPTH_MISSING_FROM).astype(np.float32))
        keypoint = rescale(self._resize(self.read_file(index, 4, shape).astype(np.float32)
                                        / 2 ** 16), KEYPOINT_RANGE)
        edge = rescale(self._resize(self.read_file(index, 5, shape).astype(np.float32) / 2 ** 16),
                       EDGE_RANGE)
        return {"img": img, "seg": seg[:, :, None].astype(np.float32),
                "seg_mask": seg_mask[:, :, None].astype(np.float32), "normal": normal,
                "depth": depth.astype(np.float32), "depth_mask": depth_mask,
                "keypoint": keypoint, "edge": edge}

    def load_item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        maps = self.read_arrays(index)
        keys = list(maps)
        maps = dict(zip(keys, self.to_load_shape([maps[k] for k in keys],
                                                 [RESIZE_RULES[k] for k in keys])))
        if rng is not None:
            arrays, flipped = augment(
                [maps[k] for k in keys], nearest=[k != "img" for k in keys],
                pad_values=[0 if k == "img" else TASKONOMY_IGNORE for k in keys],
                crop_h=self.crop_h, crop_w=self.crop_w, rng=rng)
            maps = dict(zip(keys, arrays))
            if flipped:
                normal = maps["normal"].copy()
                x = normal[:, :, 0]
                x[x != TASKONOMY_IGNORE] *= -1
                maps["normal"] = normal
        img = maps.pop("img").astype(np.float64 if rng is not None else np.float32) - IMG_MEAN_BGR
        item = {"img": to_chw(img).float(), "seg": to_chw(maps["seg"]).int()}
        for key in ("seg_mask", "normal"):
            item[key] = to_chw(maps[key]).float()
        item["normal_mask"] = to_chw(np.tile(maps["depth_mask"], (1, 1, 3))).float()
        for key in ("depth", "depth_mask", "keypoint", "edge"):
            item[key] = to_chw(maps[key]).float()
        item["name"] = "-".join(self.entries[index][0].strip().split("/"))
        return item
