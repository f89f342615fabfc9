"""NYU-v2 in MTAN's pre-processed layout (``cfg.DATASET == "nyuv2_mtan"``): the min-max data.

``DATA_ROOT/{train,val}/{image,label,depth,normal}/<i>.npy`` for ``i = 0 .. n-1`` (the ``test``
split reads ``val/``). The files, as MTAN / Auto-Lambda / the min-max code distribute them
(795 train and 654 val images at 288x384):

    image   H x W x 3  float in [0, 1], RGB
    label   H x W      13 classes 0..12 (NYU-40 grouped as in Couprie et al.), -1 = ignore
    depth   H x W x 1  metres, 0 = invalid
    normal  H x W x 3  unit surface normals in [-1, 1], (0, 0, 0) = invalid

Item:

    img     float32 3xHxW  2 * image - 1 (what the network sees, as the reference)
    seg     int64   1xHxW  -1 = ignore
    depth   float32 1xHxW  0 = invalid
    normal  float32 3xHxW  0 = invalid
    name    str            ``<i>.npy``

Train augmentation (``create_dataset.py``'s ``DataTransform`` with scales [1.0, 1.2, 1.5]):
a scale drawn from ``scales``, a flip with probability 1/2, a ``crop_h x crop_w`` crop at a
random offset; the image is resized bilinearly, the targets nearest; where the resized sample is
smaller than the crop it is padded at the bottom/right (image reflected, seg -1, depth and
normals 0); depth is divided by the scale (the scene looks closer); a flip negates the normals'
x component. Draws, in this order, from the item's generator: scale, flip, crop row, crop
column. Every file is checked (shape, float/label dtype, finite values, ranges) before use.
With ``load_shape`` (the cpu/tiny profiles' ``RESIZE_TO_IMAGE_SHAPE``) each frame is first
resized to it: the image bilinearly, the targets nearest (values and invalid markers kept).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import LayoutDataset
from .checks import LABEL_DTYPES, check_dtype, check_floats, check_labels, check_unit_rgb
from .transforms import BILINEAR, NEAREST

MTAN_SCALES = (1.0, 1.2, 1.5)
MTAN_NUM_CLASS = 13
SEG_IGNORE = -1
SPLIT_DIRS = {"train": "train", "test": "val"}
FIELDS = ("image", "label", "depth", "normal")
NORMAL_TOLERANCE = 1e-3   # unit normals stored as float may exceed 1 by rounding
RESIZE_RULES = (BILINEAR, NEAREST, NEAREST, NEAREST)   # image, label, depth, normal
_INDEX_NAME = re.compile(r"^(0|[1-9][0-9]*)\.npy$")


def image_to_rgb(image: np.ndarray) -> np.ndarray:
    """A network input (3 x H x W, ``2 x RGB - 1``) as RGB in [0, 1] (for figures)."""
    return (image + 1.0) / 2.0


class NYUv2MTAN(LayoutDataset):
    NAME = "NYUv2-MTAN"
    LAYOUT = "nyuv2_mtan"
    INDEX_FILE = ""            # no index file: the split folders are listed
    ENTRY_FIELDS = FIELDS
    EXPECTED = ("DATA_ROOT/{train,val}/{image,label,depth,normal}/<i>.npy for i = 0..n-1 "
                "(MTAN's pre-processed NYUv2)")

    def __init__(self, root, split: str = "train", crop_h: int | None = None,
                 crop_w: int | None = None, seed: int = 0, augment: bool | None = None,
                 load_shape: tuple[int, int] | None = None, num_class: int = MTAN_NUM_CLASS,
                 scales: Sequence[float] = MTAN_SCALES):
        scales = tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"NYUv2-MTAN scales must be positive, got {scales}")
        self.num_class = int(num_class)
        self.scales = scales
        super().__init__(root, split, crop_h, crop_w, seed, augment, load_shape)

    # -- listing ------------------------------------------------------------------------------
    @property
    def split_dir(self) -> Path:
        return self.root / SPLIT_DIRS[self.split]

    def _read_index(self) -> list[list[str]]:
        folder = self.split_dir / "image"
        if not folder.is_dir():
            raise FileNotFoundError(f"{self.NAME} folder {folder} not found (expected "
                                    f"{self.EXPECTED})")
        names = [p.name for p in folder.iterdir() if p.suffix == ".npy"]
        bad = sorted(n for n in names if not _INDEX_NAME.match(n))
        if bad:
            raise ValueError(f"{self.NAME} {folder} holds {bad[0]!r}; expected files named "
                             f"<i>.npy with i = 0..n-1")
        numbers = sorted(int(n[:-4]) for n in names)
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(len(numbers))) - set(numbers))[0]
            raise ValueError(f"{self.NAME} {folder} has {len(numbers)} files but no {missing}.npy; "
                             f"expected 0.npy .. {len(numbers) - 1}.npy")
        rel = SPLIT_DIRS[self.split]
        return [[f"{rel}/{field}/{i}.npy" for field in FIELDS] for i in numbers]

    def file(self, index: int, field: int) -> Path:
        path = self.root / self.entries[index][field]
        if not path.is_file():
            raise FileNotFoundError(f"{self.NAME} {FIELDS[field]} file {path} not found (its "
                                    f"image exists; expected {self.EXPECTED})")
        return path

    # -- reading ------------------------------------------------------------------------------
    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sample's four arrays, checked: image HxWx3, label HxW, depth HxWx1, normal HxWx3."""
        paths = [self.file(index, k) for k in range(len(FIELDS))]
        image, label, depth, normal = (self.read_npy(p) for p in paths)
        check_unit_rgb(f"{self.NAME} image {paths[0]}", image)
        h, w = image.shape[:2]
        for path, array, shape in zip(paths[1:], (label, depth, normal),
                                      ((h, w), (h, w, 1), (h, w, 3))):
            self.check_shape(path, array, shape)
        source = f"{self.NAME} label {paths[1]}"
        check_dtype(source, label, LABEL_DTYPES, f"class indices, {SEG_IGNORE} = ignore")
        check_labels(source, label, self.num_class, SEG_IGNORE)
        check_floats(f"{self.NAME} depth {paths[2]}", depth, 0.0, None, "metres, 0 = invalid")
        check_floats(f"{self.NAME} normal {paths[3]}", normal, -1 - NORMAL_TOLERANCE,
                     1 + NORMAL_TOLERANCE, "unit normal components, 0 = invalid")
        return image, label, depth, normal

    def load_item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        image, label, depth, normal = self.read_arrays(index)
        image, label, depth, normal = self.to_load_shape(
            [image, label[:, :, None], depth, normal], RESIZE_RULES)
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        seg = torch.from_numpy(label[:, :, 0].astype(np.int64))[None]
        depth_t = torch.from_numpy(np.ascontiguousarray(depth.transpose(2, 0, 1))).float()
        normal_t = torch.from_numpy(np.ascontiguousarray(normal.transpose(2, 0, 1))).float()
        if rng is not None:
            img, seg, depth_t, normal_t = scale_flip_crop(
                img, seg, depth_t, normal_t, self.scales, self.crop_h, self.crop_w, rng)
        return {"img": 2.0 * img - 1.0, "seg": seg, "depth": depth_t, "normal": normal_t,
                "name": f"{index}.npy"}


