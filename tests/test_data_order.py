"""The training data order (lib.training.data_order): a seeded shuffle per epoch for every
loader that asked for one, depending only on (seed, epoch); evaluation loaders keep 0..n-1."""
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lib.config import load_config
from lib.data import EpochSampler, MultiDomainLoader, build_loader
from lib.training import make_loaders
from lib.training.data_order import EpochLoader, TaskEpochLoader, epoch_loader


class Indices(Dataset):
    """Item ``i`` is ``i``; an ``(epoch, i)`` key gives ``i`` too."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        return torch.tensor(key[1] if isinstance(key, tuple) else key)


def epochs(data, num_epochs):
    """The items of each of the first ``num_epochs`` epochs of an EpochLoader, in order (an
    item's file name for batch dicts)."""
    out, it = [], iter(data)
    for _ in range(num_epochs):
        batches = [next(it) for _ in range(data.batches_per_epoch)]
        out.append([i for b in batches for i in (b["name"] if isinstance(b, dict) else
                                                  b.tolist())])
    return out


def test_lib_data_train_loader_is_shuffled_per_epoch_and_test_loader_is_not(synthetic_cfg):
    loaders = make_loaders(synthetic_cfg, selection="test", seed=0, batch_size=2)
    data = epoch_loader(loaders.train, seed=0)
    assert data.sampler.shuffle
    n = len(loaders.train.dataset)
    e0, e1, e2 = epochs(data, 3)
    # drop_last trims the same count from each epoch, but not the same items
    assert len(e0) == len(e1) == n - n % 2 and len(set(e0)) == len(e0) == len(set(e1))
    assert e0 != e1 and e1 != e2
    all_names = {name for batch in build_loader(synthetic_cfg, "train", shuffle=False,
                                                augment=False) for name in batch["name"]}
    assert set(e0) | set(e1) | set(e2) == all_names
    # The order depends only on (seed, epoch): a fresh loader, or another seed.
    assert epochs(epoch_loader(loaders.train, seed=0), 2) == [e0, e1]
    other = epochs(epoch_loader(loaders.train, seed=1), 1)[0]
    # Seed s at epoch e + 1 is not seed s + 1 at epoch e (orders are hashed, not offset).
    assert other != e0 and other != e1
    # Evaluation loaders (the test split, the validation subset) read 0..n-1 every pass.
    for split_loader in (loaders.test, make_loaders(synthetic_cfg, seed=0).val):
        assert not split_loader.sampler.shuffle
        passes = [[k[1] for k in split_loader.sampler] for _ in range(2)]
        assert passes == [list(range(len(split_loader.dataset)))] * 2


def test_user_loaders_are_shuffled_only_when_they_ask():
    ds = Indices(7)
    shuffled = EpochLoader(DataLoader(ds, batch_size=3, shuffle=True), seed=4)
    e0, e1 = epochs(shuffled, 2)
    assert len(e0) == 7 and set(e0) == set(range(7)) and e0 != e1
    plain = EpochLoader(DataLoader(ds, batch_size=3, shuffle=False), seed=4)
    assert epochs(plain, 2) == [list(range(7))] * 2


def test_resuming_mid_epoch_continues_the_same_order():
    ds = Indices(10)
    full = epochs(EpochLoader(DataLoader(ds, batch_size=3, shuffle=True, drop_last=True),
                              seed=2), 3)
    data = EpochLoader(DataLoader(ds, batch_size=3, shuffle=True, drop_last=True), seed=2)
    it = iter(data)
    seen = [int(i) for _ in range(4) for i in next(it)]   # epoch 0 (3 batches) + 1 batch
    resumed = EpochLoader(DataLoader(ds, batch_size=3, shuffle=True, drop_last=True), seed=2)
    resumed.load_state_dict(data.state_dict())
    rest = iter(resumed)
    seen += [int(i) for _ in range(5) for i in next(rest)]
    assert seen == [i for epoch in full for i in epoch]


def test_distributed_shards_partition_each_shuffled_epoch():
    ds = Indices(8)
    loader = DataLoader(ds, batch_size=2, shuffle=True)
    ranks = [epochs(EpochLoader(loader, seed=5, rank=r, world_size=2), 2) for r in range(2)]
    for epoch in range(2):
        items = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(items) == list(range(8))
    assert ranks[0][0] != ranks[0][1]
    single = epochs(EpochLoader(loader, seed=5), 1)[0]
    assert ranks[0][0] == single[0::2] and ranks[1][0] == single[1::2]


def test_per_task_loaders_are_shuffled_per_task_and_epoch():
    domains = {"a": Indices(6), "b": Indices(6)}
    data = epoch_loader(MultiDomainLoader(domains, batch_size=2, shuffle=True, seed=3), seed=3)
    assert isinstance(data, TaskEpochLoader)
    it = iter(data)
    orders = [{t: [] for t in domains} for _ in range(2)]
    for epoch in range(2):
        for _ in range(data.batches_per_epoch):
            for t, batch in next(it).items():
                orders[epoch][t] += [int(i) for i in batch]
    for t in domains:
        assert all(sorted(o[t]) == list(range(6)) for o in orders)
        assert orders[0][t] != orders[1][t]
    assert orders[0]["a"] != orders[0]["b"]
    unshuffled = epoch_loader(MultiDomainLoader(domains, batch_size=2, shuffle=False), seed=3)
    batch = next(iter(unshuffled))
    assert [int(i) for i in batch["a"]] == [0, 1]


def test_worker_processes_change_no_batch(synthetic_cfg):
    """Two epochs of the shuffled, augmenting train loader: the same tensors with 0 and 2
    worker processes (augmentation depends only on (seed, epoch, index)), and the workers'
    loader keeps them across epochs."""
    def batches(workers):
        loaders = make_loaders(synthetic_cfg, selection="test", seed=3, batch_size=2,
                               num_workers=workers)
        data = epoch_loader(loaders.train, seed=3)
        it = iter(data)
        return data, [next(it) for _ in range(2 * data.batches_per_epoch)]

    (plain, one), (parallel, two) = batches(0), batches(2)
    assert parallel.loader.num_workers == 2 and parallel.loader.persistent_workers
    assert plain.loader.num_workers == 0
    for a, b in zip(one, two):
        assert a["name"] == b["name"]
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key]), key


