"""Datasets and DataLoaders from a config: :func:`build_dataset`, :func:`build_loader`.

Two kinds of data, as ``cfg.DATASET``'s :class:`lib.datasets.DatasetSpec` says. Most datasets
hold every task's targets in each item (the spec's ``reader``: a ``LayoutDataset``, or any
class with ``from_config(cfg, split, *, augment, seed)``). A *per-task* dataset (the spec's
``task_datasets``: CIFAR-100's domains) has one dataset per task; its loader is a
:class:`MultiDomainLoader`, each step one batch per task (a ``lib.tasks.TaskBatches``).

Reproducibility: the loader's sampler draws the order of epoch ``e`` from a ``torch.Generator``
seeded with ``(seed, e)`` and hands the dataset ``(e, index)`` pairs, so augmentation is a
function of ``(seed, e, index)`` as well. Each pass over the loader advances ``e`` by one
(starting at 0); ``loader.sampler.set_epoch(e)`` sets it, e.g. when resuming. Worker processes
do not change anything: no global random state is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.dataloader import default_collate

from lib.datasets import dataset_spec
from lib.tasks import TaskBatches
from lib.utils import atomic_write_json

from .base import LayoutDataset
from .cityscapes import CityScapes
from .nyuv2 import NYUv2
from .taskonomy import Taskonomy


def dataset_class(layout: str) -> type:
    """The reader of a ``cfg.DATASET`` value (its :class:`lib.datasets.DatasetSpec`'s
    ``reader``); one-line error for an unknown dataset or one with a dataset per task."""
    spec = dataset_spec(layout)
    if spec.reader is None:
        raise ValueError(f"dataset {layout!r} has one dataset per task (build_task_datasets), "
                         f"no reader of every task")
    return spec.get("reader")


def has_task_datasets(cfg) -> bool:
    """Whether ``cfg.DATASET`` keeps one dataset per task (its spec's ``task_datasets``)."""
    return dataset_spec(cfg.DATASET).task_datasets is not None


def build_task_datasets(cfg, split: str, augment: bool | None = None,
                        seed: int = 0) -> dict[str, Dataset]:
    """``{task: dataset}`` of a per-task dataset for ``cfg.TASKS`` (augmentation defaults to
    on for ``train``)."""
    if not has_task_datasets(cfg):
        raise ValueError(f"dataset {cfg.DATASET!r} holds every task in one dataset "
                         f"(build_dataset), not one dataset per task")
    return dataset_spec(cfg.DATASET).get("task_datasets")(cfg, split, augment=augment, seed=seed)


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
    if not issubclass(cls, LayoutDataset):     # a registered reader of its own
        return cls.from_config(cfg, split, augment=augment, seed=seed)
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


def check_files(data: Any) -> None:
    """Check that every file the index of ``data``'s dataset lists exists (a DataLoader, an
    :class:`IndexedSubset` / ``Subset`` or a :class:`LayoutDataset`; the whole split is
    checked); a one-line FileNotFoundError names the first missing file. Datasets of other
    kinds have no index to check and pass."""
    dataset = data
    while isinstance(dataset, (DataLoader, IndexedSubset, Subset)):
        dataset = dataset.dataset
    check = getattr(dataset, "check_files", None)
    if callable(check):
        check()


def check_content(data: Any, progress: bool = True, cache: bool = True) -> None:
    """Read every entry of ``data``'s split through its reader (the dtype, shape and range
    checks of :mod:`lib.data.checks`, no augmentation), with a progress bar, so that a bad file
    is a one-line error naming it before a run writes anything (a DataLoader, a subset, whose
    items only are read, or a :class:`LayoutDataset`; datasets of other kinds pass).

    ``cache``: entries whose files passed are recorded with their sizes and modification
    times in ``$CUT_CACHE_DIR`` (default ``~/.cache/cut``) ``/data_checks/<key>.json`` (the key:
    reader, root, split, classes, load size), and are not read again while those match."""
    from tqdm import tqdm

    dataset, indices = data, None
    while isinstance(dataset, (DataLoader, IndexedSubset, Subset)):
        if isinstance(dataset, (IndexedSubset, Subset)):
            inner = list(dataset.indices)
            indices = inner if indices is None else [inner[j] for j in indices]
        dataset = dataset.dataset
    if not isinstance(dataset, LayoutDataset):
        return
    dataset.check_files()
    key = json.dumps([dataset.NAME, str(dataset.root.resolve()), dataset.split,
                      getattr(dataset, "num_class", None), dataset.load_shape], default=str)
    folder = Path(os.environ.get("CUT_CACHE_DIR", Path.home() / ".cache" / "cut"))
    record = folder / "data_checks" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    passed: dict[str, list[int]] = {}
    if cache and record.is_file():
        try:
            passed = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            passed = {}           # a damaged cache only costs a full check

    def stamp(index: int) -> list[int]:
        stats = [(dataset.root / rel).stat() for rel in dataset.entries[index]]
        return [v for st in stats for v in (st.st_size, st.st_mtime_ns)]

    todo = [i for i in (range(len(dataset)) if indices is None else sorted(set(indices)))
            if passed.get("|".join(dataset.entries[i])) != stamp(i)]
    checked = 0
    try:
        for i in tqdm(todo, desc=f"checking {dataset.split} files", disable=not progress):
            dataset.load_item(i, None)
            passed["|".join(dataset.entries[i])] = stamp(i)
            checked += 1
    finally:
        if cache and checked:
            try:
                atomic_write_json(passed, record)
            except OSError:
                pass              # an unwritable cache only costs a full check next time


def collate_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` of sample dicts; items whose tensors differ in size (frames stored at
    different sizes, read without ``RESIZE_TO_IMAGE_SHAPE``) give a one-line ValueError naming
    the items and their sizes instead of torch's stack error."""
    for key, first in items[0].items():
        if not isinstance(first, torch.Tensor):
            continue
        shapes = [tuple(item[key].shape) for item in items]
        if len(set(shapes)) > 1:
            names = [item.get("name", f"item {i}") for i, item in enumerate(items)]
            sizes = ", ".join(f"{n}: {s}" for n, s in zip(names, shapes))
            raise ValueError(f"cannot batch {key!r} of items of different sizes ({sizes}): "
                             f"use batch size 1, or resize every frame to IMAGE_SHAPE "
                             f"(--set RESIZE_TO_IMAGE_SHAPE=True)")
    return default_collate(items)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    """The order of epoch ``epoch``: a permutation of ``range(num_items)`` that depends only on
    ``(seed, epoch)`` (hashed together, so seed ``s`` at epoch ``e + 1`` is not seed ``s + 1``
    at epoch ``e``: runs of neighbouring seeds do not share their orders)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch) % 2**63]).generate_state(2)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(int(num_items), generator=g).tolist()


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
        return epoch_permutation(self.num_items, self.seed, epoch)

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


class MultiDomainLoader:
    """One DataLoader per domain, stepped together: each step yields a
    ``lib.tasks.TaskBatches`` ``{task: batch}``.

    ``datasets`` is ``{task: dataset}`` or a sequence of datasets with a ``task`` attribute. A
    pass lasts as many steps as the shortest domain loader (all domains are the same size in
    CIFAR-100; an unshuffled pass needs them to be). Domain ``i``'s order is seeded with
    ``(seed, i)`` and changes per pass.
    ``task_loaders`` (``{task: DataLoader}``) is what the training engine resumes exactly.
    """

    def __init__(self, datasets: Sequence[Dataset] | Mapping[str, Dataset], batch_size: int,
                 shuffle: bool, seed: int = 0, num_workers: int = 0,
                 drop_last: bool = False):
        if isinstance(datasets, Mapping):
            self.tasks, self.datasets = list(datasets), list(datasets.values())
        else:   # datasets that know their task (``CIFAR100Domain.task``)
            self.datasets = list(datasets)
            self.tasks = [d.task for d in self.datasets]
        if not self.datasets:
            raise ValueError("MultiDomainLoader needs at least one domain")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Domain i's order depends on (seed, i) only.
        self.loaders = [
            DataLoader(d, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
                       sampler=EpochSampler(len(d), shuffle, _domain_seed(seed, i)),
                       pin_memory=torch.cuda.is_available())
            for i, d in enumerate(self.datasets)]
        lengths = {t: len(loader) for t, loader in zip(self.tasks, self.loaders)}
        if not shuffle and len(set(lengths.values())) > 1:
            raise ValueError(f"an unshuffled pass (evaluation) would leave out the last batches "
                             f"of the longer domains: batches per domain {lengths}")

    @property
    def task_loaders(self) -> dict[str, DataLoader]:
        return dict(zip(self.tasks, self.loaders))

    @property
    def task_datasets(self) -> dict[str, Dataset]:
        return dict(zip(self.tasks, self.datasets))

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[TaskBatches]:
        iterators = [iter(loader) for loader in self.loaders]
        for _ in range(len(self)):
            yield TaskBatches({task: next(it) for task, it in zip(self.tasks, iterators)})


def num_items(loader) -> int:
    """The items a loader reads per pass (a :class:`MultiDomainLoader`: over all its tasks)."""
    datasets = getattr(loader, "task_datasets", None)
    if datasets is not None:
        return sum(len(d) for d in datasets.values())
    return len(loader.dataset)


def _domain_seed(seed: int, key: int) -> int:
    return int(np.random.SeedSequence([int(seed) % 2**63, int(key)]).generate_state(1)[0])


def loader_workers(cfg, num_workers: int | None = None) -> int:
    """``num_workers`` if given, else ``cfg.NUM_WORKERS`` (0 for a config without it), checked
    to be an integer >= 0 (a one-line ValueError naming the key otherwise)."""
    value = getattr(cfg, "NUM_WORKERS", 0) if num_workers is None else num_workers
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"NUM_WORKERS={value!r}: expected an integer >= 0 (data-loading "
                         f"worker processes; 0 reads in the training process)")
    return value


def build_loader(cfg, split: str, batch_size: int | None = None, shuffle: bool | None = None,
                 seed: int = 0, num_workers: int | None = None,
                 indices: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                 drop_last: bool | None = None, augment: bool | None = None,
                 num_replicas: int | None = None,
                 rank: int | None = None) -> DataLoader | MultiDomainLoader:
    """A DataLoader over :func:`build_dataset` yielding batch dicts (for a per-task dataset, a
    :class:`MultiDomainLoader` over :func:`build_task_datasets` yielding ``TaskBatches``).

    Defaults: ``batch_size = cfg.BATCH_SIZE`` for both splits (test images share one size, so
    they batch; metrics are streaming and do not depend on it); ``shuffle`` on for train, off
    for test; ``drop_last`` on for train unless that would leave no batch, off for test (per-task
    data: off, the min-max trainers keep the last batch). ``indices`` restricts the loader to
    those items of the split (validation subsets; per-task data: ``{task: indices}``).
    ``num_replicas``/``rank`` shard the order for distributed runs (default: the initialised
    ``torch.distributed`` process group, else one replica); train shards are padded to equal
    length, test shards are not (per-task data is not sharded here: the training engine shards
    it). ``num_workers`` defaults to ``cfg.NUM_WORKERS``: worker processes change nothing in
    the batches (augmentation is keyed by ``(seed, epoch, index)``); memory is pinned when
    CUDA is present.
    """
    num_workers = loader_workers(cfg, num_workers)
    batch_size = int(cfg.BATCH_SIZE if batch_size is None else batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shuffle = (split == "train") if shuffle is None else shuffle
    if has_task_datasets(cfg):
        return _task_loader(cfg, split, batch_size, shuffle, seed, num_workers, indices,
                            bool(drop_last), augment)
    dataset: Dataset = build_dataset(cfg, split, augment=augment, seed=seed)
    if indices is not None:
        dataset = IndexedSubset(dataset, indices)
    n = len(dataset)
    if n == 0:
        what = "the given indices select no item of" if indices is not None else "no items in"
        raise ValueError(f"{what} the {split!r} split of {cfg.DATASET} dataset {cfg.DATA_ROOT}")
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
                      generator=torch.Generator().manual_seed(int(seed)),
                      collate_fn=collate_batch)


def _task_loader(cfg, split: str, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                 indices: Mapping[str, Sequence[int]] | None, drop_last: bool,
                 augment: bool | None) -> MultiDomainLoader:
    datasets: dict[str, Dataset] = build_task_datasets(cfg, split, augment=augment, seed=seed)
    if indices is not None:
        if not isinstance(indices, Mapping) or set(indices) != set(datasets):
            raise ValueError(f"indices of a per-task dataset must be {{task: indices}} for the "
                             f"tasks {list(datasets)}")
        datasets = {t: IndexedSubset(d, indices[t]) for t, d in datasets.items()}
    empty = [t for t, d in datasets.items() if len(d) == 0]
    if empty:
        raise ValueError(f"no items for task(s) {empty} in the {split!r} split of {cfg.DATASET} "
                         f"dataset {cfg.DATA_ROOT}")
    return MultiDomainLoader(datasets, batch_size, shuffle, seed, num_workers, drop_last)
