"""Datasets in the three AdaShare on-disk layouts, loaders from a config, synthetic scenes.

    NYUv2, CityScapes, Taskonomy        readers of the real layouts (``lib.data.nyuv2`` ...)
    build_dataset(cfg, split)           the reader of ``cfg.DATASET`` at ``cfg.DATA_ROOT``
    build_loader(cfg, split, ...)       a seeded DataLoader yielding batch dicts
    lib.data.synthetic                  ray-cast indoor/street scenes written in those layouts

Batch keys: ``img`` (BGR, 0..255 minus :data:`IMG_MEAN_BGR`), ``seg``, ``normal``, ``depth``,
``keypoint``, ``edge``, ``depth_mask`` (Taskonomy), ``name``. See docs/DATA.md.
"""
from .base import IMG_MEAN_BGR, LayoutDataset
from .cityscapes import CityScapes
from .loader import (DATASETS, EpochSampler, IndexedSubset, build_dataset, build_loader,
                     dataset_class)
from .nyuv2 import NYUv2
from .taskonomy import Taskonomy

__all__ = ["IMG_MEAN_BGR", "LayoutDataset", "NYUv2", "CityScapes", "Taskonomy", "DATASETS",
           "EpochSampler", "IndexedSubset", "build_dataset", "build_loader", "dataset_class"]
