"""Model selection split: a seeded validation subset carved out of the TRAIN list.

The reference picks its "best" checkpoint on the test set, which leaks the test set into model
selection. Here the default (``selection="val"``) holds out ``val_fraction`` of the training
list (disjoint from what the network trains on, and from the test list, which is a different
file list) and selects on it. ``selection="test"`` reproduces the reference exactly and is
named for what it is: not an honest estimate of test performance.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SELECTIONS = ("val", "test")


def split_train_val(num_items: int, val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded, disjoint ``(train_indices, val_indices)`` over ``range(num_items)``, each sorted.

    ``val`` gets ``round(num_items * val_fraction)`` items, at least one and leaving at least one
    for training.
    """
    if num_items < 2:
        raise ValueError(f"cannot carve a validation split out of {num_items} training items; "
                         f"need at least 2 (or use selection='test')")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    num_val = min(num_items - 1, max(1, int(round(num_items * val_fraction))))
    order = np.random.default_rng(seed).permutation(num_items)
    val = sorted(int(i) for i in order[:num_val])
    train = sorted(int(i) for i in order[num_val:])
    return train, val


def split_record(selection: str, num_train_list: int | dict[str, int],
                 train_idx: list[int] | dict[str, list[int]] | None,
                 val_idx: list[int] | dict[str, list[int]] | None, val_fraction: float | None,
                 seed: int, names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The JSON-able description of a model-selection split (written as ``split.json``); for
    one dataset per task the sizes and indices are ``{task: ...}``."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    record: dict[str, Any] = {
        "selection": selection,
        "note": ("best checkpoint selected on a validation split of the TRAIN list"
                 if selection == "val" else
                 "REFERENCE BEHAVIOUR: best checkpoint selected on the TEST set (optimistic; "
                 "not an honest test estimate)"),
        "num_train_list": num_train_list, "val_fraction": val_fraction, "seed": seed,
        "train_indices": train_idx, "val_indices": val_idx,
    }
    if names:
        record["names"] = names
    return record