def test_num_workers_comes_from_the_config_and_is_checked(synthetic_cfg):
    cfg = load_config("nyuv2_3task", profile="tiny", DATA_ROOT=synthetic_cfg.DATA_ROOT,
                      NUM_WORKERS=2)
    loaders = make_loaders(cfg, seed=0)
    assert {loaders.train.num_workers, loaders.val.num_workers, loaders.test.num_workers} == {2}
    assert build_loader(cfg, "test", num_workers=0).num_workers == 0
    assert load_config("nyuv2_3task", profile="tiny").NUM_WORKERS == 0
    assert 1 <= load_config("nyuv2_3task").NUM_WORKERS <= 8
    cfg.NUM_WORKERS = -1
    with pytest.raises(ValueError, match=r"NUM_WORKERS=-1: expected an integer >= 0"):
        build_loader(cfg, "train")


class RecordedKeys(Indices):
    """``Indices`` that appends each key it is asked for to a file (also from a worker)."""

    def __init__(self, n, log):
        super().__init__(n)
        self.log = str(log)

    def __getitem__(self, key):
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"{key[0]} {key[1]}\n")
        return super().__getitem__(key)


def test_workers_prefetch_across_epochs_without_moving_the_position(tmp_path):
    """A lib.data loader (EpochSampler keys) with a worker: its batches are those of the
    per-epoch order, the last one short; the worker loads epoch 1's first batch before the
    caller asks for it, and the saved position counts only the batches taken."""
    log = tmp_path / "keys.txt"
    keyed = DataLoader(RecordedKeys(10, log), batch_size=3, num_workers=1,
                       sampler=EpochSampler(10, shuffle=True))
    data = EpochLoader(keyed, seed=6)
    reference = epochs(EpochLoader(DataLoader(Indices(10), batch_size=3, shuffle=True), seed=6), 3)
    it = iter(data)
    taken = [int(i) for _ in range(data.batches_per_epoch) for i in next(it)]
    assert taken == reference[0] and data.batches_per_epoch == 4
    deadline = time.monotonic() + 30
    while not any(line.startswith("1 ") for line in log.read_text().splitlines()):
        assert time.monotonic() < deadline, "the worker did not prefetch the next epoch"
        time.sleep(0.05)
    assert data.state_dict()["epoch"] == 1 and data.state_dict()["batch_in_epoch"] == 0
    taken = [int(i) for _ in range(2 * data.batches_per_epoch) for i in next(it)]
    assert taken == reference[1] + reference[2]
    resumed = EpochLoader(keyed, seed=6)
    resumed.load_state_dict(data.state_dict())
    assert [int(i) for i in next(iter(resumed))] == [int(i) for i in next(it)]


def test_a_dropped_stream_stops_its_worker(tmp_path):
    """The stream's sampler holds no reference back to its loader, so dropping the loader and
    its iterator (``train`` returning) stops the persistent worker at once, without waiting
    for the garbage collector."""
    import gc
    import multiprocessing

    before = set(multiprocessing.active_children())
    keyed = DataLoader(RecordedKeys(10, tmp_path / "keys.txt"), batch_size=3, num_workers=1,
                       sampler=EpochSampler(10, shuffle=True))
    data = EpochLoader(keyed, seed=6)
    it = iter(data)
    next(it)
    workers = set(multiprocessing.active_children()) - before
    assert workers
    gc.disable()
    try:
        del it, data, keyed
        for worker in workers:
            worker.join(timeout=30)
    finally:
        gc.enable()
    assert not [w for w in workers if w.is_alive()]
