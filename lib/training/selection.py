"""Loaders for a training run with its model-selection split (needs :mod:`lib.data`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from .split import SELECTIONS, split_record, split_train_val


@dataclass
class RunLoaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    split: dict[str, Any]


def make_loaders(cfg, *, selection: str = "val", val_fraction: float = 0.1, seed: int = 0,
                 batch_size: int | None = None, eval_batch_size: int = 1) -> RunLoaders:
    """Train / selection / test loaders for ``cfg`` and the split record for ``split.json``.

    ``selection="val"`` (default, honest): ``val_fraction`` of the TRAIN list, chosen with
    ``seed``, is held out (read in test mode: no augmentation) and the rest trains.
    ``selection="test"`` (the reference's behaviour): train on the whole train list and select
    on the test split. The test loader is the full test split either way.
    """
    from lib.data import build_dataset, build_loader

    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    num_train_list = len(build_dataset(cfg, "train", seed=seed))
    if num_train_list == 0:
        raise ValueError(f"the train list of {cfg.DATA_ROOT} is empty")
    test = build_loader(cfg, "test", batch_size=eval_batch_size, shuffle=False, seed=seed)
    if selection == "test":
        train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed)
        split = split_record("test", num_train_list, None, None, None, seed)
        return RunLoaders(train, test, test, split)
    train_idx, val_idx = split_train_val(num_train_list, val_fraction, seed)
    train = build_loader(cfg, "train", batch_size=batch_size, shuffle=True, seed=seed,
                         indices=train_idx)
    val = build_loader(cfg, "train", batch_size=eval_batch_size, shuffle=False, seed=seed,
                       indices=val_idx, train_mode=False)
    split = split_record("val", num_train_list, train_idx, val_idx, val_fraction, seed)
    return RunLoaders(train, val, test, split)
