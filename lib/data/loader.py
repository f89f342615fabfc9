"""Datasets and DataLoaders from a config: :func:`build_dataset`, :func:`build_loader`.

Reproducibility: the loader's sampler draws the order of epoch ``e`` from a ``torch.Generator``
seeded with ``(seed, e)`` and hands the dataset ``(e, index)`` pairs, so augmentation is a
function of ``(seed, e, index)`` as well. Each pass over the loader advances ``e`` by one
(starting at 0); ``loader.sampler.set_epoch(e)`` sets it, e.g. when resuming. Worker processes
do not change anything: no global random state is used.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .base import LayoutDataset
from .cityscapes import CityScapes
from .nyuv2 import NYUv2
from .nyuv2_mtan import NYUv2MTAN
from .taskonomy import Taskonomy

DATASETS: dict[str, type[LayoutDataset]] = {
    "nyuv2_3": NYUv2,
    "cityscapes": CityScapes,
    "taskonomy": Taskonomy,
    "nyuv2_mtan": NYUv2MTAN,
}


def dataset_class(layout: str) -> type[LayoutDataset]:
    """The reader of a ``cfg.DATASET`` value."""
    if layout not in DATASETS:
        raise ValueError(f"unknown dataset {layout!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[layout]


def build_dataset(cfg, split: str, augment: bool | None = None, seed: int = 0) -> LayoutDataset:
    """The dataset of ``cfg.DATASET`` at ``cfg.DATA_ROOT`` for ``split``.

    Train crops are ``cfg.CROP_H x cfg.CROP_W``; augmentation defaults to on for ``train`` and
    off for ``test``. NYU and Cityscapes check labels against the config's seg class count
    (Cityscapes also picks its label set by it). Frame size: with ``cfg.RESIZE_TO_IMAGE_SHAPE``
    (the cpu and tiny profiles) every frame is resized to ``cfg.IMAGE_SHAPE`` on load, and a
    warning says so once when the stored frames are of another size (their metrics are not
    comparable with published numbers); without it frames are read as stored and Taskonomy
    alone is resized, the reference's way, to ``cfg.IMAGE_SHAPE``.
    """
    cls = dataset_class(cfg.DATASET)
    kwargs: dict[str, Any] = dict(split=split, crop_h=cfg.CROP_H, crop_w=cfg.CROP_W, seed=seed,
                                  augment=augment)
    if cls in (NYUv2, CityScapes) and "seg" in cfg.TASKS:
        kwargs["num_class"] = cfg.TASKS_NUM_CLASS[list(cfg.TASKS).index("seg")]
    resize = bool(cfg.RESIZE_TO_IMAGE_SHAPE)
    if resize:
        kwargs["load_shape"] = tuple(cfg.IMAGE_SHAPE)
    if cls is Taskonomy:
        kwargs["size"] = None if resize else tuple(cfg.IMAGE_SHAPE)
    dataset = cls(cfg.DATA_ROOT, **kwargs)
    if resize and len(dataset):
        warn_if_resized(dataset)
    return dataset


_ANNOUNCED_RESIZES: set[str] = set()


def warn_if_resized(dataset: LayoutDataset) -> None:
    """Warn, once per process and dataset, when ``dataset``'s first stored frame is not of its
    ``load_shape``: every frame is then resized, and metrics on it are not comparable with
    published ones (docs/DATA.md). A run builds several datasets (train, validation, test) of
    one root; it is told once."""
    stored = dataset.stored_frame_shape(0)
    if stored == dataset.load_shape:
        return
    (h, w), (load_h, load_w) = stored, dataset.load_shape
    message = (f"{dataset.NAME} frames in {dataset.root} are stored at {h}x{w} and are resized "
               f"to {load_h}x{load_w} on load (RESIZE_TO_IMAGE_SHAPE): metrics of this run are "
               f"not comparable with published numbers (docs/DATA.md)")
    if message not in _ANNOUNCED_RESIZES:
        _ANNOUNCED_RESIZES.add(message)
        warnings.warn(message, stacklevel=2)


class IndexedSubset(Dataset):
    """``dataset`` restricted to ``indices``; passes ``(epoch, i)`` keys through."""

    def __init__(self, dataset: LayoutDataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(dataset)]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for the {dataset.split} split of "
                             f"{dataset.root} (size {len(dataset)})")

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for integer keys (see :meth:`LayoutDataset.set_epoch`)."""
        self.dataset.set_epoch(epoch)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.dataset[(key[0], self.indices[key[1]])]
        return self.dataset[self.indices[key]]


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: a seeded permutation (or ``0..n-1``) that changes per epoch.

    With ``num_replicas > 1`` (distributed training) replica ``rank`` takes every
    ``num_replicas``-th item of the shared order; ``pad=True`` repeats items from the start so
    all replicas get the same count (as ``DistributedSampler``), ``pad=False`` leaves the
    shards uneven and every item counted once (evaluation).
    """

    def __init__(self, num_items: int, shuffle: bool, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, pad: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas, self.rank, self.pad = int(num_replicas), int(rank), bool(pad)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass uses."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_items))
        state = np.random.SeedSequence([self.seed % 2**63, epoch % 2**63]).generate_state(2)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return torch.randperm(self.num_items, generator=g).tolist()

    def _shard(self, order: list[int]) -> list[int]:
        if self.num_replicas == 1:
            return order
        if self.pad:
            total = -(-len(order) // self.num_replicas) * self.num_replicas
            order = (order * (total // max(len(order), 1) + 1))[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        return iter([(epoch, i) for i in self._shard(self.order(epoch))])

    def __len__(self) -> int:
        return len(self._shard(list(range(self.num_items))))


def build_loader(cfg, split: str, batch_size: int | None = None, shuffle: bool | None = None,
                 seed: int = 0, num_workers: int = 0, indices: Sequence[int] | None = None,
                 drop_last: bool | None = None, augment: bool | None = None,
                 num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
    """A DataLoader over :func:`build_dataset` yielding batch dicts.

    Defaults: ``batch_size = cfg.BATCH_SIZE`` for both splits (test images share one size, so
    they batch; metrics are streaming and do not depend on it); ``shuffle`` on for train, off
    for test; ``drop_last`` on for train unless that would leave no batch, off for test.
    ``indices`` restricts the loader to those items of the split (validation subsets).
    ``num_replicas``/``rank`` shard the order for distributed runs (default: the initialised
    ``torch.distributed`` process group, else one replica); train shards are padded to equal
    length, test shards are not.
    """
    dataset: Dataset = build_dataset(cfg, split, augment=augment, seed=seed)
    if indices is not None:
        dataset = IndexedSubset(dataset, indices)
    n = len(dataset)
    if n == 0:
        what = "the given indices select no item of" if indices is not None else "no items in"
        raise ValueError(f"{what} the {split!r} split of {cfg.DATASET} dataset {cfg.DATA_ROOT}")
    batch_size = int(cfg.BATCH_SIZE if batch_size is None else batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shuffle = (split == "train") if shuffle is None else shuffle
    if num_replicas is None or rank is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        num_replicas = (dist.get_world_size() if initialised else 1) if num_replicas is None \
            else num_replicas
        rank = (dist.get_rank() if initialised else 0) if rank is None else rank
    sampler = EpochSampler(n, shuffle, seed, num_replicas, rank, pad=split == "train")
    n = len(sampler)
    if drop_last is None:
        drop_last = split == "train" and n >= batch_size
    elif drop_last and n < batch_size:
        raise ValueError(f"drop_last with batch_size {batch_size} leaves no batch: the {split!r} "
                         f"split of {cfg.DATA_ROOT} has {n} items")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(int(seed)))
