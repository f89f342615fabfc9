"""The iteration loop shared by :func:`lib.training.train` and :func:`lib.training.finetune`.

The config's optimiser and schedule (:class:`Schedule`: Adam + StepLR by default, SGD with
momentum and cosine annealing as the min-max trainers use; stepped once per iteration), the
criterion's weighted multi-task loss, seeded and
exactly resumable data order and RNG, periodic validation (RNG-neutral, so it never changes the
training trajectory), atomic checkpoints, a NaN/inf guard, tqdm and tensorboardX on rank 0.

No step waits for the device: each step's loss values (per task, the weighted total, a hook's
penalty) stay on it and are read back together every ``cfg.LOG_FREQ`` steps, before every
validation and checkpoint, and when the weighting needs them (its epoch updates). Then they are
logged and checked: a non-finite one stops the run (a FloatingPointError naming it and its
iteration, at most ``LOG_FREQ`` steps later). Before any checkpoint is written every
parameter, buffer, task weight and optimiser state is checked finite as well, so a checkpoint
never holds NaN/inf and "the last good checkpoint" the error names is one.

Resuming compares the run's recorded settings (every config value, data root and ``--set``
overrides included; the schedule; the seed; the selection metric; the validation split; the
task weighting; the hook) with the new ones and refuses any difference in one line listing the
keys, except the few :data:`RESUMABLE_CHANGES` named in ``allow_changed``.

With ``cfg.BN_RECALIBRATE_BATCHES`` > 0 the BatchNorm statistics are recomputed after the last
step (:mod:`.batchnorm`), before the final model is written and validated.

Two optional additions, both recorded in checkpoints so that a resumed run is exact: a task
weighting (:mod:`lib.training.weighting`, default ``fixed``: the criterion's LAMBDAS) that forms
the loss from the per-task losses, and a hook (:mod:`lib.training.hooks`: mask updates before
the forward pass, a penalty, per-step upkeep) that sparse training plugs in.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lib.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint, unwrap
from lib.config import config_to_dict, load_config
from lib.data import check_files
from lib.models import TaskOutputs, task_outputs
from lib.tasks import batch_items, batch_to, lower_is_better, network_input
from lib.utils import (atomic_torch_save, atomic_write_json, rng_state, seed_everything,
                       set_rng_state)

from . import run_dir as rd
from .batchnorm import recalibrate_batchnorm, recalibration_batches
from .data_order import epoch_loader
from .distributed import (DistInfo, all_gather_objects, broadcast_buffers, device_for,
                          dist_info)
from .hooks import RunContext, TrainingHook, check_same_spec
from .precision import Precision, cudnn_autotune, float_outputs
from .weighting import TaskWeighting, make_weighting

History = dict[str, list[tuple[int, float]]]

# What a resumed run may change when asked to (``allow_changed`` / ``--allow-changed``): how
# often it validates and checkpoints, where its (same) data lives, how long it runs (StepLR
# counts steps, so a longer run continues the same schedule). Anything else (learning rate,
# losses, batch size, data, seed, ...) would silently mix two runs in one, so it is refused.
RESUMABLE_CHANGES = ("VAL_FREQ", "CKPT_FREQ", "DATA_ROOT", "max_iters", "MAX_ITERS",
                     "RETRAIN_EPOCH")
# Config keys that change how fast a run goes, never its numbers: not part of its settings, so
# a run resumes with any value of them.
SPEED_ONLY = ("NUM_WORKERS", "LOG_FREQ")
# Steps between read-backs of the loss values (one host synchronisation each): they are
# logged, checked for NaN/inf and observed by the weighting then. Validation, checkpoints and
# a weighting's epoch updates read back first.
DEFAULT_LOG_FREQ = 10
EvalFn = Callable[[nn.Module, DataLoader, torch.device], Mapping[str, Any]]


OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Optimiser and schedule of one run (recorded in every checkpoint; resume refuses another).

    ``optimizer``: ``"adam"`` (default) or ``"sgd"`` (with ``momentum``); both apply
    ``weight_decay`` as an L2 term, as ``torch.optim`` does. ``lr_schedule``: ``"step"``
    (default; StepLR: multiply by ``decay_rate`` every ``decay_freq`` iterations) or
    ``"cosine"`` (CosineAnnealingLR from ``lr`` to 0 over ``decay_freq`` iterations;
    ``decay_rate`` unused). The scheduler is stepped once per iteration.
    """
    max_iters: int
    lr: float
    weight_decay: float
    decay_freq: int
    decay_rate: float
    optimizer: str = "adam"
    momentum: float = 0.0
    lr_schedule: str = "step"

    @classmethod
    def from_config(cls, cfg, *, retrain: bool, max_iters: int | None = None,
                    lr: float | None = None, weight_decay: float | None = None,
                    decay_freq: int | None = None, decay_rate: float | None = None) -> "Schedule":
        """The config's base-training values (``MAX_ITERS``, ``INIT_LR``, ``DECAY_LR_*``) or, with
        ``retrain``, its fine-tuning values (``RETRAIN_EPOCH``, ``RETRAIN_LR``,
        ``RETRAIN_DECAY_LR_*``); ``WEIGHT_DECAY``, ``OPTIMIZER``, ``MOMENTUM`` and
        ``LR_SCHEDULE`` for both (a config without the last three: Adam + StepLR, the
        reference configs' choice). A keyword given overrides its value."""
        names = (("RETRAIN_EPOCH", "RETRAIN_LR", "RETRAIN_DECAY_LR_FREQ", "RETRAIN_DECAY_LR_RATE")
                 if retrain else ("MAX_ITERS", "INIT_LR", "DECAY_LR_FREQ", "DECAY_LR_RATE"))
        given = (max_iters, lr, decay_freq, decay_rate)
        iters, rate, freq, gamma = (getattr(cfg, n) if v is None else v
                                    for n, v in zip(names, given))
        return cls(max_iters=int(iters), lr=float(rate),
                   weight_decay=float(cfg.WEIGHT_DECAY if weight_decay is None else weight_decay),
                   decay_freq=int(freq), decay_rate=float(gamma),
                   optimizer=str(getattr(cfg, "OPTIMIZER", "adam")),
                   momentum=float(getattr(cfg, "MOMENTUM", 0.0)),
                   lr_schedule=str(getattr(cfg, "LR_SCHEDULE", "step")))

    def validate(self) -> None:
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {self.max_iters}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.decay_freq < 1:
            raise ValueError(f"decay_freq (the schedule's period in iterations) must be >= 1, "
                             f"got {self.decay_freq}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"OPTIMIZER {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"LR_SCHEDULE {self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"MOMENTUM must be in [0, 1), got {self.momentum}")
        if self.optimizer == "adam" and self.momentum != 0.0:
            raise ValueError(f"MOMENTUM {self.momentum} is an SGD setting; OPTIMIZER 'adam' "
                             f"takes MOMENTUM = 0")

    def optimizer_for(self, groups: list[dict]) -> torch.optim.Optimizer:
        """The run's optimiser over ``groups`` (``torch.optim`` parameter groups)."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def scheduler_for(self, optimizer: torch.optim.Optimizer):
        """The run's learning-rate scheduler, stepped once per iteration."""
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.decay_freq)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.decay_freq,
                                               gamma=self.decay_rate)


