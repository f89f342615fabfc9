"""Synthetic data in the min-max framework's layouts, so its loaders run without downloads.

    write_nyuv2_mtan(root, num_train, num_test, height, width, seed=0)
        MTAN's NYUv2 layout ``{train,val}/{image,label,depth,normal}/<i>.npy``: the indoor
        scenes of ``nyuv2_3`` (ray cast, NYU-40 labels grouped into the 13 classes).
    write_cifar100(root, train_per_class, test_per_class, seed=0)
        ``cifar-100-python/{train,test,meta}`` pickles, written byte for byte in the form of
        the original files (Python 2 protocol-2 pickles of dicts, lists, strings and a uint8
        array): per fine class, a shape of its own on a background of its own, jittered.
    prepare_minmax_synthetic(cfg, root=None, ...) -> str
        The complete dataset ``cfg.DATASET`` needs, written once under a parameter-named folder.

As the other synthetic writers: sample ``i`` depends only on ``(seed, split, i)``; a dataset is
written into a temporary sibling folder and renamed into place with ``synthetic.json`` (its
parameters) written last, so a crash never leaves a folder that looks complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..cifar_classes import CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, FINE_TO_COARSE
from . import MARKER, REPO_ROOT, read_marker
from .layouts import sample_frame

MINMAX_GENERATOR_VERSION = 1
MINMAX_LAYOUTS = ("nyuv2_mtan", "cifar100_mtl")
# NYU-40 (0-based, AdaShare's order) -> the 13 classes of MTAN's NYUv2 (0-based): bed, books,
# ceiling, chair, floor, furniture, objects, picture, sofa, table, tv, wall, window. The
# standard grouping (ankurhanda/nyuv2-meta-data class13Mapping), one entry per NYU-40 class.
NYU40_TO_13 = np.array([11, 4, 5, 0, 3, 8, 9, 11, 12, 5, 7, 5, 12, 9, 5, 12, 5, 6, 6, 4,
                        6, 2, 1, 5, 10, 6, 6, 6, 6, 6, 6, 5, 6, 6, 6, 6, 6, 6, 5, 6])
NYU13_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
               "sofa", "table", "tv", "wall", "window")
CIFAR_SPLITS = {"train": 0, "test": 1}
DEFAULT_COUNTS = {"nyuv2_mtan": {"tiny": (8, 4), None: (320, 80)},
                  "cifar100_mtl": {"tiny": (2, 1), None: (20, 5)}}   # CIFAR: per fine class


def _params(layout: str, num_train: int, num_test: int, height: int, width: int,
            seed: int) -> dict[str, Any]:
    return {"layout": layout, "num_train": int(num_train), "num_test": int(num_test),
            "height": int(height), "width": int(width), "seed": int(seed),
            "generator_version": MINMAX_GENERATOR_VERSION}


@contextlib.contextmanager
def _atomic_folder(root: Path, params: dict[str, Any]) -> Iterator[Path]:
    """Yield a temporary sibling of ``root`` to fill; on success write the marker and rename."""
    from ...utils import atomic_write_json   # imported here: it pulls in torch

    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"synthetic dataset target {root} already exists and is not an "
                              f"empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        atomic_write_json(params, tmp / MARKER)
        if root.exists():
            root.rmdir()
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_counts(num_train: int, num_test: int) -> None:
    if num_train < 0 or num_test < 0:
        raise ValueError(f"sample counts must be >= 0, got train={num_train} test={num_test}")


# ---------------------------------------------------------------------- NYUv2 (MTAN layout)
def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def write_nyuv2_mtan(root: str | os.PathLike, num_train: int, num_test: int, height: int,
                     width: int, seed: int = 0, progress: bool = False) -> Path:
    """Write ``num_train`` + ``num_test`` samples at ``height x width`` in MTAN's layout.

    Files: image float32 HxWx3 in [0, 1]; label float32 HxW, 0..12 or -1; depth float32
    HxWx1, 0 where the sensor model has no depth; normal float32 HxWx3 unit vectors, 0 where
    depth is invalid. ``root`` must not exist or be empty. Returns ``root``.
    """
    _check_counts(num_train, num_test)
    if height < 32 or width < 32:
        raise ValueError(f"NYUv2-MTAN synthetic images must be at least 32x32 (SegNet pools "
                         f"five times), got {height}x{width}")
    root = Path(root)
    jobs = [("train", "train", i) for i in range(num_train)]
    jobs += [("test", "val", i) for i in range(num_test)]
    with _atomic_folder(root, _params("nyuv2_mtan", num_train, num_test, height, width,
                                      seed)) as tmp:
        for split, folder, i in tqdm(jobs, disable=not progress, desc="synthetic nyuv2_mtan"):
            frame = sample_frame("nyuv2_3", seed, split, i, height, width)
            label = np.where(frame.label < 0, -1, NYU40_TO_13[np.maximum(frame.label, 0)])
            valid = frame.depth_valid
            base = tmp / folder
            _save(base / "image" / f"{i}.npy", frame.image.astype(np.float32) / 255.0)
            _save(base / "label" / f"{i}.npy", label.astype(np.float32))
            _save(base / "depth" / f"{i}.npy",
                  np.where(valid, frame.depth, 0).astype(np.float32)[:, :, None])
            _save(base / "normal" / f"{i}.npy",
                  np.where(valid[:, :, None], frame.normal, 0).astype(np.float32))
    return root


# ---------------------------------------------------------------------- CIFAR-100
class _Py2Pickle:
    """Protocol-2 pickle of dicts, lists, str, int, None and C-contiguous numpy arrays, in the
    form Python 2's cPickle gave the CIFAR files (byte strings, ``numpy.core.multiarray``)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def dumps(self, obj) -> bytes:
        self.emit(obj)
        self.out += b"."
        return bytes(self.out)

    def emit(self, obj) -> None:
        out = self.out
        if obj is None:
            out += b"N"
        elif isinstance(obj, bool):
            out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                out += b"K" + bytes([obj])
            elif 0 <= obj < 65536:
                out += b"M" + struct.pack("<H", obj)
            else:
                out += b"J" + struct.pack("<i", obj)
        elif isinstance(obj, (str, bytes)):
            raw = obj.encode("latin1") if isinstance(obj, str) else obj
            out += (b"U" + bytes([len(raw)]) if len(raw) < 256
                    else b"T" + struct.pack("<I", len(raw))) + raw
        elif isinstance(obj, tuple):
            out += b"("
            for item in obj:
                self.emit(item)
            out += b"t"
        elif isinstance(obj, list):
            out += b"]"
            if obj:
                out += b"("
                for item in obj:
                    self.emit(item)
                out += b"e"
        elif isinstance(obj, dict):
            out += b"}"
            if obj:
                out += b"("
                for key, value in obj.items():
                    self.emit(key)
                    self.emit(value)
                out += b"u"
        elif isinstance(obj, np.ndarray):
            # _reconstruct(ndarray, (0,), "b"), then BUILD with the array's state.
            out += b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n"
            self.emit((0,))
            self.emit("b")
            out += b"tR"
            self._array_state(np.ascontiguousarray(obj))
        else:
            raise TypeError(f"cannot write {type(obj).__name__} in a CIFAR pickle")

    def _array_state(self, array: np.ndarray) -> None:
        out = self.out
        out += b"("
        self.emit(1)
        self.emit(tuple(int(s) for s in array.shape))
        out += b"cnumpy\ndtype\n"
        self.emit((array.dtype.str[1:], 0, 1))
        out += b"R"
        self.emit((3, array.dtype.str[0] if array.dtype.itemsize > 1 else "|", None, None,
                   None, -1, -1, 0))
        out += b"b"
        self.emit(False)
        self.emit(array.tobytes())
        out += b"t"
        out += b"b"


