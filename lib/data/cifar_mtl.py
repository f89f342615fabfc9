"""CIFAR-100 as 20 five-way classification domains (``cfg.DATASET == "cifar100_mtl"``).

``DATA_ROOT/cifar-100-python/{train,test,meta}``: the standard python-version files (the
layout torchvision downloads). Domain ``d`` (task ``class_{d}``) holds the images of coarse
class ``d`` (2500 train / 500 test); its label is the fine label's rank among the domain's five
fine labels (``np.unique(..., return_inverse=True)``, as the min-max code's ``CIFAR100MTL``).

The files are pickles. They are read with :class:`CifarUnpickler`, which builds only what the
format holds (dicts, lists, strings, numbers and numpy arrays of numbers) and refuses every
other global a file names, so a crafted file cannot run code; the arrays and labels are then
checked (shapes, dtype, ranges, the fine-to-coarse mapping of CIFAR-100).

Item of a domain:

    img     float32 3x32x32  RGB / 255, normalised with CIFAR-100's mean and std
    label   int64            0..4
    name    str              the file's image name

Train augmentation (``trainer_cifar.py``): a 32x32 crop of the image zero-padded by 4, at a
random offset, then a horizontal flip with probability 1/2; draws, in this order: crop row,
crop column, flip. ``lib.data.build_loader`` steps the domains with
:class:`lib.data.loader.MultiDomainLoader`: one batch per domain per step, ``{task: batch}`` (a
``lib.tasks.TaskBatches``), as the reference's training loop (``next()`` on each domain's
loader); models run each domain's batch through its own path
(``MultiDomainVGG16.forward_task``, via ``lib.models.task_outputs``).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .cifar_classes import FINE_TO_COARSE

CIFAR_DIR = "cifar-100-python"
SPLIT_FILES = {"train": "train", "test": "test"}
IMAGE_SHAPE = (32, 32, 3)
NUM_FINE, NUM_COARSE, CLASSES_PER_DOMAIN = 100, 20, 5
MEAN = (0.5071, 0.4867, 0.4408)   # trainer_cifar.py's Normalize
STD = (0.2675, 0.2565, 0.2761)
PAD = 4


def image_to_rgb(image: np.ndarray) -> np.ndarray:
    """A network input (3 x H x W, standardised RGB) as RGB in [0, 1] (for figures)."""
    return image * np.asarray(STD, np.float32)[:, None, None] + \
        np.asarray(MEAN, np.float32)[:, None, None]


EXPECTED = ("DATA_ROOT/cifar-100-python/{train,test,meta}: CIFAR-100's python-version pickles "
            "(https://www.cs.toronto.edu/~kriz/cifar.html)")


def task_name(domain: int) -> str:
    """The reference's task name of domain ``domain`` (0-based)."""
    return f"class_{domain}"


# ---------------------------------------------------------------------- restricted unpickling
# numpy's array-rebuilding function, whichever module path the running numpy gives it.
_NUMPY_RECONSTRUCT = np.array([]).__reduce__()[0]


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3's protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, "
                                     f"{encoding!r})")
    return text.encode("latin1")


class CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR pickle needs to rebuild numpy arrays.

    Allowed: ``numpy.core.multiarray._reconstruct`` (and numpy 2's ``numpy._core`` spelling),
    ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` restricted to latin-1 strings
    (how Python 3 writes bytes in protocol 2). Any other global raises
    :class:`pickle.UnpicklingError` before it is looked up, so nothing else is imported or run.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id")


def load_cifar_pickle(path: Path) -> dict:
    """The dict a CIFAR pickle holds (latin-1 strings, as torchvision reads it); one-line
    ``ValueError`` naming ``path`` for anything else."""
    try:
        data = path.read_bytes()
        obj = CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, UnicodeError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"CIFAR-100 file {path} is not a CIFAR pickle ({detail}); expected "
                         f"{EXPECTED}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"CIFAR-100 file {path} holds {type(obj).__name__}; expected a dict "
                         f"with string keys")
    return obj


def _field(path: Path, obj: dict, key: str):
    if key not in obj:
        raise ValueError(f"CIFAR-100 file {path} has no {key!r} entry (found {sorted(obj)}); "
                         f"expected {EXPECTED}")
    return obj[key]


def _labels(path: Path, obj: dict, key: str, n: int, high: int) -> np.ndarray:
    values = _field(path, obj, key)
    if (not isinstance(values, list) or len(values) != n
            or not all(type(v) is int and 0 <= v < high for v in values)):
        raise ValueError(f"CIFAR-100 file {path} {key!r} must be a list of {n} ints in "
                         f"0..{high - 1}")
    return np.asarray(values, dtype=np.int64)


class CIFAR100Split:
    """One split's images (N x 32 x 32 x 3 uint8 RGB), fine and coarse labels, names, and the
    class names from ``meta``; everything checked."""

    def __init__(self, root: str | Path, split: str):
        if split not in SPLIT_FILES:
            raise ValueError(f"CIFAR-100 split {split!r} is not one of {tuple(SPLIT_FILES)}")
        self.root, self.split = Path(root), split
        folder = self.root / CIFAR_DIR
        for name in (SPLIT_FILES[split], "meta"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"CIFAR-100 file {folder / name} not found (expected "
                                        f"{EXPECTED})")
        path = folder / SPLIT_FILES[split]
        obj = load_cifar_pickle(path)
        data = _field(path, obj, "data")
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != int(np.prod(IMAGE_SHAPE))):
            what = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                    else type(data).__name__)
            raise ValueError(f"CIFAR-100 file {path} 'data' is a {what}; expected uint8 N x 3072")
        n = data.shape[0]
        self.fine = _labels(path, obj, "fine_labels", n, NUM_FINE)
        self.coarse = _labels(path, obj, "coarse_labels", n, NUM_COARSE)
        wrong = np.flatnonzero(FINE_TO_COARSE[self.fine] != self.coarse)
        if wrong.size:
            i = int(wrong[0])
            raise ValueError(f"CIFAR-100 file {path} item {i}: fine label {self.fine[i]} with "
                             f"coarse label {self.coarse[i]}; CIFAR-100 puts it in coarse class "
                             f"{FINE_TO_COARSE[self.fine[i]]}")
        names = _field(path, obj, "filenames")
        if not isinstance(names, list) or len(names) != n or \
                not all(isinstance(s, str) for s in names):
            raise ValueError(f"CIFAR-100 file {path} 'filenames' must be a list of {n} strings")
        self.filenames = names
        # Stored as 3 x 32 x 32 planes (R, G, B) per row.
        self.images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
        meta_path = folder / "meta"
        meta = load_cifar_pickle(meta_path)
        self.fine_names = self._names(meta_path, meta, "fine_label_names", NUM_FINE)
        self.coarse_names = self._names(meta_path, meta, "coarse_label_names", NUM_COARSE)

    @staticmethod
    def _names(path: Path, meta: dict, key: str, n: int) -> list[str]:
        names = _field(path, meta, key)
        if not isinstance(names, list) or len(names) != n or \
                not all(isinstance(s, str) for s in names):
            raise ValueError(f"CIFAR-100 file {path} {key!r} must be a list of {n} strings")
        return names


class CIFAR100Domain(Dataset):
    """The images of one coarse class as a 5-way classification; indexing as the AdaShare
    readers (``ds[i]`` or ``ds[(epoch, i)]``, augmentation a function of ``(seed, epoch, i)``)."""

    def __init__(self, source: CIFAR100Split, domain: int, augment: bool | None = None,
                 seed: int = 0):
        if not 0 <= int(domain) < NUM_COARSE:
            raise ValueError(f"CIFAR-100 domain {domain} is not in 0..{NUM_COARSE - 1}")
        self.source, self.domain = source, int(domain)
        self.split, self.root = source.split, source.root
        self.indices = np.flatnonzero(source.coarse == self.domain)
        fine = source.fine[self.indices]
        self.fine_labels, self.labels = np.unique(fine, return_inverse=True)
        if len(self.indices) == 0 or len(self.fine_labels) != CLASSES_PER_DOMAIN:
            raise ValueError(f"CIFAR-100 {source.split} split of {source.root}: domain "
                             f"{self.domain} ({source.coarse_names[self.domain]}) has "
                             f"{len(self.indices)} images of fine classes "
                             f"{self.fine_labels.tolist()}; expected all "
                             f"{CLASSES_PER_DOMAIN} of its fine classes")
        self.task = task_name(self.domain)
        self.name = source.coarse_names[self.domain]
        self.classes = [source.fine_names[f] for f in self.fine_labels]
        self.augment = (source.split == "train") if augment is None else bool(augment)
        self.seed, self.epoch = int(seed), 0
        self._mean = np.array(MEAN, np.float32)[:, None, None]
        self._std = np.array(STD, np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= int(index) < len(self):
            raise IndexError(f"CIFAR-100 domain {self.domain} {self.split} index {index} out of "
                             f"range (size {len(self)})")
        item = int(self.indices[int(index)])
        image = self.source.images[item]
        if self.augment:
            rng = np.random.default_rng([self.seed % 2**63, int(epoch) % 2**63, self.domain,
                                         int(index)])
            image = pad_crop_flip(image, rng)
        chw = image.transpose(2, 0, 1).astype(np.float32) / 255.0
        img = torch.from_numpy(np.ascontiguousarray((chw - self._mean) / self._std))
        return {"img": img, "label": torch.tensor(int(self.labels[int(index)])),
                "name": self.source.filenames[item]}


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``RandomCrop(32, padding=4)`` then ``RandomHorizontalFlip()`` of an HxWx3 image."""
    h, w = image.shape[:2]
    padded = np.zeros((h + 2 * PAD, w + 2 * PAD, image.shape[2]), image.dtype)
    padded[PAD:PAD + h, PAD:PAD + w] = image
    top, left = int(rng.integers(0, 2 * PAD + 1)), int(rng.integers(0, 2 * PAD + 1))
    out = padded[top:top + h, left:left + w]
    return out[:, ::-1] if rng.random() < 0.5 else out


def build_domains(root: str | Path, split: str, domains: Sequence[int] | None = None,
                  augment: bool | None = None, seed: int = 0) -> list[CIFAR100Domain]:
    """The datasets of ``domains`` (default all 20) of one split, reading the file once."""
    source = CIFAR100Split(root, split)
    domains = range(NUM_COARSE) if domains is None else domains
    return [CIFAR100Domain(source, d, augment, seed) for d in domains]


def domain_index(task: str) -> int:
    """The domain of a task name ``class_<d>`` (one-line ValueError for another name)."""
    if not (task.startswith("class_") and task[6:].isdigit() and int(task[6:]) < NUM_COARSE):
        raise ValueError(f"CIFAR-100 task {task!r} is not a domain name class_0..class_19")
    return int(task[6:])


def build_task_datasets(cfg, split: str, augment: bool | None = None,
                        seed: int = 0) -> dict[str, CIFAR100Domain]:
    """``{task: domain dataset}`` for ``cfg.TASKS`` (``class_<d>`` names) at ``cfg.DATA_ROOT``."""
    domains = [domain_index(task) for task in cfg.TASKS]
    return {d.task: d for d in build_domains(cfg.DATA_ROOT, split, domains, augment, seed)}
