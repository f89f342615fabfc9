"""Exactly resumable data order: a seeded, per-epoch shuffle that can start mid-epoch.

Any DataLoader the caller passes is re-created over the same dataset, batch size, collate
function and workers (datasets of ``lib.data`` get ``(epoch, index)`` keys, as their own
loaders give them), but with a :class:`ResumableSampler` (a ``DistributedSampler`` that can
skip the batches already consumed) and its own seeded generator, so that creating a loader
iterator never draws from the global torch RNG (dropout's). The order of epoch ``e`` is
``lib.data.epoch_permutation(n, seed, e)``: it depends only on ``(seed, e)``, so a run resumed
at (epoch, batch) sees the same batches as an uninterrupted one, and a different worker count
changes nothing.

Shuffled: every training loader of ``lib.data`` that asked for it (their ``EpochSampler``'s
``shuffle``, on for the train split by default) and any other DataLoader whose sampler
shuffles (``shuffle=True``: a ``RandomSampler``; a shuffling ``DistributedSampler``). A
loader built with ``shuffle=False`` keeps its order ``0..n-1`` every epoch.

Prefetching across epochs: for ``lib.data``'s datasets the loader's batch sampler is one
stream of ``(epoch, index)`` batches without end (:class:`KeyStream`), so worker processes load
the first batches of epoch ``e + 1`` while the last of ``e`` are trained on; the position the
caller sees advances only with the batches it takes, so a checkpoint never counts a prefetched
batch. Other datasets get one loader pass per epoch (their workers are reseeded each epoch).

A loader that yields one batch per task and step (``lib.data.MultiDomainLoader``: it has
``task_loaders``) is resumed the same way by :class:`TaskEpochLoader`, one
:class:`EpochLoader` per task stepped together; :func:`epoch_loader` picks the right one.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from torch.utils.data.sampler import BatchSampler

from lib.data import epoch_permutation
from lib.tasks import TaskBatches


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can skip a prefix."""

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 keyed: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.skip = 0
        self.keyed = keyed  # yield (epoch, index) keys: augmentation then depends on the epoch

    def set_position(self, epoch: int, skip: int) -> None:
        """Iterate epoch ``epoch``'s shard from its ``skip``-th index on."""
        self.set_epoch(epoch)
        self.skip = skip

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's indices of ``epoch`` (default: the current one), as
        ``DistributedSampler`` shards them (padded by repeating the order's start), but ordered
        by :func:`epoch_permutation`."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        order = epoch_permutation(n, self.seed, epoch) if self.shuffle else list(range(n))
        if self.drop_last:
            order = order[:self.total_size]
        else:
            order = (order * (self.total_size // max(n, 1) + 1))[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = self.epoch_indices()[self.skip:]
        return iter([(self.epoch, i) for i in indices] if self.keyed else indices)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class KeyStream:
    """The batch sampler of an :class:`EpochLoader` over a ``lib.data`` dataset: the
    ``(epoch, index)`` keys of every batch from the loader's position at ``iter()`` on, epoch
    after epoch without end (each epoch ``batches_per_epoch`` batches of its shard, the last
    one short unless ``drop_last``), so the DataLoader's workers keep prefetching across the
    epoch boundary instead of draining and waiting for a new pass."""

    def __init__(self, data: "EpochLoader"):
        # A proxy, not a reference: the loader holds this sampler, and a cycle would keep the
        # persistent workers alive after training until the garbage collector ran.
        self.data = weakref.proxy(data)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # The position is read now, not at the first next(): workers ask for batches at once.
        return self._batches(self.data.epoch, self.data.batch_in_epoch)

    def _batches(self, epoch: int, start: int) -> Iterator[list[tuple[int, int]]]:
        data, size = self.data, self.data.batch_size
        while True:
            indices = data.sampler.epoch_indices(epoch)
            for b in range(start, data.batches_per_epoch):
                yield [(epoch, i) for i in indices[b * size:(b + 1) * size]]
            epoch, start = epoch + 1, 0


class EpochLoader:
    """Iterates a dataset epoch after epoch, batch by batch, from any saved position.

    Attributes ``epoch`` and ``batch_in_epoch`` are the position of the *next* batch; they and
    ``seed`` are all :meth:`state_dict` needs to hold.
    """

    def __init__(self, loader: DataLoader, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool | None = None, pin_memory: bool | None = None):
        dataset = loader.dataset
        if not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ValueError("the training dataset is empty (0 items): check DATA_ROOT and the "
                             "train list")
        if loader.batch_size is None or not isinstance(loader.batch_sampler, BatchSampler):
            raise ValueError("the training DataLoader must use batch_size= (a custom "
                             "batch_sampler cannot be resumed exactly)")
        if shuffle is None:
            shuffle = asks_for_shuffle(loader)
        self.seed = int(seed)
        self.batch_size = int(loader.batch_size)
        self.drop_last = bool(loader.drop_last)
        self.sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank,
                                        shuffle=shuffle, seed=self.seed,
                                        keyed=_takes_epoch_keys(loader))
        self.batches_per_epoch = (self.sampler.num_samples // self.batch_size if self.drop_last
                                  else math.ceil(self.sampler.num_samples / self.batch_size))
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training dataset has {len(dataset)} items, fewer than one "
                             f"batch of {self.batch_size} per process with drop_last=True")
        self.generator = torch.Generator()
        workers = loader.num_workers
        # lib.data's datasets (keyed: their items never use a worker's random state) are read
        # as one stream across epochs by workers kept for the run; another dataset's loader
        # makes one pass per epoch, its workers reseeded every epoch.
        order = (dict(batch_sampler=KeyStream(self)) if self.sampler.keyed else
                 dict(batch_size=self.batch_size, sampler=self.sampler,
                      drop_last=self.drop_last))
        self.loader = DataLoader(
            dataset, **order, num_workers=workers, collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory if pin_memory is None else pin_memory,
            timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
            generator=self.generator,
            prefetch_factor=loader.prefetch_factor if workers > 0 else None,
            persistent_workers=workers > 0 and self.sampler.keyed)
        self.epoch = 0
        self.batch_in_epoch = 0

    def truncate(self, batches_per_epoch: int) -> None:
        """End every epoch after ``batches_per_epoch`` batches (at most its own count)."""
        self.batches_per_epoch = min(self.batches_per_epoch, int(batches_per_epoch))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batch_size"] != self.batch_size or state["seed"] != self.seed:
            raise ValueError(f"cannot resume the data order: checkpoint has seed {state['seed']} "
                             f"and batch size {state['batch_size']}, this run seed {self.seed} "
                             f"and batch size {self.batch_size}")
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])

    def __iter__(self) -> Iterator[dict]:
        """Yield batches forever, updating the position after each one."""
        if self.sampler.keyed:
            self.generator.manual_seed(self.seed * 100_003 + self.epoch)
            for batch in self.loader:        # a KeyStream: it never ends
                self._advance()
                yield batch
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * self.batch_size)
            # Worker seeds depend on (seed, epoch) only, never on the global RNG.
            self.generator.manual_seed(self.seed * 100_003 + self.epoch)
            for batch in self.loader:
                self._advance()
                yield batch
                if self.batch_in_epoch == 0:
                    break
            else:
                # The loader ran out (drop_last trimmed it): start the next epoch.
                if self.batch_in_epoch != 0:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _advance(self) -> None:
        """One batch taken: the position of the next one."""
        self.batch_in_epoch += 1
        if self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0