CIFAR_BATCH_LABELS = {"train": "training batch 1 of 1", "test": "testing batch 1 of 1"}


def _hue_color(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    hsv = np.array([[[hue * 179, saturation * 255, value * 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def cifar_image(fine: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB image of fine class ``fine``: its domain's background tint, and a shape
    chosen by the class's ``rank`` in its domain (disc, square, triangle, bars, cross) in a
    colour of the class's own, with jittered position, size, brightness and noise."""
    coarse = int(FINE_TO_COARSE[fine])
    image = np.empty((32, 32, 3), np.uint8)
    image[:] = _hue_color((coarse * 0.618) % 1.0, 0.35, float(rng.uniform(0.35, 0.65)))
    color = _hue_color((fine * 0.381966) % 1.0, 0.8, float(rng.uniform(0.7, 1.0)))
    cx, cy = (int(c) for c in rng.integers(10, 23, size=2))
    r = int(rng.integers(6, 11))
    if rank == 0:
        cv2.circle(image, (cx, cy), r, color, -1)
    elif rank == 1:
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    elif rank == 2:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(image, [pts], color)
    elif rank == 3:
        for y in range(cy - r, cy + r + 1, 4):
            cv2.line(image, (cx - r, y), (cx + r, y), color, 2)
    else:
        cv2.line(image, (cx - r, cy), (cx + r, cy), color, 3)
        cv2.line(image, (cx, cy - r), (cx, cy + r), color, 3)
    noise = rng.normal(0.0, 8.0, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def cifar_split(per_class: int, split: str, seed: int) -> dict[str, Any]:
    """The dict one CIFAR-100 split file holds: ``per_class`` images of each fine class, in a
    seeded order."""
    order = np.random.default_rng([seed % 2**63, CIFAR_SPLITS[split]]).permutation(
        100 * per_class)
    fine = (np.arange(100 * per_class) // max(per_class, 1))[order] if per_class else order
    ranks = {f: r for c in range(20)
             for r, f in enumerate(np.flatnonzero(FINE_TO_COARSE == c))}
    images, names = [], []
    for i, f in enumerate(fine.tolist()):
        rng = np.random.default_rng([seed % 2**63, CIFAR_SPLITS[split], i])
        images.append(cifar_image(f, ranks[f], rng).transpose(2, 0, 1).reshape(-1))
        names.append(f"{CIFAR100_FINE_NAMES[f]}_s_{i:06d}.png")
    data = np.stack(images) if images else np.zeros((0, 3072), np.uint8)
    return {"filenames": names, "batch_label": CIFAR_BATCH_LABELS[split],
            "fine_labels": fine.tolist(), "coarse_labels": FINE_TO_COARSE[fine].tolist(),
            "data": data}


def write_cifar100(root: str | os.PathLike, train_per_class: int, test_per_class: int,
                   seed: int = 0) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` with ``train_per_class`` /
    ``test_per_class`` images of each fine class. ``root`` must not exist or be empty."""
    _check_counts(train_per_class, test_per_class)
    root = Path(root)
    params = _params("cifar100_mtl", train_per_class, test_per_class, 32, 32, seed)
    with _atomic_folder(root, params) as tmp:
        folder = tmp / "cifar-100-python"
        folder.mkdir()
        meta = {"fine_label_names": list(CIFAR100_FINE_NAMES),
                "coarse_label_names": list(CIFAR100_COARSE_NAMES)}
        (folder / "meta").write_bytes(_Py2Pickle().dumps(meta))
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            (folder / split).write_bytes(_Py2Pickle().dumps(cifar_split(per_class, split, seed)))
    return root


# ---------------------------------------------------------------------- from a config
def default_root(layout: str, num_train: int, num_test: int, height: int, width: int,
                 seed: int = 0) -> Path:
    """``$CUT_SYNTHETIC_DIR`` (default ``<repo>/data/synthetic``) / a name of all parameters."""
    base = Path(os.environ.get("CUT_SYNTHETIC_DIR", REPO_ROOT / "data" / "synthetic"))
    return base / (f"{layout}_{height}x{width}_train{num_train}_test{num_test}_seed{seed}"
                   f"_m{MINMAX_GENERATOR_VERSION}")


def prepare_minmax_synthetic(cfg, root: str | os.PathLike | None = None,
                             num_train: int | None = None, num_test: int | None = None,
                             seed: int = 0, progress: bool = True) -> str:
    """Root of a complete synthetic dataset for ``cfg.DATASET`` (``nyuv2_mtan`` at
    ``cfg.IMAGE_SHAPE``, or ``cifar100_mtl``), written only if it is not there yet.

    Counts are samples per split for NYUv2 (default 8/4 for the ``tiny`` profile, else
    320/80) and images per fine class for CIFAR-100 (2/1, else 20/5). A folder holding
    anything else is never overwritten (error).
    """
    layout = cfg.DATASET
    if layout not in MINMAX_LAYOUTS:
        raise ValueError(f"no min-max synthetic layout {layout!r}; expected one of "
                         f"{MINMAX_LAYOUTS}")
    counts = DEFAULT_COUNTS[layout]
    default_train, default_test = counts.get(getattr(cfg, "PROFILE", None), counts[None])
    num_train = default_train if num_train is None else int(num_train)
    num_test = default_test if num_test is None else int(num_test)
    height, width = (int(x) for x in cfg.IMAGE_SHAPE) if layout == "nyuv2_mtan" else (32, 32)
    params = _params(layout, num_train, num_test, height, width, seed)
    root = Path(root) if root is not None else default_root(layout, num_train, num_test,
                                                            height, width, seed)
    if read_marker(root) == params:
        return str(root)
    if root.exists() and root.is_dir() and any(root.iterdir()):
        found = read_marker(root)
        what = f"a synthetic dataset with other parameters {found}" if found else "other files"
        raise FileExistsError(f"{root} holds {what}; expected {MARKER} with {params}")
    try:
        if layout == "nyuv2_mtan":
            write_nyuv2_mtan(root, num_train, num_test, height, width, seed, progress)
        else:
            write_cifar100(root, num_train, num_test, seed)
    except OSError:
        # Another process may have finished the same dataset first (rename onto it failed).
        if read_marker(root) != params:
            raise
    return str(root)
