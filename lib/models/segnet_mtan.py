"""SegNet-MTAN: a SegNet encoder-decoder shared by all tasks, one attention network per task.

The network of Liu et al., *End-to-End Multi-Task Learning with Attention* (CVPR 2019), as the
min-max framework trains it on NYUv2 (``prune_apgda/trainer_apgda.py``): 13-class
segmentation, depth and surface normals at 288x384.

Shared: the five encoder and decoder levels (``encoder_block``, ``conv_block_enc``,
``decoder_block``, ``conv_block_dec``) and the attention networks' feature convolutions
(``encoder_block_att``, ``decoder_block_att``). Task ``k`` (slot ``k - 1``) owns its attention
masks ``encoder_att.{k-1}``, ``decoder_att.{k-1}`` and its head ``pred_task{k}``. State-dict keys
are the reference's, but for its ``logsigma`` (the uncertainty weights of the loss, which are
not part of the network here: see :meth:`SegNetMTAN.split_reference_state_dict`).

Departures, both output-only: the segmentation head returns logits (the reference returns their
``log_softmax`` for an NLL loss; cross-entropy on logits is the same loss and argmax the same
prediction), and normals are normalised with an epsilon (the reference divides by the raw norm).
Unpooling scatters into the pre-pooling shape, so inputs need not be multiples of 32 (at least
32x32) and the network exports to ONNX (``MaxUnpool`` has no exporter).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import (TaskSlots, attention_layer, check_width, finish_output, scaled,
                     slot_list)
from .contract import MultiTaskModel, register_model

FILTERS = (64, 128, 256, 512, 512)
LEVELS = len(FILTERS)
MIN_SIZE = 2 ** LEVELS


def conv_layer(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv -> BN -> ReLU (the reference's ``conv_layer``)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def prediction_layer(channels: int, num_class: int) -> nn.Sequential:
    """3x3 conv -> 1x1 conv to ``num_class`` channels (no normalisation in between)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                         nn.Conv2d(channels, num_class, 1))


def max_unpool2d(x: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.max_unpool2d`` into an ``size`` (H, W) output, written as a scatter so it exports to
    ONNX. ``indices`` are ``max_pool2d(..., return_indices=True)``'s (flat per-plane)."""
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, int(size[0]) * int(size[1]))
    return out.scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, int(size[0]),
                                                                  int(size[1]))


