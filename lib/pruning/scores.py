"""Importance scores: CUT's per-task |w * dL_t/dw| (shared forward), its naive oracle, SNIP's
joint score, magnitudes and random scores, for any :class:`~lib.models.MultiTaskModel`.

Score dicts are ``{module name: tensor shaped like the weight}`` (per task:
``{task: {module name: tensor}}``), always float32, on the scoring device. Task model ``t`` is
the shared layers plus ``t``'s own (:func:`lib.models.task_model_layers`); the loss is any
:class:`lib.losses.TaskLosses` knowing the tasks, fed the network's outputs by task name
(:func:`lib.models.task_outputs`: on a ``lib.tasks.TaskBatches`` step every task model runs on
its own task's data).
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import itertools
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
from tqdm.auto import tqdm

from lib.masks import effective_weight, has_masks, weight_parameter
from lib.models import (MultiTaskModel, check_model, check_selection, prunable_layers,
                        task_model_layers, task_outputs)
from lib.tasks import batch_to, network_input
from lib.utils import resolve_device

SCORING_MODES = ("eval", "train")


def check_criterion(criterion: Any, tasks: Sequence[str]) -> None:
    """One-line error unless ``criterion`` is a TaskLosses-like object knowing every task."""
    if not hasattr(criterion, "task_loss") or not hasattr(criterion, "tasks"):
        raise TypeError(f"criterion must be a lib.losses.TaskLosses (e.g. SceneNetLoss), got "
                        f"{type(criterion).__name__}")
    unknown = [t for t in tasks if t not in criterion.tasks]
    if unknown:
        raise ValueError(f"the criterion has no loss for task(s) {unknown}; its tasks: "
                         f"{criterion.tasks}")


# Whether scoring shows a progress bar when its caller does not say (``progress=None``):
# :func:`lib.pruning.prune`'s ``progress`` reaches every method's scoring through it.
_SHOW_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("score_progress",
                                                                     default=True)


@contextlib.contextmanager
def score_progress(enabled: bool) -> Iterator[None]:
    """Scoring inside the block shows its progress bar only if ``enabled``."""
    token = _SHOW_PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def take_batches(loader: Iterable, num_batches: int, desc: str = "scoring",
                 progress: bool | None = None) -> Iterator[Mapping[str, Any]]:
    """Yield the first ``num_batches`` batches of ``loader`` (with a progress bar when
    ``progress``; ``None``: as :func:`score_progress` says, shown by default).

    Raises a one-line ValueError if ``num_batches`` is not a positive integer or if the loader
    provides fewer batches (it is never cycled: scoring the same batch twice would silently
    weight it double).
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    if loader is None:
        raise ValueError("this method needs a data loader, got None")
    if hasattr(loader, "__len__") and len(loader) < num_batches:
        raise ValueError(f"num_batches={num_batches} but the loader provides only "
                         f"{len(loader)} batches")
    if progress is None:
        progress = _SHOW_PROGRESS.get()
    count = 0
    for batch in tqdm(itertools.islice(loader, num_batches), total=num_batches, desc=desc,
                      leave=False, disable=not progress):
        count += 1
        yield batch
    if count < num_batches:
        raise ValueError(f"num_batches={num_batches} but the loader provided only {count} batches")


