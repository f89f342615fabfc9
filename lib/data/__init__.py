"""Datasets in the three AdaShare on-disk layouts, loaders from a config, synthetic scenes.

    NYUv2, CityScapes, Taskonomy        readers of the real layouts (``lib.data.nyuv2`` ...)
    NYUv2MTAN, CIFAR100Domain           the min-max framework's data (``nyuv2_mtan``, ``cifar_mtl``)
    build_dataset(cfg, split)           the reader of ``cfg.DATASET`` at ``cfg.DATA_ROOT`` (frames
                                        resized to ``cfg.IMAGE_SHAPE`` on load when
                                        ``cfg.RESIZE_TO_IMAGE_SHAPE``, as in the cpu/tiny profiles)
    build_loader(cfg, split, ...)       a seeded DataLoader yielding batch dicts (per-task data,
                                        e.g. CIFAR-100's domains: a MultiDomainLoader yielding
                                        lib.tasks.TaskBatches, one batch per task and step)
    lib.data.synthetic                  ray-cast indoor/street scenes written in those layouts

Batch keys: ``img`` (BGR, 0..255 minus :data:`IMG_MEAN_BGR`), ``seg``, ``normal``, ``depth``,
``keypoint``, ``edge``, ``depth_mask`` (Taskonomy), ``name``. See docs/DATA.md.

Names are imported on first use, so ``lib.data.synthetic`` (numpy + OpenCV only) starts fast,
e.g. in its worker processes, without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IMG_MEAN_BGR": "base", "LayoutDataset": "base",
    "NYUv2": "nyuv2", "CityScapes": "cityscapes", "Taskonomy": "taskonomy",
    "EpochSampler": "loader", "IndexedSubset": "loader",
    "epoch_permutation": "loader", "loader_workers": "loader",
    "build_dataset": "loader", "build_loader": "loader", "dataset_class": "loader",
    "check_files": "loader", "check_content": "loader", "collate_batch": "loader",
    "NYUv2MTAN": "nyuv2_mtan",
    "CIFAR100Domain": "cifar_mtl", "CifarUnpickler": "cifar_mtl", "build_domains": "cifar_mtl",
    "MultiDomainLoader": "loader", "build_task_datasets": "loader",
    "has_task_datasets": "loader", "num_items": "loader",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