# Task i's order uses seed + i * TASK_SEED_STRIDE (hashed with the epoch by epoch_permutation):
# two tasks' orders differ, and so do the tasks of neighbouring seeds.
TASK_SEED_STRIDE = 1_000_003


class TaskEpochLoader:
    """Steps one :class:`EpochLoader` per task together, yielding ``lib.tasks.TaskBatches``.

    An epoch is as many steps as the shortest task's; task ``i`` (in the loader's order) is
    shuffled with its own seed, so domains of one size are not drawn in lock step.
    """

    def __init__(self, loaders: Mapping[str, DataLoader], *, seed: int, rank: int = 0,
                 world_size: int = 1, pin_memory: bool | None = None):
        if not loaders:
            raise ValueError("the training loader has no task loaders")
        self.tasks = list(loaders)
        self.loaders = {t: EpochLoader(loader, seed=int(seed) + i * TASK_SEED_STRIDE, rank=rank,
                                       world_size=world_size, pin_memory=pin_memory)
                        for i, (t, loader) in enumerate(loaders.items())}
        self.batches_per_epoch = min(e.batches_per_epoch for e in self.loaders.values())
        for e in self.loaders.values():
            e.truncate(self.batches_per_epoch)

    @property
    def epoch(self) -> int:
        return next(iter(self.loaders.values())).epoch

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": {t: e.state_dict() for t, e in self.loaders.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = list(state.get("tasks", {}))
        if saved != self.tasks:
            raise ValueError(f"cannot resume the data order: the checkpoint stepped the tasks "
                             f"{saved}, this run's loader {self.tasks}")
        for task, e in self.loaders.items():
            e.load_state_dict(state["tasks"][task])

    def __iter__(self) -> Iterator[TaskBatches]:
        iterators = {t: iter(e) for t, e in self.loaders.items()}
        while True:
            yield TaskBatches({t: next(it) for t, it in iterators.items()})


def epoch_loader(loader: Any, *, seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool | None = None) -> EpochLoader | TaskEpochLoader:
    """The resumable iterator over ``loader``: a :class:`TaskEpochLoader` for a loader with
    ``task_loaders`` (one DataLoader per task), else an :class:`EpochLoader`. Its worker count
    is ``loader``'s; ``pin_memory`` (default: ``loader``'s) is for a CUDA run only."""
    task_loaders = getattr(loader, "task_loaders", None)
    if task_loaders is not None:
        return TaskEpochLoader(task_loaders, seed=seed, rank=rank, world_size=world_size,
                               pin_memory=pin_memory)
    return EpochLoader(loader, seed=seed, rank=rank, world_size=world_size,
                       pin_memory=pin_memory)


def asks_for_shuffle(loader: DataLoader) -> bool:
    """Whether ``loader`` was built to shuffle: ``shuffle=True`` (a ``RandomSampler``), a
    shuffling ``DistributedSampler`` or a shuffling ``lib.data.EpochSampler`` (the train split
    of ``lib.data.build_loader``)."""
    sampler = loader.sampler
    if isinstance(sampler, RandomSampler):
        return True
    return bool(getattr(sampler, "shuffle", False))


def _takes_epoch_keys(loader: DataLoader) -> bool:
    """Whether ``loader`` feeds its dataset ``(epoch, index)`` keys (``lib.data``'s loaders do,
    so that augmentation is a function of seed, epoch and index)."""
    try:
        from lib.data import EpochSampler
    except ImportError:
        return False
    return isinstance(loader.sampler, EpochSampler)
