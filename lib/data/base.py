"""What the three AdaShare layouts share: the index json, path checks, per-item seeded RNG, the
load-time resize.

Load size: with ``load_shape=None`` (the reference) frames are read at their stored size;
with ``load_shape=(H, W)`` every frame, train and test, is resized to ``H x W`` right after it
is read and checked, before any augmentation, by the rule of each map
(:func:`lib.data.transforms.resize_frame`; each reader's ``RESIZE_RULES``).

Indexing: ``ds[i]`` augments item ``i`` with ``ds.epoch`` (default 0, see :meth:`set_epoch`);
``ds[(epoch, i)]`` names the epoch explicitly (what :func:`lib.data.build_loader`'s sampler
yields, so augmentation changes every epoch yet is reproducible, also with worker processes).
An item's augmentation depends only on ``(seed, epoch, i)``, never on global random state.
"""
from __future__ import annotations

import abc
import json
import operator
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from .transforms import resize_frame

from lib.tasks import IMG_MEAN_BGR as _MEAN

# The image mean of the task table (lib.tasks), as the loaders subtract it.
IMG_MEAN_BGR = np.array(_MEAN, dtype=np.float32)

SPLITS = ("train", "test")


class LayoutDataset(torch.utils.data.Dataset, abc.ABC):
    """Base of the on-disk layout readers; subclasses define the layout and :meth:`load_item`."""

    NAME = ""            # class name used in messages
    LAYOUT = ""          # cfg.DATASET value
    INDEX_FILE = ""      # json at the root
    ENTRY_FIELDS: tuple[str, ...] = ()   # what each index entry lists, in order
    EXPECTED = ""        # one-line description of the layout for error messages

    def __init__(self, root: str | Path, split: str = "train", crop_h: int | None = None,
                 crop_w: int | None = None, seed: int = 0, augment: bool | None = None,
                 load_shape: Sequence[int] | None = None):
        if split not in SPLITS:
            raise ValueError(f"{self.NAME} split {split!r} is not one of {SPLITS}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.NAME} data root {self.root} does not exist "
                                    f"(expected {self.EXPECTED})")
        self.index_path = self.root / self.INDEX_FILE
        self.split = split
        self.entries = self._read_index()
        self.augment = (split == "train") if augment is None else bool(augment)
        self.crop_h, self.crop_w = self._crop_size(crop_h, crop_w)
        self.seed = int(seed)
        self.epoch = 0
        self.load_shape = self._check_load_shape(load_shape)

    # -- index -------------------------------------------------------------------------------
    def _read_index(self) -> list[list[str]]:
        if not self.index_path.is_file():
            raise FileNotFoundError(f"{self.NAME} index {self.index_path} not found "
                                    f"(expected {self.EXPECTED})")
        try:
            info = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.NAME} index {self.index_path} is not valid JSON "
                             f"({exc}); expected {self.EXPECTED}") from None
        if not isinstance(info, dict) or self.split not in info:
            keys = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise ValueError(f"{self.NAME} index {self.index_path} has no {self.split!r} list "
                             f"(found {keys}); expected {self.EXPECTED}")
        entries = info[self.split]
        n = len(self.ENTRY_FIELDS)
        for i, entry in enumerate(entries):
            if (not isinstance(entry, (list, tuple)) or len(entry) != n
                    or not all(isinstance(p, str) for p in entry)):
                raise ValueError(f"{self.NAME} index {self.index_path} {self.split}[{i}] is "
                                 f"{entry!r}; expected {n} relative paths "
                                 f"[{', '.join(self.ENTRY_FIELDS)}]")
        return [self.rewrite_entry(list(e)) for e in entries]

    def rewrite_entry(self, entry: list[str]) -> list[str]:
        """Map an index entry to the relative paths of its files (identity but for Taskonomy)."""
        return entry

    def _crop_size(self, crop_h: int | None, crop_w: int | None) -> tuple[int | None, int | None]:
        if self.augment and (crop_h is None or crop_w is None):
            raise ValueError(f"{self.NAME} with augmentation ({self.split} split) needs crop_h "
                             f"and crop_w, got {crop_h}, {crop_w}")
        return crop_h, crop_w

    def _check_load_shape(self, load_shape: Sequence[int] | None) -> tuple[int, int] | None:
        if load_shape is None:
            return None
        shape = tuple(load_shape)
        if len(shape) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
            raise ValueError(f"{self.NAME} load_shape {load_shape!r} is not (height, width) in "
                             f"positive pixels")
        return int(shape[0]), int(shape[1])

    # -- load size ---------------------------------------------------------------------------
    def to_load_shape(self, arrays: Sequence[np.ndarray], rules: Sequence[str]) -> list[np.ndarray]:
        """A frame's ``H x W x C`` arrays at ``load_shape`` (as they are when it is ``None``)."""
        if self.load_shape is None:
            return list(arrays)
        return resize_frame(arrays, rules, *self.load_shape)

    def stored_frame_shape(self, index: int = 0) -> tuple[int, int]:
        """``(H, W)`` of entry ``index``'s image on disk, read from the file header only."""
        path = self.file(index, 0)
        try:
            if path.suffix == ".npy":
                return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape[:2])
            with Image.open(path) as image:
                return image.height, image.width
        except Exception as exc:  # ValueError, OSError, PIL.UnidentifiedImageError
            raise ValueError(f"{self.NAME} cannot read the size of {path}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None

    # -- per-item access ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``ds[i]`` (integer index) to seed augmentation."""
        self.epoch = int(epoch)

    def item_rng(self, index: int, epoch: int) -> np.random.Generator:
        """The generator that decides item ``index``'s augmentation in ``epoch``."""
        return np.random.default_rng([self.seed % 2**63, epoch % 2**63, index])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = self.epoch, key
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.NAME} {self.split} index {index} out of range "
                             f"(size {len(self)})")
        index %= len(self)
        rng = self.item_rng(index, int(epoch)) if self.augment else None
        return self.load_item(index, rng)

    @abc.abstractmethod
    def load_item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read and (when ``rng`` is given) augment entry ``index``."""

    # -- file helpers ------------------------------------------------------------------------
    def file(self, index: int, field: int) -> Path:
        """Absolute path of ``entries[index][field]``; raises if the file is missing."""
        rel = self.entries[index][field]
        path = self.root / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.NAME} {self.ENTRY_FIELDS[field]} file {path} (from {self.index_path.name} "
                f"{self.split}[{index}]) not found (expected {self.EXPECTED})")
        return path

    def check_files(self) -> None:
        """Raise a one-line FileNotFoundError naming the first file the index lists for this
        split that does not exist (and how many are missing): existence only, no file is
        read. Runs check it before any work, so a missing sample cannot stop them mid-way."""
        missing = [(i, field) for i, entry in enumerate(self.entries)
                   for field, rel in enumerate(entry) if not (self.root / rel).is_file()]
        if missing:
            i, field = missing[0]
            total = sum(len(e) for e in self.entries)
            raise FileNotFoundError(
                f"{self.NAME} {self.ENTRY_FIELDS[field]} file {self.root / self.entries[i][field]} "
                f"(from {self.index_path.name} {self.split}[{i}]) not found; {len(missing)} of "
                f"the {total} files of the {self.split} split are missing (expected "
                f"{self.EXPECTED})")

    def read_cv2(self, path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
        array = cv2.imread(str(path), flags)
        if array is None:
            raise ValueError(f"{self.NAME} cannot decode image {path} (corrupt or not an image)")
        return array

    def read_npy(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError, EOFError, OSError, UnpicklingError
            raise ValueError(f"{self.NAME} cannot read array {path}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None

    def check_shape(self, path: Path, array: np.ndarray, shape: Sequence[int]) -> None:
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{self.NAME} {path} has shape {tuple(array.shape)}; expected "
                             f"{tuple(shape)} (same size as the sample's image)")


_MEAN_CHW = IMG_MEAN_BGR.astype(np.float64)[:, None, None]


def image_tensor(img: np.ndarray) -> torch.Tensor:
    """The network input of a BGR ``H x W x 3`` image: ``3 x H x W`` float32, each value the
    float64 difference ``img - IMG_MEAN_BGR`` rounded once to float32, bit for bit the
    reference's ``ToTensor(img.astype(float) - IMG_MEAN).float()``, in one buffered pass
    instead of three full-size float64 copies."""
    out = np.empty((img.shape[2], img.shape[0], img.shape[1]), dtype=np.float32)
    np.subtract(img.transpose(2, 0, 1), _MEAN_CHW, out=out, dtype=np.float64,
                casting="same_kind")
    return torch.from_numpy(out)


def to_chw(array: np.ndarray) -> torch.Tensor:
    """``H x W x C`` numpy array -> ``C x H x W`` tensor (same dtype)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
