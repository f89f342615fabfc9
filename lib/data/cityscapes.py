"""Cityscapes (seg + depth) in AdaShare's layout (``cfg.DATASET == "cityscapes"``).

``DATA_ROOT/cityscape.json`` = ``{"train": [...], "test": [...]}``, each entry
``[image, depth, label_2, label_7, label_19]``: ``.npy`` paths relative to DATA_ROOT.
Files (checked on every read, naming the file): image ``H x W x 3`` float RGB in [0, 1];
depth ``H x W x 1`` float, finite, >= 0 (0 = invalid); labels ``H x W`` of integral values,
classes ``0..n-1`` of their set (n = 2, 7, 19) or -1 = void, stored as a signed integer or a
float dtype (AdaShare's code reads any of them alike; the files' own dtype is not documented).

Item (test split: exactly the reference loader's item):

    img                     float32 3xHxW  BGR, image*255 minus IMG_MEAN_BGR
    depth                   float32 1xHxW  0 = invalid
    label2, label7, label19 1xHxW          the files' dtype (test) / int64 (train), -1 = void
    seg                     1xHxW          the label set with ``num_class`` classes (19 default)
    name                    str            the image's file name

Train split: scale / flip / pad / crop; padding is -mean in ``img``, 0 in ``depth``, -1 in the
labels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import LayoutDataset, image_tensor, to_chw
from .checks import LABEL_DTYPES, check_dtype, check_floats, check_labels, check_unit_rgb
from .transforms import BILINEAR, NEAREST, augment

CITYSCAPES_IGNORE = -1
LABEL_SETS = {2: "label2", 7: "label7", 19: "label19", -1: "label19"}
LABEL_FILE_CLASSES = (2, 7, 19)          # classes in label_2, label_7, label_19
RESIZE_RULES = (BILINEAR, NEAREST, NEAREST, NEAREST, NEAREST)   # image, depth, 3 label sets


class CityScapes(LayoutDataset):
    NAME = "CityScapes"
    LAYOUT = "cityscapes"
    INDEX_FILE = "cityscape.json"
    ENTRY_FIELDS = ("image", "depth", "label_2", "label_7", "label_19")
    EXPECTED = ("DATA_ROOT/cityscape.json {'train': [...], 'test': [...]} of "
                "[image, depth, label_2, label_7, label_19] .npy paths relative to DATA_ROOT")

    def __init__(self, root, split: str = "train", crop_h: int | None = None,
                 crop_w: int | None = None, seed: int = 0, augment: bool | None = None,
                 load_shape: tuple[int, int] | None = None, num_class: int = 19):
        if num_class not in LABEL_SETS:
            raise ValueError(f"CityScapes num_class {num_class} is not supported; expected one "
                             f"of {sorted(LABEL_SETS)}")
        super().__init__(root, split, crop_h, crop_w, seed, augment, load_shape)
        self.num_class = num_class

    def read_arrays(self, index: int) -> list[np.ndarray]:
        """image (HxWx3 BGR, 0..255), depth (HxWx1), label2/7/19 (HxWx1), as the reference."""
        paths = [self.file(index, k) for k in range(5)]
        image = self.read_npy(paths[0])
        check_unit_rgb(f"CityScapes image {paths[0]}", image)
        h, w = image.shape[:2]
        depth = self.read_npy(paths[1])
        self.check_shape(paths[1], depth, (h, w, 1))
        check_floats(f"CityScapes depth {paths[1]}", depth, 0.0, None, "depth, 0 = invalid")
        labels = []
        for path, field, num_class in zip(paths[2:], self.ENTRY_FIELDS[2:], LABEL_FILE_CLASSES):
            label = self.read_npy(path)
            self.check_shape(path, label, (h, w))
            source = f"CityScapes {field} {path}"
            check_dtype(source, label, LABEL_DTYPES, f"class indices, {CITYSCAPES_IGNORE} = void")
            check_labels(source, label, num_class, CITYSCAPES_IGNORE)
            labels.append(label[:, :, None])
        return [image[:, :, ::-1] * 255, depth, *labels]

    def load_item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        img, depth, label2, label7, label19 = self.to_load_shape(self.read_arrays(index),
                                                                 RESIZE_RULES)
        if rng is not None:
            (img, depth, label2, label7, label19), _ = augment(
                [img, depth, label2, label7, label19], nearest=[False, True, True, True, True],
                pad_values=[0, 0, CITYSCAPES_IGNORE, CITYSCAPES_IGNORE, CITYSCAPES_IGNORE],
                crop_h=self.crop_h, crop_w=self.crop_w, rng=rng)
            label2, label7, label19 = (x.astype(np.int64) for x in (label2, label7, label19))
        labels = {"label2": to_chw(label2), "label7": to_chw(label7), "label19": to_chw(label19)}
        return {"img": image_tensor(img), "depth": to_chw(depth).float(),
                **labels, "seg": labels[LABEL_SETS[self.num_class]],
                "name": self.entries[index][0].split("/")[-1]}
