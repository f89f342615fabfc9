"""Where the workspace keeps its runs, so notebooks and commands agree on every path.

    runs/{CONFIG}-{PROFILE}/base/base_model.pth                  the dense base model
    runs/{CONFIG}-{PROFILE}/pruned/{method}_{S}_{tasks}.pth + .json  a pruned model
    runs/{CONFIG}-{PROFILE}/finetune/<pruned stem>/              its fine-tuning run
    runs/{CONFIG}-{PROFILE}/minmax/<method>_{S}_{tasks}/         a min-max pipeline's stages

:class:`Workspace` is what a notebook starts with: the config with its profile, the data (the
built-in synthetic dataset when no ``DATA_ROOT`` is given), the device, those paths and, in
FAST_MODE (CI: ``CUT_FAST_MODE=1``), the ``tiny`` profile with everything under one temporary
folder and clearly labelled *stand-ins* for the files an earlier notebook would have written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from lib.checkpoints import pruned_filename

RUNS = Path("runs")
FAST_PROFILE = "tiny"


def run_root(config: str, profile: str, runs: str | os.PathLike = RUNS) -> Path:
    """``runs/{config}-{profile}``: every run of one config and profile."""
    return Path(runs) / f"{config}-{profile}"


class Workspace:
    """One notebook's config, data, device and paths.

    Args:
        config, profile: as for :func:`lib.config.load_config`; FAST_MODE forces ``tiny``.
        fast: FAST_MODE: everything (data, runs, figures) in a temporary folder that
            :meth:`close` removes.
        data_root: the dataset folder; None: the built-in synthetic dataset, made on first use.
        seed: seed of the synthetic data, the stand-ins and the loaders.
        num_workers, amp, channels_last: the config's ``NUM_WORKERS``, ``AMP`` and
            ``CHANNELS_LAST`` (None keeps the profile's): data-loading processes, the forward
            pass's precision and memory layout of every loader, training and evaluation.
    """

    def __init__(self, config: str, profile: str, *, fast: bool = False,
                 data_root: str | os.PathLike | None = None, seed: int = 0,
                 num_workers: int | None = None, amp: str | None = None,
                 channels_last: bool | None = None):
        from lib.config import load_config
        from lib.utils import default_device, set_cpu_threads

        set_cpu_threads()
        self.config, self.fast, self.seed = config, bool(fast), int(seed)
        self.profile = FAST_PROFILE if self.fast else profile
        speed = {key: value for key, value in (("NUM_WORKERS", num_workers), ("AMP", amp),
                                               ("CHANNELS_LAST", channels_last))
                 if value is not None}
        self.cfg = load_config(config, profile=self.profile, **speed)
        self.work = Path(tempfile.mkdtemp(prefix=f"cut_{config}_")) if self.fast else None
        self.root = self.work / "runs" if self.fast else run_root(config, self.profile)
        self.device = default_device()
        self._data_root = None if data_root is None else str(data_root)
        self._base: dict[str, Any] = {}   # which base model was loaded, for meta()
        if self._data_root is not None:
            self.cfg.DATA_ROOT = self._data_root

    def __repr__(self) -> str:
        return (f"Workspace({self.config} / {self.profile}{' FAST_MODE' if self.fast else ''}, "
                f"runs {self.root}, device {self.device})")

    # ------------------------------------------------------------------------- data
    def data(self) -> str:
        """The dataset root ``cfg.DATA_ROOT`` points at (the synthetic one is made if needed)."""
        if self._data_root is None:
            from lib.data.synthetic import prepare_synthetic
            self._data_root = prepare_synthetic(
                self.cfg, root=self.work / "data" if self.fast else None, seed=self.seed,
                progress=False)
            self.cfg.DATA_ROOT = self._data_root
        return self._data_root

    def loader(self, split: str = "train", **kwargs):
        """A seeded loader of ``split`` (:func:`lib.data.build_loader`)."""
        from lib.data import build_loader
        self.data()
        return build_loader(self.cfg, split, seed=self.seed, **kwargs)

    def loaders(self, selection: str = "val", val_fraction: float = 0.1):
        """Train / selection / test loaders and the split (:func:`lib.training.make_loaders`)."""
        from lib.training import make_loaders
        self.data()
        return make_loaders(self.cfg, selection=selection, val_fraction=val_fraction,
                            seed=self.seed)

    def criterion(self):
        """The config's weighted multi-task loss over all its tasks
        (:func:`lib.losses.losses_from_config`)."""
        from lib.losses import losses_from_config
        self.data()
        return losses_from_config(self.cfg)

    # ------------------------------------------------------------------------- paths
    def base_dir(self) -> Path:
        return self.root / "base"

    def base_path(self) -> Path:
        return self.base_dir() / "base_model.pth"

    def pruned_dir(self) -> Path:
        return self.root / "pruned"

    def pruned_path(self, method: str, tasks: Sequence[str], sparsity: float,
                    folder: str | os.PathLike | None = None) -> Path:
        """``folder`` (default :meth:`pruned_dir`) ``/ {method}_{sparsity}_{tasks}.pth``."""
        folder = self.pruned_dir() if folder is None else Path(folder)
        return folder / pruned_filename(method, tasks, sparsity=sparsity)

    def finetune_dir(self, pruned_path: str | os.PathLike) -> Path:
        return self.root / "finetune" / Path(pruned_path).stem

    def minmax_dir(self, method: str, tasks: Sequence[str], sparsity: float) -> Path:
        """Where :func:`lib.sparse.minmax_prune` keeps its stages for this selection."""
        return self.root / "minmax" / Path(pruned_filename(method, tasks, sparsity=sparsity)).stem

    def figures(self) -> Path:
        """Where notebooks' figures go: ``runs/{CONFIG}-{PROFILE}/figures`` (FAST_MODE: the
        temporary folder)."""
        return self.root / "figures"

    # ------------------------------------------------------------------------- models
    def base_model(self, path: str | os.PathLike | None = None):
        """``(dense base network on the device, the file it came from, stand_in)``.

        Without a base checkpoint (``path``, default :meth:`base_path`) FAST_MODE saves a
        freshly initialised, UNTRAINED network of the config as a *stand-in* and loads that
        (``stand_in`` True), only to exercise the pipeline; outside FAST_MODE a missing
        checkpoint is an error naming the notebook that writes it.
        """
        from lib.checkpoints import load_base_model, save_initial_model

        path = Path(path) if path is not None else self.base_path()
        stand_in = not path.is_file()
        if stand_in:
            if not self.fast:
                raise FileNotFoundError(f"{path} not found: run train_baseline.ipynb first or "
                                        f"set BASE_CHECKPOINT")
            path = save_initial_model(self.cfg, self.root / "standin_base_model.pth",
                                      seed=self.seed)
            print(f"FAST_MODE: no base model yet; using a freshly initialised (UNTRAINED) "
                  f"stand-in {path}")
        self._base = {"base_checkpoint": str(path), "stand_in_base_model": stand_in}
        return load_base_model(path, self.cfg).to(self.device), path, stand_in

    def stand_in_base(self, base_iters: int = 2):
        """FAST_MODE's stand-in for what train_baseline writes: a base model trained for
        ``base_iters`` iterations at :meth:`base_path`; returns the trained network."""
        from lib.models import model_from_config
        from lib.training import train

        if not self.fast:
            raise RuntimeError("stand-in models exist only in FAST_MODE")
        torch.manual_seed(self.seed)
        return train(model_from_config(self.cfg), self.criterion(), self.loaders().train,
                     self.cfg, self.base_dir(), max_iters=base_iters, seed=self.seed,
                     log=False).net

    def stand_in_pruned(self, method: str, tasks: Sequence[str], sparsity: float,
                        path: str | os.PathLike, base_iters: int = 2) -> Path:
        """FAST_MODE's stand-in for what the earlier notebooks write: :meth:`stand_in_base`,
        pruned with ``method`` at the config's reference keep ratio for ``sparsity`` and saved
        at ``path``. Returns ``path``."""
        from lib.checkpoints import save_pruned
        from lib.pruning import prune, reference_keep_ratio

        dense = self.stand_in_base(base_iters)
        loaders, criterion = self.loaders(), self.criterion()
        result = prune(method, dense, criterion, loaders.train, selected_tasks=list(tasks),
                       keep_ratio=reference_keep_ratio(self.cfg, sparsity), num_batches=1,
                       seed=self.seed)
        return save_pruned(result.net, path, meta={**result.meta, "stand_in": True},
                           full_net=dense)

    def meta(self, **extra: Any) -> dict[str, Any]:
        """What a file written here records about where it comes from: config, profile and,
        once :meth:`base_model` ran, the base checkpoint and whether it was a stand-in."""
        return {"config": self.config, "profile": self.profile, **self._base, **extra}

    def close(self) -> None:
        """FAST_MODE: remove the temporary folder, i.e. everything this workspace wrote."""
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
