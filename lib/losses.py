"""Per-task losses and the weighted multi-task loss (the reference's definitions).

Targets are resized to the prediction's size with nearest interpolation. ``preds`` may be a
list aligned with ``tasks`` (what ``SceneNet.forward`` returns) or a ``{task: tensor}`` dict.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Which batch key holds the ground truth of each task.
TARGET_KEYS = {"seg": "seg", "sn": "normal", "depth": "depth", "keypoint": "keypoint",
               "edge": "edge"}
SEG_IGNORE_INDEX = {"nyuv2_3": 255, "cityscapes": -1, "taskonomy": 255}
DEPTH_VALID_MIN = 3e-5


def resize_target(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Nearest-resize a ``B x C x H x W`` target to the prediction's spatial size, as float."""
    return F.interpolate(target.float(), size=pred.shape[-2:], mode="nearest")


def seg_loss(pred: torch.Tensor, gt: torch.Tensor, ignore_index: int,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    num_class = pred.shape[1]
    logits = pred.permute(0, 2, 3, 1).reshape(-1, num_class)
    labels = resize_target(gt, pred).permute(0, 2, 3, 1).reshape(-1).long()
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)


def normal_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine between normalised prediction and ground truth, on valid pixels.

    A pixel is valid when its max channel < 255 (NYU's invalid marker is (255, 255, 255)).
    """
    p = pred.permute(0, 2, 3, 1).reshape(-1, 3)
    g = resize_target(gt, pred).permute(0, 2, 3, 1).reshape(-1, 3)
    valid = g.max(dim=1).values < 255
    p, g = F.normalize(p[valid]), F.normalize(g[valid])
    return 1 - F.cosine_similarity(p, g).mean()


def depth_valid_mask(gt_resized: torch.Tensor, dataset: str,
                     depth_mask: torch.Tensor | None = None) -> torch.Tensor:
    if dataset == "taskonomy":
        if depth_mask is None:
            raise KeyError("taskonomy depth loss needs the batch key 'depth_mask'")
        mask_resized = F.interpolate(depth_mask.float(), size=gt_resized.shape[-2:])
        return (gt_resized != 255) & (mask_resized.int() == 1)
    return (gt_resized.sum(dim=1, keepdim=True) > DEPTH_VALID_MIN)


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, dataset: str,
               depth_mask: torch.Tensor | None = None) -> torch.Tensor:
    g = resize_target(gt, pred)
    valid = depth_valid_mask(g, dataset, depth_mask)
    return F.l1_loss(pred.masked_select(valid), g.masked_select(valid))


def masked_l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 over pixels whose target is not 255 (keypoint and edge)."""
    g = resize_target(gt, pred)
    valid = g != 255
    return F.l1_loss(pred.masked_select(valid), g.masked_select(valid))


class SceneNetLoss(nn.Module):
    """Weighted multi-task loss ``sum_t LAMBDAS[t] * L_t``; ``task_loss`` gives one L_t unweighted.

    Args:
        dataset: ``"nyuv2_3"``, ``"cityscapes"`` or ``"taskonomy"`` (decides ignore values/masks).
        tasks: task names in the order of the network's outputs.
        lambdas: one weight per task.
        seg_class_weight: optional per-class CE weights (Taskonomy's ``semseg_prior_factor``).
    """

    def __init__(self, dataset: str, tasks: Sequence[str], lambdas: Sequence[float],
                 seg_class_weight: torch.Tensor | np.ndarray | None = None):
        super().__init__()
        if dataset not in SEG_IGNORE_INDEX:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                             f"{sorted(SEG_IGNORE_INDEX)}")
        unknown = [t for t in tasks if t not in TARGET_KEYS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(TARGET_KEYS)}")
        if len(lambdas) != len(tasks):
            raise ValueError(f"lambdas {list(lambdas)} must have one weight per task {list(tasks)}")
        self.dataset = dataset
        self.tasks = list(tasks)
        self.lambdas = [float(x) for x in lambdas]
        weight = None if seg_class_weight is None else torch.as_tensor(
            seg_class_weight, dtype=torch.float32).detach().clone()
        self.register_buffer("seg_class_weight", weight, persistent=False)

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str] | None = None) -> "SceneNetLoss":
        """Loss for ``cfg`` (restricted to ``tasks`` if given); reads Taskonomy's class prior."""
        weight = None
        if cfg.DATASET == "taskonomy" and "seg" in cfg.TASKS:
            weight = load_seg_prior(cfg.DATA_ROOT)
        loss = cls(cfg.DATASET, cfg.TASKS, cfg.LAMBDAS, weight)
        return loss if tasks is None else loss.restricted_to(tasks)

    def restricted_to(self, tasks: Sequence[str]) -> "SceneNetLoss":
        """The same loss over a subset of tasks (e.g. the selected tasks of a compact network)."""
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"task(s) {missing} not in this loss's tasks {self.tasks}")
        lambdas = [self.lambdas[self.tasks.index(t)] for t in tasks]
        return SceneNetLoss(self.dataset, tasks, lambdas, self.seg_class_weight)

    def _pred(self, preds, task: str) -> torch.Tensor:
        if isinstance(preds, Mapping):
            if task not in preds:
                raise KeyError(f"predictions have no task {task!r}; got {sorted(preds)}")
            return preds[task]
        if len(preds) != len(self.tasks):
            raise ValueError(f"got {len(preds)} predictions for tasks {self.tasks}")
        return preds[self.tasks.index(task)]

    def task_loss(self, preds, batch: Mapping[str, torch.Tensor], task: str) -> torch.Tensor:
        """Task ``task``'s own loss, unweighted (the loss used for per-task pruning scores)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of this loss's tasks {self.tasks}")
        pred = self._pred(preds, task)
        key = TARGET_KEYS[task]
        if key not in batch:
            raise KeyError(f"batch has no key {key!r} for task {task!r}; keys: {sorted(batch)}")
        gt = batch[key].to(pred.device)
        if task == "seg":
            weight = self.seg_class_weight
            weight = None if weight is None else weight.to(pred.device)
            return seg_loss(pred, gt, SEG_IGNORE_INDEX[self.dataset], weight)
        if task == "sn":
            return normal_loss(pred, gt)
        if task == "depth":
            mask = batch.get("depth_mask")
            return depth_loss(pred, gt, self.dataset, None if mask is None else mask.to(pred.device))
        return masked_l1_loss(pred, gt)

    def per_task(self, preds, batch) -> dict[str, torch.Tensor]:
        """``{task: unweighted loss}`` for every task."""
        return {t: self.task_loss(preds, batch, t) for t in self.tasks}

    def weighted(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_t LAMBDAS[t] * losses[t]``."""
        return sum(lam * losses[t] for t, lam in zip(self.tasks, self.lambdas))

    def forward(self, preds, batch) -> torch.Tensor:
        return self.weighted(self.per_task(preds, batch))


def load_seg_prior(data_root: str | os.PathLike) -> np.ndarray:
    """Taskonomy's per-class CE weights from ``DATA_ROOT/semseg_prior_factor.npy``."""
    path = Path(data_root) / "semseg_prior_factor.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: Taskonomy's DATA_ROOT must hold "
                                f"semseg_prior_factor.npy (one float weight per seg class)")
    return np.load(path).astype(np.float32)
