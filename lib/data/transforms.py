"""Frame transforms: the load-time resize of a profile, and the reference's train-time augmentation
(random scale, horizontal flip, centred pad, random crop).

Every function takes the sample's arrays as ``H x W x C`` numpy arrays and a
``numpy.random.Generator``; nothing here touches global random state, so an item's augmentation
is a pure function of its generator (see :meth:`lib.data.base.LayoutDataset.item_rng`).
The draws happen in the reference's order: scale, flip, crop row offset, crop column offset.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# OpenCV cannot resize these dtypes; they are resized through a supported one and cast back.
_CV2_PROXY_DTYPE = {np.dtype(np.int64): np.int32, np.dtype(np.bool_): np.uint8,
                    np.dtype(np.uint32): np.float64, np.dtype(np.float16): np.float32}


def resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    """``cv2.resize`` to ``height x width`` (bilinear or nearest) that keeps the channel axis."""
    src = np.ascontiguousarray(array)
    proxy = _CV2_PROXY_DTYPE.get(src.dtype)
    if proxy is not None:
        src = src.astype(proxy)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.resize(src, (width, height), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    return out.astype(array.dtype, copy=False) if proxy is not None else out


# How each kind of map is resized to a profile's frame size (:func:`resize_frame`).
BILINEAR = "bilinear"          # images and continuous maps (Taskonomy keypoints, edges)
NEAREST = "nearest"            # labels, masks, depth (values unchanged), encoded normals
UNIT_VECTORS = "unit_vectors"  # decoded normals: bilinear, then re-normalised to unit length
RESIZE_RULES = (BILINEAR, NEAREST, UNIT_VECTORS)


def resize_frame(arrays: Sequence[np.ndarray], rules: Sequence[str], height: int,
                 width: int) -> list[np.ndarray]:
    """A frame's ``H x W x C`` arrays resized to ``height x width``, each by its rule.

    A frame already of that size is returned unchanged (the same arrays), so data stored at
    the target size reads bit for bit as without the resize. Vectors of (near) zero length
    stay as they are under :data:`UNIT_VECTORS` (there is no direction to keep).
    """
    if arrays[0].shape[:2] == (height, width):
        return list(arrays)
    out = []
    for array, rule in zip(arrays, rules, strict=True):
        if rule not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {rule!r}; expected one of {RESIZE_RULES}")
        resized = resize(array, height, width, nearest=rule == NEAREST)
        if rule == UNIT_VECTORS:
            norm = np.linalg.norm(resized, axis=2, keepdims=True)
            resized = np.where(norm > 1e-6, resized / np.maximum(norm, 1e-6), resized)
            resized = resized.astype(array.dtype, copy=False)
        out.append(resized)
    return out


def random_scale(arrays: Sequence[np.ndarray], nearest: Sequence[bool],
                 rng: np.random.Generator) -> list[np.ndarray]:
    """Rescale all arrays by one factor drawn uniformly from [0.5, 1.5) (sizes truncated)."""
    scale = rng.random() + 0.5
    h, w = arrays[0].shape[:2]
    new_h, new_w = int(h * scale), int(w * scale)
    return [resize(a, new_h, new_w, n) for a, n in zip(arrays, nearest)]


def random_mirror(arrays: Sequence[np.ndarray], rng: np.random.Generator
                  ) -> tuple[list[np.ndarray], bool]:
    """Flip all arrays left-right with probability 0.5; returns them and whether it flipped."""
    flipped = rng.random() > 0.5
    if not flipped:
        return list(arrays), False
    return [a[:, ::-1] for a in arrays], True


def pad_and_random_crop(arrays: Sequence[np.ndarray], pad_values: Sequence[float],
                        crop_h: int, crop_w: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Centre-pad each array to at least ``crop_h x crop_w`` with its pad value, then crop at a
    random offset shared by all arrays (the reference's ``__random_crop_and_pad...__``)."""
    h, w = arrays[0].shape[:2]
    pad_h, pad_w = max(h, crop_h), max(w, crop_w)
    off_h, off_w = (pad_h - h) // 2, (pad_w - w) // 2
    start_h = int(rng.integers(0, pad_h - crop_h + 1))
    start_w = int(rng.integers(0, pad_w - crop_w + 1))
    out = []
    for a, value in zip(arrays, pad_values):
        padded = np.full((pad_h, pad_w, a.shape[2]), value, dtype=a.dtype)
        padded[off_h:off_h + h, off_w:off_w + w] = a
        out.append(np.ascontiguousarray(padded[start_h:start_h + crop_h, start_w:start_w + crop_w]))
    return out


def augment(arrays: Sequence[np.ndarray], nearest: Sequence[bool], pad_values: Sequence[float],
            crop_h: int, crop_w: int, rng: np.random.Generator) -> tuple[list[np.ndarray], bool]:
    """Scale, mirror, pad and crop, in the reference's order; returns arrays and the flip flag."""
    scaled = random_scale(arrays, nearest, rng)
    mirrored, flipped = random_mirror(scaled, rng)
    return pad_and_random_crop(mirrored, pad_values, crop_h, crop_w, rng), flipped