@contextlib.contextmanager
def scoring_state(net: nn.Module, mode: str, weights: Sequence[nn.Parameter]):
    """Put ``net`` in ``mode`` with ``weights`` requiring grad; restore everything afterwards.

    In train mode BatchNorm running statistics would move; they are snapshotted and restored
    so scoring never changes the network it scores.
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
    training = {m: m.training for m in net.modules()}
    flags = [(w, w.requires_grad) for w in weights]
    buffers = {n: b.detach().clone() for n, b in net.named_buffers()} if mode == "train" else {}
    net.train(mode == "train")
    for w, _ in flags:
        w.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, was_training in training.items():
            m.training = was_training
        for w, flag in flags:
            w.requires_grad_(flag)
        if buffers:
            with torch.no_grad():
                for n, b in net.named_buffers():
                    if n in buffers:
                        b.copy_(buffers[n])


def _scoring_device(net: nn.Module, device) -> torch.device:
    if device is None:
        return next(net.parameters()).device
    device = resolve_device(device)
    net.to(device)
    return device


def _accumulate(acc: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    if name in acc:
        acc[name] += value
    else:
        acc[name] = value


def task_scores(net: MultiTaskModel, criterion, loader: Iterable, tasks: Sequence[str],
                num_batches: int, mode: str = "eval", device=None, progress: bool | None = None
                ) -> dict[str, dict[str, torch.Tensor]]:
    """CUT's per-task importance: ``s_t(w) = sum_batches |w * dL_t/dw|`` over task model t.

    Task model t is the shared layers plus t's own (``lib.models.task_model_layers``); ``L_t``
    is ``criterion.task_loss(preds, batch, t)``, unweighted. One forward of the network per
    batch serves every task in ``tasks``; only the per-task backward passes (``autograd.grad``
    of each task's loss over that task model's weights, on the shared graph) differ, so the
    result equals :func:`task_scores_reference` to float tolerance. Scores are taken at the
    network's current weights; ``mode="eval"`` (default) uses BatchNorm running statistics and
    no dropout, ``mode="train"`` reproduces the reference notebook's runs (batch statistics,
    dropout on; for a subset of the network's tasks the compact ``net.select(tasks)`` runs, so
    the dropout draws are those of the network CUT prunes). ``device=None`` scores where the
    network is; a device moves it there. The network's weights, buffers and modes are unchanged.
    """
    check_model(net)
    tasks = check_selection(net, tasks)
    check_criterion(criterion, tasks)
    device = _scoring_device(net, device)
    if mode == "train" and tasks != list(net.tasks):
        net = net.select(tasks)
    layers = {t: task_model_layers(net, t) for t in tasks}
    weights = {t: [weight_parameter(m) for m in mods.values()] for t, mods in layers.items()}
    all_weights = list({id(w): w for ws in weights.values() for w in ws}.values())
    scores: dict[str, dict[str, torch.Tensor]] = {t: {} for t in tasks}
    with scoring_state(net, mode, all_weights):
        for batch in take_batches(loader, num_batches, "CUT scores", progress):
            batch = batch_to(batch, device)
            preds = task_outputs(net, network_input(batch))
            for i, t in enumerate(tasks):
                loss = criterion.task_loss(preds, batch, t)
                grads = torch.autograd.grad(loss, weights[t], retain_graph=i < len(tasks) - 1)
                for name, w, g in zip(layers[t], weights[t], grads):
                    _accumulate(scores[t], name, (g * w.detach()).abs().float())
            del preds
    return scores


def task_scores_reference(net: MultiTaskModel, criterion, loader: Iterable, tasks: Sequence[str],
                          num_batches: int, mode: str = "eval", device=None,
                          progress: bool | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The naive oracle for :func:`task_scores`: the reference's procedure, step for step.

    On a copy of ``net`` every prunable weight gets a mask of ones that requires grad
    (``w * m``); for each batch and each task: a full forward of the whole network and a
    backward of that task's loss; ``score += |dL_t/dm|`` (= ``|w * dL_t/dw|`` at m = 1) over
    task model t. Slow by design; kept as the procedure tests and the benchmark
    compare against. Only for networks without installed masks.
    """
    check_model(net)
    if has_masks(net):
        raise ValueError("task_scores_reference needs a network without installed masks")
    tasks = check_selection(net, tasks)
    check_criterion(criterion, tasks)
    device = _scoring_device(net, device)
    if mode not in SCORING_MODES:
        raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
    probe = copy.deepcopy(net).to(device).train(mode == "train")
    for module in prunable_layers(probe).values():
        torch_prune.identity(module, "weight")
        module.weight_orig.requires_grad_(False)
        module.weight_mask.requires_grad_(True)
    layers = {t: task_model_layers(probe, t) for t in tasks}
    scores: dict[str, dict[str, torch.Tensor]] = {t: {} for t in tasks}
    with torch.enable_grad():
        for batch in take_batches(loader, num_batches, "reference scores", progress):
            batch = batch_to(batch, device)
            for t in tasks:
                for module in layers[t].values():
                    module.weight_mask.grad = None
                preds = task_outputs(probe, network_input(batch))
                criterion.task_loss(preds, batch, t).backward()
                for name, module in layers[t].items():
                    _accumulate(scores[t], name, module.weight_mask.grad.abs().float())
    return scores


def joint_scores(net: MultiTaskModel, criterion, loader: Iterable, num_batches: int,
                 mode: str = "eval", device=None, progress: bool | None = None
                 ) -> dict[str, torch.Tensor]:
    """SNIP: ``sum_batches |w * dL/dw|`` with L the weighted loss of ``net.tasks``, every layer."""
    names = list(check_model(net).tasks)
    check_criterion(criterion, names)
    loss_fn = criterion.restricted_to(names)
    device = _scoring_device(net, device)
    layers = prunable_layers(net)
    weights = [weight_parameter(m) for m in layers.values()]
    scores: dict[str, torch.Tensor] = {}
    with scoring_state(net, mode, weights):
        for batch in take_batches(loader, num_batches, "SNIP scores", progress):
            batch = batch_to(batch, device)
            loss = loss_fn(task_outputs(net, network_input(batch)), batch)
            grads = torch.autograd.grad(loss, weights)
            for name, w, g in zip(layers, weights, grads):
                _accumulate(scores, name, (g * w.detach()).abs().float())
    return scores


def magnitude_scores(net: MultiTaskModel, power: int = 1) -> dict[str, torch.Tensor]:
    """``|w| ** power`` of every prunable layer's (effective) weight."""
    return {n: effective_weight(m).detach().abs().float() ** power
            for n, m in prunable_layers(check_model(net)).items()}


def random_scores(net: MultiTaskModel, seed: int) -> dict[str, torch.Tensor]:
    """Uniform [0, 1) scores seeded with ``seed`` (generated on CPU: same masks on any device)."""
    g = torch.Generator().manual_seed(int(seed))
    return {n: torch.rand(weight_parameter(m).shape, generator=g).to(weight_parameter(m).device)
            for n, m in prunable_layers(check_model(net)).items()}