@dataclass
class TrainResult:
    """What a training or fine-tuning run produced."""
    net: nn.Module
    history: History
    best_checkpoint: Path | None
    last_checkpoint: Path
    final_model: Path
    final_val: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    run_dir: Path | None = None


@dataclass
class Selection:
    """Which validation scalar picks the best checkpoint, and in which direction."""
    metric: str
    mode: str  # "min" or "max"

    @classmethod
    def parse(cls, spec: str | None) -> "Selection":
        """``None`` -> ``val/loss`` (min). A loss or a metric of the task table (e.g.
        ``"val/seg/mIoU"``) gets its known direction; ``"max:NAME"`` / ``"min:NAME"`` say it
        explicitly for anything else (e.g. an ``eval_fn``'s own scalars)."""
        spec = spec or "val/loss"
        if spec.startswith(("min:", "max:")):
            return cls(spec[4:], spec[:3])
        parts = spec.split("/")
        if "loss" in parts:
            return cls(spec, "min")
        direction = lower_is_better(parts[-1])
        if direction is not None:
            return cls(spec, "min" if direction else "max")
        raise ValueError(f"select_metric {spec!r}: prefix it with 'max:' or 'min:' to say "
                         f"whether higher or lower is better (e.g. 'max:val/seg/mIoU')")

    def better(self, value: float | None, best: float | None) -> bool:
        if value is None or not math.isfinite(value):   # undefined / non-finite: never best
            return False
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "val") -> dict[str, float | None]:
    """``{task: {metric: v}}`` (or flat) -> ``{"val/task/metric": v}`` with float values
    (``None``, an undefined metric, stays ``None``: it is not logged and never selected)."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name))
        else:
            out[name] = None if value is None else float(value)
    return out


@torch.no_grad()
def validation_losses(net: nn.Module, criterion, loader: DataLoader, device: torch.device,
                      precision: Precision = Precision()) -> dict[str, float]:
    """Item-weighted mean of the weighted loss and of each task's loss over ``loader`` (the
    forward pass in ``precision``, the losses in float32)."""
    sums: dict[str, float] = {}
    count = 0
    for batch in loader:
        batch = batch_to(batch, device)
        with precision.autocast(device):
            preds = task_outputs(net, precision.inputs(network_input(batch)))
        preds = float_outputs(preds)
        losses = criterion.per_task(preds, batch)
        n = batch_items(batch)
        values = {f"val/loss/{t}": float(v) for t, v in losses.items()}
        values["val/loss"] = float(criterion.weighted(losses))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    if count == 0:
        raise ValueError("the validation loader is empty (0 items)")
    return {k: v / count for k, v in sums.items()}


class _RunLog:
    """tqdm bar, tensorboardX writer and the in-memory history (writers on rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool, history: History, start: int, total: int,
                 desc: str, progress: bool = True):
        self.history = history
        self.enabled = enabled
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / rd.TENSORBOARD))
        self.bar = tqdm(total=total, initial=start, desc=desc,
                        disable=not (enabled and progress), dynamic_ncols=True)
        self.running: dict[str, float] = {}
        self.skipped: set[str] = set()

    def scalars(self, iteration: int, values: Mapping[str, float | None]) -> None:
        for name, value in values.items():
            # An undefined validation metric (None), or a validation loss with nothing to
            # average: not a value, so not logged (the history stays valid JSON) and never best.
            if value is None or not math.isfinite(value):
                if value is not None and name not in self.skipped:
                    self.skipped.add(name)
                    warnings.warn(f"{name} is {value} at iteration {iteration}: not logged "
                                  f"(nor selected) while it is not finite", RuntimeWarning)
                continue
            self.history.setdefault(name, []).append((iteration, float(value)))
            if self.writer is not None:
                self.writer.add_scalar(name, value, iteration)

    def losses(self, scalars: Mapping[str, float]) -> None:
        """One step's ``loss/...`` values into the bar's exponential running means."""
        for k, v in scalars.items():
            if k.startswith("loss/"):
                self.running[k] = v if k not in self.running else \
                    0.9 * self.running[k] + 0.1 * v
        self.bar.set_postfix({k.split("/")[-1] if k != "loss/total" else "loss": f"{v:.4g}"
                              for k, v in self.running.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def run_loop(net: nn.Module, criterion, train_loader: DataLoader, cfg, run_dir, *,
             schedule: Schedule, phase: str, final_name: str, val_loader: DataLoader | None,
             seed: int, device, resume, overwrite: bool, amp: str | bool | None,
             eval_fn: EvalFn | None,
             select_metric: str | None, log: bool, split: Mapping[str, Any] | None,
             after_step: Callable[[nn.Module], None] | None = None,
             save_final: Callable[[nn.Module, Path], None] | None = None,
             weighting: str | Mapping[str, Any] | TaskWeighting | None = None,
             hook: TrainingHook | None = None,
             allow_changed: Sequence[str] = (),
             channels_last: bool | None = None, progress: bool = True) -> TrainResult:
    """Run ``schedule.max_iters`` iterations of ``phase`` ("train" or "finetune").

    ``amp`` / ``channels_last`` (default: ``cfg.AMP`` / ``cfg.CHANNELS_LAST``) choose the
    precision and layout (:mod:`.precision`); both are recorded in the run's settings.

    ``weighting`` (name, ``{"name": ..., **options}`` or instance; default ``fixed``) forms
    each iteration's loss; ``hook`` adds mask updates / a penalty (see :mod:`.hooks`).
    Every file the loaders' dataset index lists must exist (checked before anything is
    written). ``resume`` refuses a checkpoint written with other settings
    (:func:`run_settings`) but for the :data:`RESUMABLE_CHANGES` keys in ``allow_changed``.
    """
    schedule.validate()
    recalibrate = recalibration_batches(cfg)
    allow_changed = check_allow_changed(allow_changed, resume)
    for data_loader in (train_loader, val_loader):
        if data_loader is not None:
            check_files(data_loader)
    info = dist_info()
    device = device_for(info, device)
    precision = Precision.resolve(cfg, amp, channels_last)
    precision.check(device)
    selection = Selection.parse(select_metric)
    weighting = make_weighting(weighting, criterion.tasks, criterion.lambdas)
    if hook is not None:
        hook.check(unwrap(net), schedule.max_iters)
    run_dir = Path(run_dir)
    _prepare_everywhere(run_dir, resume, overwrite, info)

    model = precision.prepare(unwrap(net).to(device))
    net_tasks = getattr(model, "tasks", None)
    if net_tasks is not None and list(criterion.tasks) != list(net_tasks):
        raise ValueError(f"the criterion's tasks {list(criterion.tasks)} differ from the "
                         f"network's tasks {list(net_tasks)}; build it with "
                         f"criterion.restricted_to(net.tasks)")
    seed_everything(seed + info.rank)
    data = epoch_loader(train_loader, seed=seed, rank=info.rank, world_size=info.world_size,
                        pin_memory=device.type == "cuda")
    weighting.bind(data.batches_per_epoch, device)
    if hook is not None:   # may install masks: before the optimiser sees the parameters
        hook.setup(model, RunContext(criterion, weighting, device, seed, schedule.max_iters,
                                     weighting.epoch_iters or data.batches_per_epoch, info))
    if info.is_main and split is not None and not resume:
        atomic_write_json(dict(split), run_dir / rd.SPLIT)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the network has no trainable parameters")
    groups = [{"params": params}] + ([{"params": weighting.parameters()}]
                                     if weighting.parameters() else [])
    optimizer = schedule.optimizer_for(groups)
    scheduler = schedule.scheduler_for(optimizer)
    scaler = precision.scaler(device)
    # Runs either batch form (one input for all tasks, or one per task) through a forward.
    train_net: nn.Module = TaskOutputs(model)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_net = DDP(train_net, device_ids=[device.index] if device.type == "cuda" else None)

    iteration, history, best = 0, {}, {"metric": selection.metric, "mode": selection.mode,
                                       "value": None, "iteration": None}
    last_path, best_path = run_dir / rd.LAST, run_dir / rd.BEST
    config = config_to_dict(cfg)
    settings = {**run_settings(config, schedule, seed, selection, split), **precision.record()}
    if resume:
        source = rd.resume_path(run_dir, resume)
        ckpt = read_checkpoint(source)
        if int(ckpt.get("iteration") or 0) > schedule.max_iters:
            # == max_iters: only the final files are (re)written
            raise ValueError(f"checkpoint {source} is at iteration {ckpt['iteration']}, beyond "
                             f"max_iters={schedule.max_iters}")
        saved_weighting, saved_hook = _check_resumable(ckpt, source, phase, info, criterion,
                                                       weighting, hook, settings, allow_changed)
        load_checkpoint(ckpt, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        restore_rng=True, rank=info.rank)
        weighting.load_state_dict(saved_weighting["state"])
        if hook is not None:
            hook.load_state_dict(saved_hook["state"])
        data.load_state_dict(ckpt["data"])
        iteration, history, best = int(ckpt["iteration"]), ckpt["history"], ckpt["best"]

    val_freq, ckpt_freq = int(cfg.VAL_FREQ), int(cfg.CKPT_FREQ)
    log_freq = _log_freq(cfg)
    runlog = _RunLog(run_dir, log and info.is_main, history, iteration, schedule.max_iters,
                     desc=phase, progress=progress)
    final_val: dict[str, float] = {}
    written: list[int] = []   # iterations this process wrote last.pth at

    def checkpoint(path: Path, kind: str, rng: Any = None) -> None:
        extra = {"phase": phase, "history": history, "best": best,
                 "schedule": schedule.__dict__, "seed": seed, "world_size": info.world_size,
                 "split": None if split is None else dict(split),
                 "weighting": {"spec": weighting.spec(), "state": weighting.state_dict()},
                 "precision": precision.record(),
                 "hook": None if hook is None else {"spec": hook.spec(),
                                                     "state": hook.state_dict()}}
        save_checkpoint(path, model, optimizer=optimizer if kind == "last" else None,
                        scheduler=scheduler if kind == "last" else None,
                        scaler=scaler if kind == "last" else None, iteration=iteration,
                        config=config, rng=rng, data_state=data.state_dict(), extra=extra,
                        kind=kind)
        if kind == "last":
            written.append(iteration)

    values = _PendingValues(info)

    def read_back(iteration: int, check_state: bool) -> None:
        """The steps since the last read-back: their loss values come to the host in one
        transfer, are checked (a FloatingPointError at the first non-finite one), logged and
        observed by the weighting; with ``check_state`` (before validating or writing a
        checkpoint) every parameter, buffer and optimiser state tensor is checked too."""
        kept = _kept_message(last_path, written)
        for step, scalars, lr in values.read(iteration, kept):
            weighting.observe({t: scalars[f"loss/{t}"] for t in weighting.tasks}, step - 1)
            scalars["lr"] = lr
            runlog.scalars(step, scalars)
            runlog.losses(scalars)
        if weighting.adaptive:
            runlog.scalars(iteration, {f"weight/{t}": w for t, w in weighting.weights().items()})
        if check_state:
            _guard_finite_state(model, weighting, optimizer, iteration, kept)

    def validate() -> dict[str, float]:
        saved = rng_state()  # validation must not shift the training RNG stream
        model.eval()
        try:
            values = validation_losses(model, criterion, val_loader, device, precision)
            if eval_fn is not None:
                values.update(flatten_metrics(eval_fn(model, val_loader, device)))
        finally:
            model.train()
            set_rng_state(saved)
        return values

    with cudnn_autotune(device):   # fixed training shapes: autotuned once (CUDA)
        train_net.train()
        try:
            batches = iter(data)
            while iteration < schedule.max_iters:
                batch = batch_to(next(batches), device)
                if hook is not None:
                    hook.before_forward(model, batch, iteration)
                with precision.autocast(device):
                    preds = train_net(precision.inputs(network_input(batch)))
                # Losses, weights and penalty in float32 whatever the forward's precision.
                losses = criterion.per_task(float_outputs(preds), batch)
                total = weighting.total(losses)
                penalty = hook.penalty(model) if hook is not None else None
                if penalty is not None:
                    total = total + penalty
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(total).backward()
                    _average_grads(weighting.parameters(), info)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    total.backward()
                    _average_grads(weighting.parameters(), info)
                    optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(model)
                if hook is not None:
                    hook.after_step(model, iteration)
                # Detached step values stay on the device until the next read-back.
                values.append(iteration + 1, losses, total, penalty,
                              optimizer.param_groups[0]["lr"])
                iteration += 1
                runlog.bar.update(1)

                is_last = iteration == schedule.max_iters
                validating = val_loader is not None and info.is_main and (
                    iteration % val_freq == 0 or is_last)
                checkpointing = iteration % ckpt_freq == 0 or is_last
                if (validating or checkpointing or iteration % log_freq == 0
                        or weighting.needs_values(iteration - 1)):
                    read_back(iteration, check_state=validating or checkpointing)
                if validating:
                    final_val = validate()
                    runlog.scalars(iteration, final_val)
                    if selection.metric not in final_val:
                        raise KeyError(f"select_metric {selection.metric!r} is not among the "
                                       f"validation scalars {sorted(final_val)}")
                    value = final_val[selection.metric]
                    if selection.better(value, best["value"]):
                        best.update(value=value, iteration=iteration)
                        checkpoint(best_path, "best")
                if checkpointing:
                    rng = all_gather_objects(rng_state(), info)
                    if info.is_main:
                        checkpoint(last_path, "last", rng if info.enabled else rng[0])
        finally:
            runlog.close()
    precision.release(model)   # the standard layout again, for what follows and the caller
    # Each rank updated BatchNorm statistics on its own last batch: adopt rank 0's (= saved).
    broadcast_buffers(model, info)
    if hook is not None:
        hook.finish(model)
    if recalibrate:   # after the hook's last mask change; the same batches on every resume
        recalibrate_batchnorm(model, epoch_loader(train_loader, seed=seed, rank=info.rank,
                                                  world_size=info.world_size,
                                                  pin_memory=device.type == "cuda"),
                              recalibrate, device)
        broadcast_buffers(model, info)
        if val_loader is not None and info.is_main:
            final_val = validate()   # of the model as written, not as the last step left it

    final_path = run_dir / final_name
    if info.is_main:
        if save_final is not None:
            save_final(model, final_path)
        else:
            atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                              final_path)
        atomic_write_json({k: [list(p) for p in v] for k, v in history.items()},
                          run_dir / rd.HISTORY)
    return TrainResult(net=model, history=history,
                       best_checkpoint=best_path if best["iteration"] is not None else None,
                       last_checkpoint=last_path, final_model=final_path, final_val=final_val,
                       iterations=iteration, run_dir=run_dir)


def check_allow_changed(allow_changed: Sequence[str], resume) -> tuple[str, ...]:
    """``allow_changed`` as a tuple after one-line errors for keys that may never change on
    resume (not in :data:`RESUMABLE_CHANGES`) or for a run that does not resume."""
    allow_changed = tuple(allow_changed or ())
    bad = [k for k in allow_changed if k not in RESUMABLE_CHANGES]
    if bad:
        raise ValueError(f"--allow-changed {bad}: only {list(RESUMABLE_CHANGES)} may change "
                         f"when a run is resumed")
    if allow_changed and not resume:
        raise ValueError(f"--allow-changed {list(allow_changed)} is for resumed runs (--resume)")
    return allow_changed


def run_settings(config: Mapping[str, Any], schedule: Schedule, seed: int,
                 selection: Selection, split: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, as one flat dict: every config
    value (upper-case keys: data root and overrides included), the schedule (``max_iters``,
    ``lr``, ``weight_decay``, ``decay_freq``, ``decay_rate``), ``seed``, ``select_metric``
    and the validation ``split``; not the :data:`SPEED_ONLY` keys."""
    config = {k: v for k, v in dict(config).items() if k not in SPEED_ONLY}
    return {**config, **dict(schedule.__dict__), "seed": int(seed),
            "select_metric": f"{selection.mode}:{selection.metric}",
            "split": None if split is None else dict(split)}


def saved_settings(ckpt: Mapping[str, Any], current: Mapping[str, Any],
                   phase: str) -> dict[str, Any]:
    """:func:`run_settings` of the run that wrote ``ckpt``, keyed like ``current``. A setting an
    older checkpoint did not record counts as its default: a config key as the recorded
    config's (and profile's) value, the schedule as that config's, anything else as unchanged."""
    config = dict(ckpt.get("config") or {})
    defaults: dict[str, Any] = {}
    if config.get("CONFIG_NAME"):
        try:
            base = load_config(config["CONFIG_NAME"], profile=config.get("PROFILE", "reference"))
            defaults = {**config_to_dict(base),
                        **Schedule.from_config(base, retrain=phase == "finetune").__dict__}
        except (ValueError, AttributeError):
            defaults = {}
    recorded = {**defaults, **config, **dict(ckpt.get("schedule") or {})}
    if "seed" in ckpt:
        recorded["seed"] = int(ckpt["seed"])
    best = ckpt.get("best") or {}
    if best.get("metric") is not None:
        recorded["select_metric"] = f"{best.get('mode')}:{best['metric']}"
    if "split" in ckpt:
        recorded["split"] = ckpt["split"]
    recorded.update(ckpt.get("precision") or {})
    return {key: recorded.get(key, value) for key, value in current.items()}


def _check_resumable(ckpt: Mapping[str, Any], source: Path, phase: str, info: DistInfo,
                     criterion, weighting: TaskWeighting, hook: TrainingHook | None,
                     settings: Mapping[str, Any], allow_changed: Sequence[str]):
    """One-line errors, before anything is loaded, when ``ckpt`` cannot continue this run
    (another process count, phase, setting, weighting or hook); returns its recorded weighting
    and hook records."""
    if int(ckpt.get("world_size", 1)) != info.world_size:
        raise ValueError(f"cannot resume exactly from {source}: it was written by "
                         f"{ckpt.get('world_size')} process(es), this run has "
                         f"{info.world_size}; resume with the same --nproc_per_node")
    if ckpt.get("phase") != phase:
        raise ValueError(f"cannot resume {phase!r} from {source}: it is a "
                         f"{ckpt.get('phase')!r} checkpoint")
    check_same_spec(saved_settings(ckpt, settings, phase), settings, "settings", str(source),
                    allowed=allow_changed, hint=f" (only {list(RESUMABLE_CHANGES)} may change, "
                                                f"with --allow-changed KEY)")
    # A checkpoint from before task weightings were recorded used the fixed LAMBDAS.
    saved_weighting = ckpt.get("weighting") or {
        "spec": make_weighting(None, criterion.tasks, criterion.lambdas).spec(), "state": {}}
    check_same_spec(saved_weighting["spec"], weighting.spec(), "task weighting", str(source))
    saved_hook = ckpt.get("hook")
    check_same_spec(None if saved_hook is None else saved_hook["spec"],
                    None if hook is None else hook.spec(), "training hook", str(source))
    return saved_weighting, saved_hook


def _prepare_everywhere(run_dir: Path, resume, overwrite: bool, info: DistInfo) -> None:
    """Rank 0 prepares the run directory; every rank raises the same error if that fails."""
    error = None
    if info.is_main:
        try:
            rd.prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        except (OSError, ValueError) as exc:
            error = exc
    errors = all_gather_objects(None if error is None else f"{type(error).__name__}: {error}",
                                info)
    if error is not None:
        raise error
    if errors[0] is not None:
        raise RuntimeError(f"rank 0 could not prepare {run_dir}: {errors[0]}")


class _PendingValues:
    """The loss values of the steps since the last read-back, kept on the device.

    Each step appends one detached vector (per-task losses, the weighted total, the penalty;
    averaged over ranks, so a NaN on any rank reaches every rank) without waiting for it;
    :meth:`read` brings them all to the host in one transfer (the only host synchronisation
    of the loss values) and checks them.
    """

    def __init__(self, info: DistInfo):
        self.info = info
        self.names: list[str] = []
        self.pending: list[tuple[int, torch.Tensor, float]] = []

    def append(self, step: int, losses: Mapping[str, torch.Tensor], total: torch.Tensor,
               penalty: torch.Tensor | None, lr: float) -> None:
        names = [f"loss/{t}" for t in losses] + ["loss/total"] + (
            ["loss/penalty"] if penalty is not None else [])
        if names != self.names and self.pending:
            raise RuntimeError(f"the losses changed from {self.names} to {names} mid-run")
        self.names = names
        parts = [*losses.values(), total] + ([penalty] if penalty is not None else [])
        vector = torch.stack([v.detach().float().reshape(()) for v in parts])
        if self.info.enabled:
            import torch.distributed as dist
            dist.all_reduce(vector, op=dist.ReduceOp.SUM)
            vector /= self.info.world_size
        self.pending.append((step, vector, lr))

    def read(self, iteration: int, kept: str) -> list[tuple[int, dict[str, float], float]]:
        """``[(step, {name: value}, lr)]`` of the pending steps (1-based step numbers), emptied;
        a FloatingPointError naming the first non-finite value, its step, that the run stopped
        at ``iteration`` and ``kept`` (what is left on disk)."""
        if not self.pending:
            return []
        rows = torch.stack([v for _, v, _ in self.pending]).tolist()   # the one host sync
        steps = [(step, dict(zip(self.names, row)), lr)
                 for (step, _, lr), row in zip(self.pending, rows)]
        self.pending = []
        for step, scalars, _ in steps:
            bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
            if bad:
                name, value = next(iter(bad.items()))
                what = (f"loss of task {name[5:]!r}" if name not in ("loss/total", "loss/penalty")
                        else "the weighted total loss" if name == "loss/total"
                        else "the training hook's penalty")
                raise FloatingPointError(f"{what} is {value} at iteration {step}; stopped at "
                                         f"iteration {iteration}; {kept}")
        return steps


def _kept_message(last_path: Path, written: Sequence[int]) -> str:
    """What a stopped run leaves: the last checkpoint it wrote (each was checked finite)."""
    if written:
        return f"the last good checkpoint {last_path} (iteration {written[-1]}) is intact"
    if last_path.is_file():
        return f"the checkpoint {last_path} this run resumed from is intact"
    return "no checkpoint had been written yet"


def _guard_finite_state(model: nn.Module, weighting: TaskWeighting,
                        optimizer: torch.optim.Optimizer, iteration: int, kept: str) -> None:
    """A FloatingPointError naming the first non-finite parameter, buffer, task weight or
    optimiser state tensor after ``iteration`` (checked on the device, read back once)."""
    named = [(n, t) for n, t in model.state_dict(keep_vars=True).items()]
    named += [(f"task weighting parameter {i}", p) for i, p in enumerate(weighting.parameters())]
    for i, state in enumerate(optimizer.state.values()):
        named += [(f"optimiser state {k} of parameter {i}", v) for k, v in state.items()
                  if isinstance(v, torch.Tensor)]
    named = [(n, t.detach()) for n, t in named if t.is_floating_point() and t.numel()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return
    bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
    raise FloatingPointError(f"non-finite values in {bad[0]}"
                             f"{f' and {len(bad) - 1} other tensors' if len(bad) > 1 else ''} "
                             f"after iteration {iteration}; stopped before writing a "
                             f"checkpoint; {kept}")


def _log_freq(cfg) -> int:
    """How many steps between read-backs of the loss values (``cfg.LOG_FREQ``, default
    :data:`DEFAULT_LOG_FREQ`)."""
    value = getattr(cfg, "LOG_FREQ", DEFAULT_LOG_FREQ)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"LOG_FREQ={value!r}: expected an integer >= 1 (steps between "
                         f"read-backs of the loss values)")
    return value


def _average_grads(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of parameters outside the DDP-wrapped model (learnable task
    weights) over ranks, so every rank takes the same step."""
    if not info.enabled or not params:
        return
    import torch.distributed as dist
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= info.world_size
