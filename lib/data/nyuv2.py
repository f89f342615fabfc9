"""NYU-v2 with 3 tasks in AdaShare's layout (``cfg.DATASET == "nyuv2_3"``).

``DATA_ROOT/nyu_v2_3task.json`` = ``{"train": [...], "test": [...]}``, each entry
``[img/<id>.png, seg/<id>.png, normal_mask/<id>.png, depth/<id>.npy]`` relative to DATA_ROOT.

Files as AdaShare's (checked on every read, naming the file): img 8-bit 3-channel PNG; seg
8-bit single-channel PNG of classes ``0..num_class-1`` and 255; normal_mask 8-bit 3-channel PNG
(every value is a valid encoding); depth float32 ``H x W`` .npy, finite, in
``[0, MAX_DEPTH_M]`` metres (a uint16 file is millimetres and is refused).

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

from .base import LayoutDataset, image_tensor, to_chw
from .checks import check_channels, check_dtype, check_finite, check_labels, check_range
from .transforms import BILINEAR, NEAREST, augment

NYU_IGNORE = 255
NORMAL_X_CHANNEL = 2   # red channel of the PNG once OpenCV has read it as BGR
MAX_DEPTH_M = 20.0     # the Kinect reads up to about 10 m; more means the file is not metres
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
                 load_shape: tuple[int, int] | None = None, reference_flip: bool = False,
                 num_class: int = 40):
        super().__init__(root, split, crop_h, crop_w, seed, augment, load_shape)
        self.reference_flip = reference_flip
        self.num_class = int(num_class)

    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sample's files as the reference reads them: HxWx3 uint8 BGR image, HxWx1 uint8
        seg, HxWx3 uint8 normal (BGR order), HxWx1 depth (the file's dtype)."""
        img_path, seg_path, normal_path, depth_path = (self.file(index, k) for k in range(4))
        # IMREAD_UNCHANGED decodes an 8-bit RGB (grey) PNG exactly as IMREAD_COLOR
        # (IMREAD_GRAYSCALE) does, and lets a 16-bit, grey or RGBA file be refused, not converted.
        img = self.read_cv2(img_path, cv2.IMREAD_UNCHANGED)
        self._check_8bit(img_path, "img", img, 3, "an 8-bit RGB PNG")
        seg = self.read_cv2(seg_path, cv2.IMREAD_UNCHANGED)
        self._check_8bit(seg_path, "seg", seg, None, "an 8-bit single-channel PNG of classes")
        normal = self.read_cv2(normal_path, cv2.IMREAD_UNCHANGED)
        self._check_8bit(normal_path, "normal", normal, 3, "an 8-bit RGB PNG of (n+1)*127.5")
        depth = self.read_npy(depth_path)
        h, w = img.shape[:2]
        self.check_shape(seg_path, seg, (h, w))
        self.check_shape(normal_path, normal, (h, w, 3))
        self.check_shape(depth_path, depth, (h, w))
        check_labels(f"NYUv2 seg {seg_path}", seg, self.num_class, NYU_IGNORE)
        source = f"NYUv2 depth {depth_path}"
        check_dtype(source, depth, (np.float32,), "depth in metres; uint16 files hold millimetres")
        check_finite(source, depth)
        check_range(source, depth, 0.0, MAX_DEPTH_M, "metres, 0 = invalid")
        return img, seg[:, :, None], normal, depth[:, :, None]

    @staticmethod
    def _check_8bit(path, field: str, array: np.ndarray, channels: int | None,
                    expected: str) -> None:
        source = f"NYUv2 {field} {path}"
        check_dtype(source, array, (np.uint8,), expected)
        check_channels(source, array, channels, expected)

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
        return {"img": image_tensor(img), "seg": to_chw(seg),
                "normal": to_chw(normal), "depth": to_chw(depth),
                "name": self.entries[index][0].split("/")[-1]}


def negate_encoded_x(normal: np.ndarray) -> np.ndarray:
    """Negate the x component of (n+1)*127.5-encoded normals, leaving invalid (255,255,255)."""
    out = normal.copy()
    valid = ~(normal == NYU_IGNORE).all(axis=2)
    out[..., NORMAL_X_CHANNEL][valid] = 255 - normal[..., NORMAL_X_CHANNEL][valid]
    return out
