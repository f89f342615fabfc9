"""Loaders for a training run with its model-selection split (needs :mod:`lib.data`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from lib.datasets import dataset_spec

from .split import SELECTIONS, split_record, split_train_val


@dataclass
class RunLoaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    split: dict[str, Any]

    def summary(self) -> str:
        """How many items each loader holds, e.g. ``train 144 items, selection (val) 16,
        test 32`` (one dataset per task: over all tasks)."""
        from lib.data import num_items
        return (f"train {num_items(self.train)} items, selection ({self.split['selection']}) "
                f"{num_items(self.val)}, test {num_items(self.test)}")

    def overlap(self) -> int:
        """How many train-list items both train and validate (0 for an honest ``val`` split;
        a ``test`` selection has no train-list validation items)."""
        train, val = self.split["train_indices"], self.split["val_indices"]
        if val is None:
            return 0
        if isinstance(val, dict):     # one dataset per task: {task: indices}
            return sum(len(set(train[t]) & set(val[t])) for t in val)
        return len(set(train) & set(val))


def default_eval_batch_size(cfg) -> int:
    """The reference's test batch: ``cfg.EVAL_BATCH_SIZE`` where the config has one (the
    min-max configs: their trainers' batch, which their per-batch metrics depend on), else 1
    (``BATCH_SIZE`` on Taskonomy)."""
    own = getattr(cfg, "EVAL_BATCH_SIZE", None)
    if own is not None:
        return int(own)
    return int(cfg.BATCH_SIZE) if dataset_spec(cfg.DATASET).eval_batch == "config" else 1


def make_loaders(cfg, *, selection: str = "val", val_fraction: float = 0.1, seed: int = 0,
                 batch_size: int | None = None, eval_batch_size: int | None = None,
                 num_workers: int | None = None) -> RunLoaders:
    """Train / selection / test loaders for ``cfg`` and the split record for ``split.json``.

    ``selection="val"`` (default, honest): ``val_fraction`` of the TRAIN list, chosen with
    ``seed``, is held out (read in test mode: no augmentation) and the rest trains.
    ``selection="test"`` (the reference's behaviour): train on the whole train list and select
    on the test split. The test loader is the full test split either way.
    ``eval_batch_size`` defaults to the reference's test batch
    (:func:`default_eval_batch_size`). A per-task dataset (one dataset
    per task: ``lib.data.has_task_datasets``) is split task by task with the same fraction.
    ``num_workers`` (default ``cfg.NUM_WORKERS``) applies to all three loaders.
    """
    from lib.data import build_dataset, build_loader, has_task_datasets

    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if eval_batch_size is None:
        eval_batch_size = default_eval_batch_size(cfg)
    if has_task_datasets(cfg):
        return _per_task_loaders(cfg, selection, val_fraction, seed, batch_size,
                                 eval_batch_size, num_workers)
    num_train_list = len(build_dataset(cfg, "train", augment=False, seed=seed))
    if num_train_list == 0:
        raise ValueError(f"the train list of {cfg.DATA_ROOT} is empty")
    test = build_loader(cfg, "test", batch_size=eval_batch_size, shuffle=False, seed=seed,
                        num_workers=num_workers)
    if selection == "test":
        train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed,
                             num_workers=num_workers)
        split = split_record("test", num_train_list, None, None, None, seed)
        return RunLoaders(train, test, test, split)
    train_idx, val_idx = split_train_val(num_train_list, val_fraction, seed)
    names = _check_disjoint_from_test(cfg, val_idx, seed)
    train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed,
                         indices=train_idx, num_workers=num_workers)
    val = build_loader(cfg, "train", batch_size=eval_batch_size, shuffle=False, seed=seed,
                       indices=val_idx, augment=False, drop_last=False,
                       num_workers=num_workers)
    split = split_record("val", num_train_list, train_idx, val_idx, val_fraction, seed,
                         names=names)
    return RunLoaders(train, val, test, split)


def _check_disjoint_from_test(cfg, val_idx: list[int], seed: int) -> dict[str, list[str]]:
    """The validation items' first files; a ValueError if any is also in the test list."""
    from lib.data import build_dataset

    train_entries = build_dataset(cfg, "train", augment=False, seed=seed).entries
    test_files = {e[0] for e in build_dataset(cfg, "test", augment=False, seed=seed).entries}
    val_files = [train_entries[i][0] for i in val_idx]
    shared = [f for f in val_files if f in test_files]
    if shared:
        raise ValueError(f"the train and test lists of {cfg.DATA_ROOT} share items "
                         f"{shared[:3]} ({len(shared)} in the validation split): a validation "
                         f"split cannot be kept apart from the test set")
    return {"val": val_files}


def _per_task_loaders(cfg, selection: str, val_fraction: float, seed: int,
                      batch_size: int | None, eval_batch_size: int,
                      num_workers: int | None) -> RunLoaders:
    """:func:`make_loaders` for one dataset per task: each task's train list split alike (the
    train and test lists are separate files, so they cannot share items)."""
    from lib.data import build_loader, build_task_datasets

    sizes = {t: len(d) for t, d in build_task_datasets(cfg, "train", augment=False,
                                                       seed=seed).items()}
    test = build_loader(cfg, "test", batch_size=eval_batch_size, shuffle=False, seed=seed,
                        num_workers=num_workers)
    if selection == "test":
        train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed,
                             num_workers=num_workers)
        return RunLoaders(train, test, test, split_record("test", sizes, None, None, None, seed))
    split = {t: split_train_val(n, val_fraction, seed) for t, n in sizes.items()}
    train_idx = {t: tr for t, (tr, _) in split.items()}
    val_idx = {t: va for t, (_, va) in split.items()}
    train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed,
                         indices=train_idx, num_workers=num_workers)
    val = build_loader(cfg, "train", batch_size=eval_batch_size, shuffle=False, seed=seed,
                       indices=val_idx, augment=False, num_workers=num_workers)
    record = split_record("val", sizes, train_idx, val_idx, val_fraction, seed)
    return RunLoaders(train, val, test, record)
