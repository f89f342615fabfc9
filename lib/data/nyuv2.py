"""NYU-v2 with 3 tasks in AdaShare's layout (``cfg.DATASET == "nyuv2_3"``).

``DATA_ROOT/nyu_v2_3task.json`` = ``{"train": [...], "test": [...]}``, each entry
``[img/<id>.png, seg/<id>.png, normal_mask/<id>.png, depth/<id>.npy]`` relative to DATA_ROOT.

Item (test split: exactly the reference loader's item):

    img     float32 3xHxW  BGR, 0..255 minus IMG_MEAN_BGR
    seg     uint8   1xHxW  class 0..39, 255 = ignore
    normal  uint8   3xHxW  the PNG read by OpenCV (BGR channel order), encoded (n+1)*127.5,
                           (255, 255, 255) = invalid; never decoded (the reference's convention)
    depth   float32 1xHxW  metres, 0 = invalid
    name    str            the image's file name

Train split: scale / flip / pad / crop to ``crop_h x crop_w``; padding is -mean in ``img``,
255 in ``seg`` and ``normal``, 0 in ``depth``. The reference's train-mode ``depth`` is float64;
here it stays float32 (same values). The reference's flip leaves normals unchanged, which
mirrors the image but not the x axis of the normals; by default the flip here negates x (the
PNG's red channel, i.e. OpenCV channel 2: ``v -> 255 - v`` on valid pixels).
``reference_flip=True`` keeps the reference's behaviour.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .base import LayoutDataset, subtract_mean, to_chw
from .transforms import BILINEAR, NEAREST, augment

NYU_IGNORE = 255
NORMAL_X_CHANNEL = 2   # red channel of the PNG once OpenCV has read it as BGR
# Load-time resize of img, seg, normal, depth: normals stay encoded (and 255 = invalid), so
# they, like the labels and depth, are sampled, never blended.
RESIZE_RULES = (BILINEAR, NEAREST, NEAREST, NEAREST)


class NYUv2(LayoutDataset):
    NAME = "NYUv2"
    LAYOUT = "nyuv2_3"
    INDEX_FILE = "nyu_v2_3task.json"
    ENTRY_FIELDS = ("img", "seg", "normal", "depth")
    EXPECTED = ("DATA_ROOT/nyu_v2_3task.json {'train': [...], 'test': [...]} of "
                "[img/*.png, seg/*.png, normal_mask/*.png, depth/*.npy] relative to DATA_ROOT")

    def __init__(self, root, split: str = "train", crop_h: int | None = None,
                 crop_w: int | None = None, seed: int = 0, augment: bool | None = None,
                 load_shape: tuple[int, int] | None = None, reference_flip: bool = False):
        super().__init__(root, split, crop_h, crop_w, seed, augment, load_shape)
        self.reference_flip = reference_flip

    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sample's files as the reference reads them: HxWx3 uint8 BGR image, HxWx1 uint8
        seg, HxWx3 uint8 normal (BGR order), HxWx1 depth (the file's dtype)."""
        img_path, seg_path, normal_path, depth_path = (self.file(index, k) for k in range(4))
        img = self.read_cv2(img_path, cv2.IMREAD_COLOR)
        seg = self.read_cv2(seg_path, cv2.IMREAD_GRAYSCALE)[:, :, None]
        normal = self.read_cv2(normal_path, cv2.IMREAD_COLOR)
        depth = self.read_npy(depth_path)
        h, w = img.shape[:2]
        self.check_shape(seg_path, seg, (h, w, 1))
        self.check_shape(normal_path, normal, (h, w, 3))
        self.check_shape(depth_path, depth, (h, w))
        return img, seg, normal, depth[:, :, None]

    def load_item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        img, seg, normal, depth = self.to_load_shape(self.read_arrays(index), RESIZE_RULES)
        if rng is not None:
            (img, seg, normal, depth), flipped = augment(
                [img, seg, normal, depth], nearest=[False, True, True, True],
                pad_values=[0, NYU_IGNORE, NYU_IGNORE, 0], crop_h=self.crop_h,
                crop_w=self.crop_w, rng=rng)
            if flipped and not self.reference_flip:
                normal = negate_encoded_x(normal)
            depth = depth.astype(np.float32, copy=False)
        return {"img": to_chw(subtract_mean(img)).float(), "seg": to_chw(seg),
                "normal": to_chw(normal), "depth": to_chw(depth),
                "name": self.entries[index][0].split("/")[-1]}


def negate_encoded_x(normal: np.ndarray) -> np.ndarray:
    """Negate the x component of (n+1)*127.5-encoded normals, leaving invalid (255,255,255)."""
    out = normal.copy()
    valid = ~(normal == NYU_IGNORE).all(axis=2)
    out[..., NORMAL_X_CHANNEL][valid] = 255 - normal[..., NORMAL_X_CHANNEL][valid]
    return out