def scale_flip_crop(img: torch.Tensor, seg: torch.Tensor, depth: torch.Tensor,
                    normal: torch.Tensor, scales: Sequence[float], crop_h: int, crop_w: int,
                    rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """MTAN's train augmentation of one sample (CxHxW tensors; see the module docstring)."""
    scale = float(scales[int(rng.integers(len(scales)))])
    flip = bool(rng.random() > 0.5)
    h, w = img.shape[-2:]
    size = (int(h * scale), int(w * scale))
    img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False,
                        antialias=True)[0]
    seg, depth, normal = (F.interpolate(t[None].float(), size=size, mode="nearest")[0]
                          for t in (seg, depth, normal))
    pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
    if pad_h >= size[0] or pad_w >= size[1]:
        raise ValueError(f"NYUv2-MTAN scale {scale:g} makes a {h}x{w} sample {size[0]}x{size[1]}: "
                         f"too small to reflect-pad to the {crop_h}x{crop_w} crop")
    if pad_h or pad_w:
        img = F.pad(img[None], (0, pad_w, 0, pad_h), mode="reflect")[0]
        seg = F.pad(seg, (0, pad_w, 0, pad_h), value=SEG_IGNORE)
        depth = F.pad(depth, (0, pad_w, 0, pad_h), value=0.0)
        normal = F.pad(normal, (0, pad_w, 0, pad_h), value=0.0)
    top = int(rng.integers(0, img.shape[-2] - crop_h + 1))
    left = int(rng.integers(0, img.shape[-1] - crop_w + 1))
    window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
    img, seg, depth, normal = (t[window] for t in (img, seg, depth, normal))
    if flip:
        img, seg, depth, normal = (t.flip(-1) for t in (img, seg, depth, normal))
        normal = torch.cat((-normal[:1], normal[1:]))
    return (img.contiguous(), seg.long().contiguous(), (depth / scale).contiguous(),
            normal.contiguous())
