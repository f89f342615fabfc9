"""One synthetic sample per call, and how each AdaShare layout stores it.

:func:`sample_frame` renders sample ``index`` of a split from ``(seed, split, index)`` alone,
then adds each layout's sensor defects (missing depth on glass and in small blobs, unlabeled
boundary pixels, Cityscapes' void ego strip) so that the loaders' masks are exercised.
The ``write_*`` functions store a frame exactly as the real datasets are stored and return its
index-json entry.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from .classes import (CITYSCAPES_CATEGORY2, CITYSCAPES_CATEGORY7, CLASS_SETS,
                      NYU13_SCENE_CLASSES, class_index)
from .render import Frame, render
from .scenes import IndoorStyle, indoor_scene, street_scene

LAYOUTS = ("nyuv2_3", "cityscapes", "taskonomy")
SPLIT_CODES = {"train": 0, "test": 1}
TASKONOMY_DOMAINS = ("rgb", "segment_semantic", "normal", "depth_zbuffer", "keypoints2d",
                     "edge_texture")
TASKONOMY_DEPTH_UNITS = 512.0        # depth_zbuffer units per metre
TASKONOMY_SAMPLES_PER_BUILDING = 16
MAX_STREET_DEPTH = 150.0            # metres; farther street pixels have no depth (as stereo)
# How hard each indoor layout's rooms are (see IndoorStyle).
INDOOR_STYLES = {"nyuv2_3": IndoorStyle(classes=NYU13_SCENE_CLASSES), "taskonomy": IndoorStyle()}


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``: samples are independent of each other."""
    return np.random.default_rng([seed % 2**63, SPLIT_CODES[split], index])


def sample_frame(layout: str, seed: int, split: str, index: int, height: int, width: int,
                 cull: bool = True) -> Frame:
    """Render sample ``index`` of ``split`` for ``layout``, defects included."""
    classes = CLASS_SETS[layout]
    rng = sample_rng(seed, split, index)
    if layout == "cityscapes":
        scene = street_scene(classes, rng, width)
    elif layout == "nyuv2_3":
        structure = {k: class_index(classes, k) for k in ("wall", "floor", "ceiling")}
        scene = indoor_scene(classes, rng, width, structure, INDOOR_STYLES[layout])
    else:
        scene = indoor_scene(classes, rng, width, {"wall": 0, "floor": 0, "ceiling": 0},
                             INDOOR_STYLES[layout])
    frame = render(scene, height, width, rng, cull)
    return add_defects(frame, layout, rng)


