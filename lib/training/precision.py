"""Numeric precision and memory layout of a run: ``--amp {off,fp16,bf16}``, ``--channels-last``.

``off`` (default) runs in float32, bit for bit as without this module. ``bf16`` runs the
forward pass under ``torch.autocast`` with bfloat16 (CPU or CUDA; no gradient scaler: bfloat16
has float32's range); ``fp16`` does so with float16 and a ``GradScaler`` (CUDA only). Either
way the parameters, the optimiser state, the masks and the losses stay float32: the network's
outputs are cast back to float32 before any loss or metric, so pruned weights stay exactly
zero and masks exactly binary. ``channels_last`` stores the network's 4-D weights and the
input images in NHWC order (faster convolutions on recent GPUs; values unchanged).

Both are config keys (``AMP``, ``CHANNELS_LAST``) that a keyword or option overrides, and
both are recorded in a run's settings, so resume refuses a change.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

PRECISIONS = ("off", "fp16", "bf16")
DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``amp`` (one of :data:`PRECISIONS`) and ``channels_last``."""
    amp: str = "off"
    channels_last: bool = False

    @classmethod
    def resolve(cls, cfg=None, amp: str | bool | None = None,
                channels_last: bool | None = None) -> "Precision":
        """``amp`` / ``channels_last`` if given, else the config's ``AMP`` / ``CHANNELS_LAST``
        (``"off"`` / ``False`` without them). ``amp=True`` is ``"fp16"`` and ``False`` is
        ``"off"`` (the earlier boolean option). A one-line ValueError for anything else."""
        if amp is None:
            amp = getattr(cfg, "AMP", "off") if cfg is not None else "off"
        if amp is True or amp is False:
            amp = "fp16" if amp else "off"
        if amp not in PRECISIONS:
            raise ValueError(f"AMP={amp!r}: expected one of {list(PRECISIONS)}")
        if channels_last is None:
            channels_last = getattr(cfg, "CHANNELS_LAST", False) if cfg is not None else False
        if not isinstance(channels_last, bool):
            raise ValueError(f"CHANNELS_LAST={channels_last!r}: expected True or False")
        return cls(amp, channels_last)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for float32."""
        return DTYPES[self.amp]

    def check(self, device: torch.device) -> None:
        """A one-line ValueError when ``device`` cannot run this precision."""
        if self.amp == "fp16" and device.type != "cuda":
            raise ValueError(f"--amp fp16 needs a CUDA device (float16 with a gradient scaler); "
                             f"this run is on {device}: use --amp bf16 or off")

    def record(self) -> dict[str, Any]:
        """What a run's settings hold of it (resume refuses a change)."""
        return {"amp": self.amp, "channels_last": self.channels_last}

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward pass's context: autocast to :attr:`dtype`, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """float16's gradient scaler; None otherwise."""
        return torch.amp.GradScaler(device.type) if self.amp == "fp16" else None

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` with its 4-D parameters and buffers in the run's memory format."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def release(self, model: nn.Module) -> nn.Module:
        """``model`` back in the default (contiguous) memory format after a run."""
        if self.channels_last:
            model.to(memory_format=torch.contiguous_format)
        return model

    def inputs(self, batch: Any) -> Any:
        """``batch`` (a network input: tensor or ``{task: tensor}``) in the run's layout."""
        if not self.channels_last:
            return batch
        if isinstance(batch, dict):
            return {k: self.inputs(v) for k, v in batch.items()}
        if isinstance(batch, torch.Tensor) and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch


def float_outputs(preds: Any) -> Any:
    """Network outputs (a list, a ``{task: tensor}`` dict or a tensor) as float32, so losses
    and metrics never run in a reduced precision."""
    if isinstance(preds, torch.Tensor):
        return preds.float() if preds.is_floating_point() else preds
    if isinstance(preds, dict):
        return {k: float_outputs(v) for k, v in preds.items()}
    if isinstance(preds, (list, tuple)):
        return type(preds)(float_outputs(p) for p in preds)
    return preds


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """``cudnn.benchmark`` on during a CUDA run (training crops have one fixed shape, so the
    fastest convolution algorithms are found once); the previous value restored after."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