@register_model
class SegNetMTAN(TaskSlots, MultiTaskModel):
    """SegNet with one MTAN attention network per task; ``forward`` returns a list of maps.

    Args:
        tasks_num_class: output channels per task (reference: 13 classes, 1 depth, 3 normals).
        tasks: task names aligned with ``tasks_num_class``; names in
            :data:`~lib.models.common.NORMAL_TASKS` get unit-normalised outputs.
        width_mult: channel multiplier (1.0 = the reference's 64-128-256-512-512 filters).
        task_ids: 1-based slot ids of the tasks present (default ``1..n``).
    """

    def __init__(self, tasks_num_class: Sequence[int] = (13, 1, 3),
                 tasks: Sequence[str] | None = ("seg", "depth", "normal"),
                 width_mult: float = 1.0, task_ids: Sequence[int] | None = None):
        super().__init__()
        self._init_tasks(tasks_num_class, tasks, task_ids)
        self.width_mult = check_width(width_mult)
        f = [scaled(c, self.width_mult) for c in FILTERS]

        self.encoder_block = nn.ModuleList(
            [conv_layer(3, f[0])] + [conv_layer(f[i], f[i + 1]) for i in range(LEVELS - 1)])
        self.decoder_block = nn.ModuleList(
            [conv_layer(f[0], f[0])] + [conv_layer(f[i + 1], f[i]) for i in range(LEVELS - 1)])
        # Levels 0 and 1 have one conv after the level's first, deeper levels two.
        self.conv_block_enc = nn.ModuleList(
            [conv_layer(f[0], f[0]), conv_layer(f[1], f[1])]
            + [nn.Sequential(conv_layer(f[i], f[i]), conv_layer(f[i], f[i]))
               for i in range(2, LEVELS)])
        self.conv_block_dec = nn.ModuleList(
            [conv_layer(f[0], f[0]), conv_layer(f[0], f[0])]
            + [nn.Sequential(conv_layer(f[i - 1], f[i - 1]), conv_layer(f[i - 1], f[i - 1]))
               for i in range(2, LEVELS)])
        # Per-task attention masks (registered before the shared attention convolutions, as
        # in the reference, so that the state-dict order is the reference's too).
        self.encoder_att = slot_list(self.task_ids, lambda k: nn.ModuleList(
            [attention_layer(f[0], f[0], f[0])]
            + [attention_layer(2 * f[i], f[i], f[i]) for i in range(1, LEVELS)]))
        self.decoder_att = slot_list(self.task_ids, lambda k: nn.ModuleList(
            [attention_layer(2 * f[0], f[0], f[0])]
            + [attention_layer(f[i] + f[i - 1], f[i - 1], f[i - 1]) for i in range(1, LEVELS)]))
        # Shared feature convolutions of the attention networks (level i -> level i + 1 width).
        self.encoder_block_att = nn.ModuleList(
            [conv_layer(f[i], f[min(i + 1, LEVELS - 1)]) for i in range(LEVELS)])
        self.decoder_block_att = nn.ModuleList(
            [conv_layer(f[0], f[0])] + [conv_layer(f[i], f[i - 1]) for i in range(1, LEVELS - 1)]
            + [conv_layer(f[-1], f[-1])])
        num_class = dict(zip(self.task_ids, self.tasks_num_class))
        for k in sorted(self.task_ids):
            setattr(self, f"pred_task{k}", prediction_layer(f[0], num_class[k]))

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- contract -----------------------------------------------------------------------------
    def shared_modules(self) -> dict[str, nn.Module]:
        names = ("encoder_block", "conv_block_enc", "decoder_block", "conv_block_dec",
                 "encoder_block_att", "decoder_block_att")
        return {name: getattr(self, name) for name in names}

    def task_modules(self, task: str) -> dict[str, nn.Module]:
        k = self.task_id(task)
        return {f"encoder_att.{k - 1}": self.encoder_att[k - 1],
                f"decoder_att.{k - 1}": self.decoder_att[k - 1],
                f"pred_task{k}": getattr(self, f"pred_task{k}")}

    def architecture(self) -> dict:
        return {"model": "SegNetMTAN", **self._task_record(), "width_mult": self.width_mult}

    @classmethod
    def from_config(cls, cfg) -> "SegNetMTAN":
        return cls(cfg.TASKS_NUM_CLASS, cfg.TASKS, getattr(cfg, "WIDTH_MULT", 1.0))

    @staticmethod
    def split_reference_state_dict(state: dict) -> tuple[dict, torch.Tensor | None]:
        """A reference checkpoint's state dict -> (this network's entries, its ``logsigma``).

        ``logsigma`` is the reference's per-task uncertainty weight (a loss parameter); the rest
        loads strictly into ``SegNetMTAN()``.
        """
        state = dict(state)
        return state, state.pop("logsigma", None)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        if min(img.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"SegNetMTAN needs inputs of at least {MIN_SIZE}x{MIN_SIZE} "
                             f"(five 2x2 poolings), got {tuple(img.shape[-2:])}")
        # Shared encoder: each level's first conv output (attention input) and last output.
        enc_first, enc_last, indices = [], [], []
        x = img
        for level in range(LEVELS):
            first = self.encoder_block[level](x)
            last = self.conv_block_enc[level](first)
            x, idx = F.max_pool2d(last, kernel_size=2, stride=2, return_indices=True)
            enc_first.append(first)
            enc_last.append(last)
            indices.append(idx)
        # Shared decoder, deepest level first: unpooled input and output of each step.
        dec_in, dec_out = [], []
        for level in reversed(range(LEVELS)):
            up = max_unpool2d(x, indices[level], enc_last[level].shape[-2:])
            x = self.conv_block_dec[level](self.decoder_block[level](up))
            dec_in.append(up)
            dec_out.append(x)
        return [finish_output(task, self._task_branch(k, enc_first, enc_last, dec_in, dec_out))
                for task, k in zip(self.tasks, self.task_ids)]

    def _task_branch(self, k: int, enc_first, enc_last, dec_in, dec_out) -> torch.Tensor:
        """Task ``k``'s attention network over the shared features, then its head."""
        encoder_att, decoder_att = self.encoder_att[k - 1], self.decoder_att[k - 1]
        feat = None
        for level in range(LEVELS):
            gate_in = enc_first[0] if level == 0 else torch.cat((enc_first[level], feat), dim=1)
            masked = encoder_att[level](gate_in) * enc_last[level]
            feat = F.max_pool2d(self.encoder_block_att[level](masked), kernel_size=2, stride=2)
        for step, level in enumerate(reversed(range(LEVELS))):
            feat = F.interpolate(feat, size=dec_in[step].shape[-2:], mode="bilinear",
                                 align_corners=True)
            feat = self.decoder_block_att[level](feat)
            feat = decoder_att[level](torch.cat((dec_in[step], feat), dim=1)) * dec_out[step]
        return getattr(self, f"pred_task{k}")(feat)
