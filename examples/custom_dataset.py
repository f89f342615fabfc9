"""A new dataset in one file: its reader, losses, evaluator, synthetic writer and config, and
one ``register_dataset`` line (docs/ARCHITECTURE.md, "Adding a dataset").

    import examples.custom_dataset                          # registers "toy_scenes"
    cfg = lib.config.load_config("toy_scenes", profile="tiny")
    cfg.DATA_ROOT = lib.data.synthetic.prepare_synthetic(cfg)   # this file's writer
    loader = lib.data.build_loader(cfg, "train")                # this file's reader
    criterion = lib.losses.losses_from_config(cfg)             # this file's losses
    evaluator = lib.metrics.metrics_from_config(cfg)           # this file's evaluator

Nothing in ``lib`` is edited; the CLI, ``prune`` and the study reach it by its config name.
From the command line (and the study's workers, which inherit the variable), name the file in
``CUT_PLUGINS`` (``tests/test_plugins.py`` runs these):

    export CUT_PLUGINS=examples/custom_dataset.py
    python -m lib synthetic --config toy_scenes --profile tiny --out data/toy   # prepare_toy
    python -m lib train --config toy_scenes --profile tiny --data-root data/toy --out runs/base
    python -m lib prune --checkpoint runs/base/base_model.pth --tasks mask height \
        --sparsity 50 --data-root data/toy --out runs/pruned
    python -m lib evaluate --checkpoint runs/pruned/cut_50_mask-height.pth --data-root data/toy

The scenes: a noisy image with one bright rectangle; task ``mask`` segments the rectangle
(2 classes), task ``height`` regresses the image's per-pixel brightness. Its network is
``examples/custom_model.py``'s ``ExampleNet`` (``MODEL`` below).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

import examples.custom_model  # noqa: F401  (registers ExampleNet, the config's MODEL)
from lib.datasets import DatasetSpec, register_dataset
from lib.metrics import TaskMetrics
from lib.utils import atomic_torch_save

NAME = "toy_scenes"
FILES = {"train": "toy_train.pt", "test": "toy_test.pt"}


class ToyConfig:
    """The config ``load_config("toy_scenes", profile=...)`` returns (profiles' ``"*"`` values
    apply to the attributes it has)."""
    DATASET = NAME
    DATA_ROOT = os.environ.get("CUT_DATA_ROOT", "path/to/toy_scenes")
    MODEL = "ExampleNet"
    WIDTH = 8
    TASKS = ["mask", "height"]
    TASKS_NUM_CLASS = [2, 1]
    LAMBDAS = [1, 1]
    IMAGE_SHAPE = (32, 32)
    RESIZE_TO_IMAGE_SHAPE = False
    CROP_H = 32
    CROP_W = 32
    BATCH_SIZE = 4
    NUM_WORKERS = 0
    LOG_FREQ = 10
    AMP = "off"
    CHANNELS_LAST = False
    MAX_ITERS = 200
    INIT_LR = 1e-2
    WEIGHT_DECAY = 5e-4
    DECAY_LR_FREQ = 100
    DECAY_LR_RATE = 0.5
    VAL_FREQ = 50
    CKPT_FREQ = 50
    PRUNE_NUM_BATCHES = 4
    RETRAIN_EPOCH = 50
    RETRAIN_LR = 1e-3
    RETRAIN_DECAY_LR_FREQ = 25
    RETRAIN_DECAY_LR_RATE = 0.5
    BN_RECALIBRATE_BATCHES = 0


# ----------------------------------------------------------------------------- data
def make_scenes(n: int, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` seeded scenes: ``img`` (n x 3 x H x W), ``mask`` (n x 1 x H x W, 0/1), ``height``
    (n x 1 x H x W, the image's channel mean)."""
    g = torch.Generator().manual_seed(seed)
    img = 0.3 * torch.randn(n, 3, height, width, generator=g)
    mask = torch.zeros(n, 1, height, width, dtype=torch.long)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(4, max(5, height // 2), (2,), generator=g))
        top = int(torch.randint(0, height - h + 1, (1,), generator=g))
        left = int(torch.randint(0, width - w + 1, (1,), generator=g))
        mask[i, :, top:top + h, left:left + w] = 1
    img = img + mask.float()
    return {"img": img, "mask": mask, "height": img.mean(dim=1, keepdim=True)}


def prepare_toy(cfg, root=None, num_train=None, num_test=None, seed=0, progress=True,
                workers=1) -> str:
    """The spec's ``synthetic``: write the train and test scenes under ``root`` (default:
    ``$CUT_SYNTHETIC_DIR/toy_scenes_<counts>_<size>_s<seed>``) unless they are there; each
    file is written whole (atomic) or not at all."""
    num_train = 16 if num_train is None else int(num_train)
    num_test = 8 if num_test is None else int(num_test)
    height, width = (int(v) for v in cfg.IMAGE_SHAPE)
    if root is None:
        base = Path(os.environ.get("CUT_SYNTHETIC_DIR", "data/synthetic"))
        root = base / f"{NAME}_{num_train}_{num_test}_{height}x{width}_s{seed}"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", num_train, 0), ("test", num_test, 1)):
        path = root / FILES[split]
        if not path.is_file():
            atomic_torch_save(make_scenes(n, height, width, seed * 2 + offset), path)
    return str(root)


class ToyScenes(torch.utils.data.Dataset):
    """The spec's ``reader``: one split of the written scenes. ``ds[i]`` and ``ds[(epoch, i)]``
    (the loaders' key) give item ``i``; training items are flipped by a seeded coin of
    ``(seed, epoch, i)``, so augmentation is reproducible, as ``lib.data``'s readers."""

    def __init__(self, root, split: str, augment: bool, seed: int):
        if split not in FILES:
            raise ValueError(f"{NAME} split {split!r} is not one of {sorted(FILES)}")
        self.root, self.split, self.augment, self.seed = Path(root), split, augment, int(seed)
        path = self.root / FILES[split]
        if not path.is_file():
            raise FileNotFoundError(f"{NAME} file {path} not found (prepare_toy writes it)")
        self.data = torch.load(path, weights_only=True)
        # What each item is made of, first its name: the validation split is checked apart
        # from the test list by these (lib.training.selection).
        self.entries = [[f"{split}/{i}"] for i in range(len(self))]
        self.epoch = 0

    @classmethod
    def from_config(cls, cfg, split, *, augment=None, seed=0) -> "ToyScenes":
        return cls(cfg.DATA_ROOT, split, split == "train" if augment is None else augment, seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.data["img"].shape[0])

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        item = {k: v[i] for k, v in self.data.items()}
        if self.augment:
            coin = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_007 + i)
            if bool(torch.rand(1, generator=coin) < 0.5):
                item = {k: v.flip(-1) for k, v in item.items()}
        item["name"] = f"{self.split}_{i}"
        return item


# ----------------------------------------------------------------------------- losses, metrics
def toy_losses(cfg):
    """The spec's ``losses``: ``{task: fn(pred, batch)}`` for ``cfg.TASKS``."""
    known = {"mask": lambda pred, batch: F.cross_entropy(pred, batch["mask"][:, 0]),
             "height": lambda pred, batch: F.l1_loss(pred, batch["height"])}
    return {t: known[t] for t in cfg.TASKS}


def _mask_metrics(pred, batch):
    hit = (pred.argmax(1) == batch["mask"][:, 0]).float()
    return {"pixel_acc": hit.mean()}


def _height_metrics(pred, batch):
    return {"abs_err": (pred - batch["height"]).abs().mean()}


class ToyEval(TaskMetrics):
    """The spec's ``evaluator``: per-batch means of pixel accuracy and absolute error."""
    METRICS = {"mask": _mask_metrics, "height": _height_metrics}
    NAMES = {"mask": ["pixel_acc"], "height": ["abs_err"]}
    LOWER = {"pixel_acc": False, "abs_err": True}

    @classmethod
    def from_config(cls, cfg, tasks, **options) -> "ToyEval":
        return cls({t: cls.METRICS[t] for t in tasks}, cls.LOWER)

    def delta_options(self) -> dict:
        """:func:`lib.metrics.delta_mtl`'s options: every metric, in its direction."""
        return {"metric_names": {t: self.NAMES[t] for t in self.tasks},
                "lower_is_better": dict(self.LOWER)}


# ----------------------------------------------------------------------------- the spec
register_dataset(DatasetSpec(
    name=NAME,
    summary="toy scenes: a bright rectangle's mask and the image's brightness",
    tasks=("mask", "height"),
    configs={NAME: ToyConfig},
    reader=ToyScenes,
    synthetic=prepare_toy,
    losses=toy_losses,
    evaluator=ToyEval,
    metric_options={},
    panels={"mask": "labels", "height": "depth"},
    disparse_dynamic={"interval": 10, "end": 150, "grad_chunks": 1},
    keep_ratios={"cut": {}},
))
