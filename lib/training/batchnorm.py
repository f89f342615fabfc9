"""BatchNorm statistics recomputed after training ("precise BN").

A BatchNorm layer's running mean and variance are an exponential average over the last few
dozen training batches. With small batches (the CPU profiles train on 8 images) they are noisy,
and a model's test metrics then depend on which batches happened to come last: fine-tuning the
dense model for a few dozen iterations moved its Δ by up to 2.5 % on the bench profile, from
this alone. Recomputing the statistics as the plain average over a fixed set of training
batches, with the weights unchanged, removes that noise (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021). ``cfg.BN_RECALIBRATE_BATCHES`` (0 in the reference configs: statistics as
training left them) turns it on at the end of :func:`lib.training.train` and
:func:`lib.training.finetune`.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from lib.models import TaskOutputs
from lib.tasks import batch_to, network_input
from lib.utils import rng_state, set_rng_state


def recalibration_batches(cfg) -> int:
    """``cfg.BN_RECALIBRATE_BATCHES`` (0 when the config lacks it); a one-line ValueError unless
    it is an integer >= 0."""
    value = getattr(cfg, "BN_RECALIBRATE_BATCHES", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"BN_RECALIBRATE_BATCHES must be an integer >= 0 (0: keep the "
                         f"statistics training leaves), got {value!r}")
    return value


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` that tracks running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, num_batches: int,
                          device: torch.device) -> int:
    """Set every BatchNorm layer's running mean and variance to their average over the first
    ``num_batches`` of ``batches`` (either batch form of :func:`lib.tasks.network_input`).

    Forward passes only, in train mode and without gradients: no weight (masked or not) changes,
    and the RNG state is left as it was. The model's train / eval mode and the layers'
    momentum are restored. Returns the number of batches used (fewer if ``batches`` ends
    first); a ValueError if ``num_batches`` < 1 or ``batches`` is empty, with the statistics
    training left restored (as on any error). A model without BatchNorm is left as it is
    (returns 0).
    """
    if num_batches < 1:
        raise ValueError(f"BN_RECALIBRATE_BATCHES must be >= 1 to recalibrate, got {num_batches}")
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    saved_stats = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                   for m in layers]
    was_training, saved_rng = model.training, rng_state()
    forward = TaskOutputs(model)
    used = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None          # cumulative average over the batches seen
        model.train()
        for batch in batches:
            if used == num_batches:
                break
            forward(network_input(batch_to(batch, device)))
            used += 1
        if used == 0:
            raise ValueError("BatchNorm recalibration got no batch: the training loader is "
                             "empty")
    except BaseException:          # the statistics training left, not half-reset ones
        for m, (mean, var, tracked) in zip(layers, saved_stats):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
        raise
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
        set_rng_state(saved_rng)
    return used