def add_defects(frame: Frame, layout: str, rng: np.random.Generator) -> Frame:
    """Invalid depth (glass/screens half of the time, a few blobs) and unlabeled pixels."""
    h, w = frame.label.shape
    valid = frame.depth_valid.copy()
    if rng.random() < 0.5:
        valid &= ~frame.unreliable
    if rng.random() < 0.5:
        holes = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = tuple(int(max(1, rng.uniform(0.015, 0.06) * min(h, w))) for _ in range(2))
            cv2.ellipse(holes, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        valid &= holes == 0
    if layout == "cityscapes":
        valid &= frame.depth < MAX_STREET_DEPTH
    label = frame.label.copy()
    if rng.random() < 0.4:
        boundary = np.zeros((h, w), bool)
        boundary[:, 1:] |= label[:, 1:] != label[:, :-1]
        boundary[1:, :] |= label[1:, :] != label[:-1, :]
        label[boundary & (rng.random((h, w)) < 0.5)] = -1
    if layout == "cityscapes" and rng.random() < 0.5:
        label[h - max(1, int(h * rng.uniform(0.03, 0.1))):] = -1      # ego vehicle: void
    return replace(frame, depth_valid=valid, label=label)


def encode_normals(normal: np.ndarray) -> np.ndarray:
    """Unit normals -> 8-bit ``(n+1)*127.5``, capped at 254 so no valid pixel reads as invalid."""
    return np.clip(np.round((normal + 1.0) * 127.5), 0, 254).astype(np.uint8)


def _imwrite(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write image {path}")


def _npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def write_nyuv2(root: Path, split: str, index: int, sample_id: int, frame: Frame) -> list[str]:
    """img/<id>.png (BGR file of the RGB image), seg/<id>.png (255 = ignore),
    normal_mask/<id>.png ((n+1)*127.5 RGB, (255,255,255) where depth is invalid),
    depth/<id>.npy (float32 metres, 0 = invalid)."""
    name = f"{sample_id:06d}"
    rel = [f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"]
    _imwrite(root / rel[0], frame.image[:, :, ::-1])
    _imwrite(root / rel[1], np.where(frame.label < 0, 255, frame.label).astype(np.uint8))
    normal = encode_normals(frame.normal)
    normal[~frame.depth_valid] = 255
    _imwrite(root / rel[2], normal[:, :, ::-1])
    _npy(root / rel[3], np.where(frame.depth_valid, frame.depth, 0).astype(np.float32))
    return rel


def write_cityscapes(root: Path, split: str, index: int, sample_id: int, frame: Frame) -> list[str]:
    """<split>/image/<i>.npy (HxWx3 RGB float32 in [0,1]), <split>/depth/<i>.npy (HxWx1 float32
    metres, 0 = invalid), <split>/label_{2,7,19}/<i>.npy (HxW float32, -1 = void)."""
    rel = [f"{split}/{d}/{index}.npy" for d in ("image", "depth", "label_2", "label_7", "label_19")]
    _npy(root / rel[0], (frame.image.astype(np.float32) / 255))
    _npy(root / rel[1], np.where(frame.depth_valid, frame.depth, 0).astype(np.float32)[:, :, None])
    label19 = frame.label.astype(np.int64)
    void = label19 < 0
    for path, table in ((rel[2], CITYSCAPES_CATEGORY2), (rel[3], CITYSCAPES_CATEGORY7)):
        mapped = np.asarray(table)[np.maximum(label19, 0)]
        _npy(root / path, np.where(void, -1, mapped).astype(np.float32))
    _npy(root / rel[4], label19.astype(np.float32))
    return rel


def write_taskonomy(root: Path, split: str, index: int, sample_id: int, frame: Frame) -> list[str]:
    """Six PNGs at <domain>/taskonomy/<building>/<file>; the entry lists <building>/<domain>/<file>.
    rgb 8-bit RGB; segment_semantic 8-bit class+1 (0 = unlabeled); normal 8-bit (n+1)*127.5;
    depth_zbuffer 16-bit 1/512 m (65535 = missing); keypoints2d 16-bit k*0.005*2^16;
    edge_texture 16-bit e*0.08*2^16."""
    building = f"synth{split}{sample_id // TASKONOMY_SAMPLES_PER_BUILDING:03d}"
    depth = np.where(frame.depth_valid,
                     np.clip(np.round(frame.depth * TASKONOMY_DEPTH_UNITS), 0, 64499), 65535)
    maps = {
        "rgb": frame.image[:, :, ::-1],
        "segment_semantic": (frame.label.astype(np.int64) + 1).astype(np.uint8),
        "normal": encode_normals(frame.normal)[:, :, ::-1],
        "depth_zbuffer": depth.astype(np.uint16),
        "keypoints2d": np.round(frame.keypoint * 0.005 * 2 ** 16).astype(np.uint16),
        "edge_texture": np.round(frame.edge * 0.08 * 2 ** 16).astype(np.uint16),
    }
    entry = []
    for domain in TASKONOMY_DOMAINS:
        file = f"point_{sample_id}_view_0_domain_{domain}.png"
        _imwrite(root / domain / "taskonomy" / building / file, maps[domain])
        entry.append(f"{building}/{domain}/{file}")
    return entry


WRITERS = {"nyuv2_3": write_nyuv2, "cityscapes": write_cityscapes, "taskonomy": write_taskonomy}
INDEX_FILES = {"nyuv2_3": "nyu_v2_3task.json", "cityscapes": "cityscape.json",
               "taskonomy": "taskonomy.json"}


def taskonomy_prior(class_counts: np.ndarray, mix: float = 0.5) -> np.ndarray:
    """Per-class CE weights from class frequencies, Taskonomy-style: the inverse of a mix of
    the empirical and the uniform distribution, normalised to an expected weight of 1."""
    p = class_counts / max(class_counts.sum(), 1)
    k = len(class_counts)
    weights = 1.0 / ((1 - mix) * p + mix / k)
    return (weights / (p * weights).sum() if p.sum() > 0 else weights).astype(np.float32)
