"""Synthetic data written in the real on-disk layouts, so the real loaders read them.

    write_dataset(root, layout, num_train, num_test, height, width, seed=0)
    prepare_synthetic(cfg, root=None, num_train=None, num_test=None, seed=0) -> str

AdaShare's layouts (``nyuv2_3``, ``cityscapes``, ``taskonomy``): scenes ray cast (``render``)
from randomly sampled geometry (``scenes``): indoor rooms for ``nyuv2_3`` (NYU's 40 classes)
and ``taskonomy`` (17 classes), streets for ``cityscapes`` (19 classes). The min-max
framework's layouts (``nyuv2_mtan``, ``cifar100_mtl``) are written by :mod:`.minmax`; for
CIFAR-100 the counts are images per fine class. Sample ``i`` of a split depends only on
``(seed, split, i)``; the same arguments give byte-identical files. A dataset is written
complete or not at all (:mod:`.store`).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from lib.datasets import dataset_spec

from .classes import CLASS_SETS
from .layouts import INDEX_FILES, LAYOUTS, WRITERS, sample_frame, taskonomy_prior
from .minmax import MINMAX_LAYOUTS, prepare_minmax_synthetic, write_minmax_dataset
from .store import MARKER, atomic_folder, check_counts, dataset_params, prepare, read_marker
from .store import default_root as _named_root

GENERATOR_VERSION = 5
DEFAULT_COUNTS = {"tiny": (8, 4)}
FALLBACK_COUNTS = (320, 80)
ALL_LAYOUTS = LAYOUTS + MINMAX_LAYOUTS

__all__ = ["write_dataset", "write_own", "prepare_synthetic", "default_root", "is_complete",
           "LAYOUTS", "ALL_LAYOUTS", "GENERATOR_VERSION", "MARKER", "read_marker"]


def _params(layout: str, num_train: int, num_test: int, height: int, width: int,
            seed: int) -> dict:
    return dataset_params(layout, num_train, num_test, height, width, seed, GENERATOR_VERSION)


def _check_args(layout: str, num_train: int, num_test: int, height: int, width: int) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; expected one of {ALL_LAYOUTS}")
    check_counts(num_train, num_test)
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")


def is_complete(root: str | os.PathLike, layout: str, num_train: int, num_test: int,
                height: int, width: int, seed: int = 0) -> bool:
    """Whether ``root`` holds a complete dataset written with exactly these parameters."""
    params = _params(layout, num_train, num_test, height, width, seed)
    return (read_marker(root) == params
            and (Path(root) / INDEX_FILES[layout]).is_file())


def _make_sample(job: tuple) -> tuple[str, list[str], np.ndarray | None]:
    """Render and store one sample; returns its split, index entry and train class counts."""
    layout, seed, split, i, sample_id, height, width, folder = job
    frame = sample_frame(layout, seed, split, i, height, width)
    entry = WRITERS[layout](Path(folder), split, i, sample_id, frame)
    counts = None
    if split == "train":
        n = len(CLASS_SETS[layout])
        counts = np.bincount(frame.label[frame.label >= 0].astype(np.int64), minlength=n)[:n]
    return split, entry, counts


def _worker_init() -> None:
    cv2.setNumThreads(1)


def write_dataset(root: str | os.PathLike, layout: str, num_train: int, num_test: int,
                  height: int, width: int, seed: int = 0, progress: bool = False,
                  workers: int = 1) -> Path:
    """Write ``num_train`` + ``num_test`` synthetic samples at ``height x width`` in ``layout``
    (any of :data:`ALL_LAYOUTS`; ``cifar100_mtl``: images per fine class, 32x32 only).

    ``root`` must not exist or be an empty folder. Returns ``root``. ``workers > 1`` renders
    in that many processes; the files are identical either way.
    """
    if layout in MINMAX_LAYOUTS:
        return write_minmax_dataset(root, layout, num_train, num_test, height, width, seed,
                                    progress)
    from ...tasks import SEG_PRIOR_FILE       # imported here: they pull in torch
    from ...utils import atomic_write_json

    _check_args(layout, num_train, num_test, height, width)
    root = Path(root)
    with atomic_folder(root, _params(layout, num_train, num_test, height, width, seed)) as tmp:
        index: dict[str, list] = {"train": [], "test": []}
        counts = np.zeros(len(CLASS_SETS[layout]), dtype=np.int64)
        jobs = [(layout, seed, "train", i, i, height, width, str(tmp)) for i in range(num_train)]
        jobs += [(layout, seed, "test", i, num_train + i, height, width, str(tmp))
                 for i in range(num_test)]
        workers = max(1, min(int(workers), len(jobs)))
        pool = None
        if workers > 1:   # spawn: safe with OpenCV/torch threads in the parent
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init)
        try:
            results = (pool.map(_make_sample, jobs, chunksize=4) if pool
                       else map(_make_sample, jobs))
            for split, entry, sample_counts in tqdm(results, total=len(jobs), disable=not progress,
                                                    desc=f"synthetic {layout}"):
                index[split].append(entry)
                if sample_counts is not None:
                    counts += sample_counts
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        if layout == "taskonomy":
            np.save(tmp / SEG_PRIOR_FILE, taskonomy_prior(counts))
        atomic_write_json(index, tmp / INDEX_FILES[layout])
    return root


def write_own(root: str | os.PathLike, cfg, num_train: int, num_test: int, seed: int = 0,
              progress: bool = False, workers: int = 1) -> Path:
    """Write a registered dataset outside :data:`ALL_LAYOUTS` (a user's file, e.g. one named by
    ``CUT_PLUGINS``) by its spec's own ``synthetic`` writer, at ``cfg.IMAGE_SHAPE``, into
    ``root`` (must not exist or be empty), complete or not at all. Returns ``root``."""
    layout = cfg.DATASET
    spec = dataset_spec(layout)
    if spec.synthetic is None:
        raise ValueError(f"dataset {layout!r} has no synthetic generator (its spec's "
                         f"synthetic)")
    check_counts(num_train, num_test)
    height, width = (int(x) for x in cfg.IMAGE_SHAPE)
    writer = spec.get("synthetic")
    params = {"layout": layout, "num_train": int(num_train), "num_test": int(num_test),
              "height": height, "width": width, "seed": int(seed),
              "generator": f"{writer.__module__}:{writer.__qualname__}"}
    root = Path(root)
    with atomic_folder(root, params) as tmp:
        written = writer(cfg, root=tmp, num_train=num_train, num_test=num_test, seed=seed,
                         progress=progress, workers=workers)
        if Path(written).resolve() != tmp.resolve():
            raise ValueError(f"dataset {layout!r}: its synthetic writer wrote to {written}, "
                             f"not to the root it was given")
    return root


def default_root(layout: str, num_train: int, num_test: int, height: int, width: int,
                 seed: int = 0) -> Path:
    """``$CUT_SYNTHETIC_DIR`` (default ``<repo>/data/synthetic``) / a name of all parameters."""
    return _named_root(_params(layout, num_train, num_test, height, width, seed),
                       f"v{GENERATOR_VERSION}")


def prepare_synthetic(cfg, root: str | os.PathLike | None = None, num_train: int | None = None,
                      num_test: int | None = None, seed: int = 0, progress: bool = True,
                      workers: int = 1) -> str:
    """Root of a complete synthetic dataset in ``cfg.DATASET``'s layout at ``cfg.IMAGE_SHAPE``,
    generated only if it is not there yet. Default counts: 8/4 for the ``tiny`` profile, else
    320/80 (the min-max layouts: :func:`.minmax.prepare_minmax_synthetic`'s). ``workers > 1``
    renders in several processes (worth it on idle cores only). A folder that exists but holds
    something else is never overwritten (error).

    A registered dataset with a generator of its own (its spec's ``synthetic``) is prepared by
    that generator, with the same arguments; one without any is a one-line error."""
    layout = cfg.DATASET
    spec = dataset_spec(layout)
    if spec.synthetic is None:
        raise ValueError(f"dataset {layout!r} has no synthetic generator (its spec's "
                         f"synthetic); give the data's DATA_ROOT")
    own = spec.get("synthetic")
    if own is not prepare_synthetic:
        return own(cfg, root=root, num_train=num_train, num_test=num_test, seed=seed,
                   progress=progress, workers=workers)
    if layout in MINMAX_LAYOUTS:
        return prepare_minmax_synthetic(cfg, root, num_train, num_test, seed, progress)
    height, width = (int(x) for x in cfg.IMAGE_SHAPE)
    default_train, default_test = DEFAULT_COUNTS.get(getattr(cfg, "PROFILE", ""), FALLBACK_COUNTS)
    num_train = default_train if num_train is None else int(num_train)
    num_test = default_test if num_test is None else int(num_test)
    _check_args(layout, num_train, num_test, height, width)
    root = Path(root) if root is not None else default_root(layout, num_train, num_test,
                                                            height, width, seed)
    return prepare(root, _params(layout, num_train, num_test, height, width, seed),
                   lambda r: is_complete(r, layout, num_train, num_test, height, width, seed),
                   lambda r: write_dataset(r, layout, num_train, num_test, height, width, seed,
                                           progress=progress, workers=workers))
