"""DiSparse's static protocol, its keep-ratio tables, and its mask-IoU analysis.

**Static protocol** (the DiSparse paper's setting, ``create_pruned_net.py`` then
``launch_training.py --method disparse_static``): the masks come from ``disparse_static``
scores (per-task ``|w * dL_t/dw|`` at a Xavier re-initialised copy, per-task top-k, union over
tasks in the backbone) and are placed on a *freshly initialised* network, which is then trained
from scratch with the base schedule (``MAX_ITERS``, ``INIT_LR``, ``DECAY_LR_*``), masks held.
The workspace's other setting, masks on the pre-trained weights and then fine-tuning, is
``lib.pruning.prune("disparse_static", base, ...)`` + :func:`lib.training.finetune`.

**Keep tables** (``create_pruned_net.py``): the keep ratio DiSparse passes for a nominal
sparsity, per method and dataset (each dataset spec's ``keep_ratios``); any other sparsity falls
back to ``(100 - S) / 100`` as there. :func:`disparse_keep_ratio` reads them by name.

**IoU analysis** (``iou_analysis.py``): per shared layer, with each task's mask,
``#weights kept by exactly 2 tasks / #weights kept by 1 or 2 tasks``, and the same ratio over
all shared layers together. With two tasks that is the masks' IoU; ``rule="all_any"`` gives
``#kept by every task / #kept by any`` (the IoU for any number of tasks). DiSparse runs it at
initialisation with keep ratio 0.078 over 50 batches (200 on Taskonomy):
:func:`iou_at_initialisation`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from lib.datasets import dataset_names, dataset_spec
from lib.models import shared_layers

DISPARSE_TABLES = ("disparse_static", "disparse_pt")
IOU_KEEP_RATIO = 0.078
IOU_RULES = ("reference", "all_any")
IOU_DEFAULT_BATCHES = 50      # iou_analysis.py's --num_batches default


class _KeepTables(Mapping):
    """``{table: {dataset: {sparsity %: keep ratio}}}`` for DiSparse's two tables, read live
    from each dataset's spec (``keep_ratios``; :mod:`lib.datasets`)."""

    def __getitem__(self, table: str) -> dict[str, Mapping[int, float]]:
        if table not in DISPARSE_TABLES:
            raise KeyError(table)
        return {name: dataset_spec(name).keep_ratios[table] for name in dataset_names()
                if table in dataset_spec(name).keep_ratios}

    def __iter__(self):
        return iter(DISPARSE_TABLES)

    def __len__(self) -> int:
        return len(DISPARSE_TABLES)


DISPARSE_KEEP_TABLES = _KeepTables()


def disparse_keep_ratio(table: str, dataset: str, sparsity: float) -> float:
    """The keep ratio DiSparse's ``create_pruned_net.py`` uses for ``table`` (``disparse_static``
    or ``disparse_pt``) on ``dataset`` at ``sparsity`` percent (the dataset spec's table)."""
    if table not in DISPARSE_TABLES:
        raise ValueError(f"unknown DiSparse keep table {table!r}; expected one of "
                         f"{sorted(DISPARSE_TABLES)}")
    rows = dataset_spec(dataset).keep_table(table)
    sparsity = float(sparsity)
    if sparsity.is_integer() and int(sparsity) in rows:
        return rows[int(sparsity)]
    if not 0 <= sparsity < 100:
        raise ValueError(f"sparsity must be a percentage in [0, 100), got {sparsity}")
    return (100 - sparsity) / 100


# ----------------------------------------------------------------------------- static protocol
def static_from_scratch(cfg, criterion, loader, *, selected_tasks: Sequence[str],
                        sparsity: float | None = None, keep_ratio: float | None = None,
                        num_batches: int | None = None, seed: int = 0, device=None,
                        **options):
    """A :class:`lib.pruning.PruneResult`: a freshly initialised compact network (seeded,
    ``lib.models.model_from_config(cfg)``) carrying ``disparse_static`` masks; its ``meta``
    records ``"protocol": "from_scratch"``.

    Give ``sparsity`` (target deployed %, as :func:`lib.pruning.prune`) or ``keep_ratio``
    (e.g. :func:`disparse_keep_ratio`). Train it with :func:`train_from_scratch`.
    """
    from lib.models import model_from_config
    from lib.pruning import prune
    from lib.utils import seed_everything

    seed_everything(seed)
    fresh = model_from_config(cfg)
    result = prune("disparse_static", fresh, criterion, loader,
                   selected_tasks=list(selected_tasks), tasks=cfg.TASKS, sparsity=sparsity,
                   keep_ratio=keep_ratio, num_batches=num_batches or cfg.PRUNE_NUM_BATCHES,
                   seed=seed, device=device, **options)
    result.meta["protocol"] = "from_scratch"
    return result


def train_from_scratch(pruned, criterion, train_loader, cfg,
                       run_dir: str | os.PathLike, *, max_iters: int | None = None,
                       lr: float | None = None, decay_freq: int | None = None,
                       decay_rate: float | None = None, **kwargs: Any):
    """Train ``pruned`` (the :class:`lib.pruning.PruneResult` of :func:`static_from_scratch`;
    masks held, as :func:`lib.training.finetune`, its ``meta`` recorded in
    ``final_model.json``) with the base schedule: ``MAX_ITERS`` iterations at ``INIT_LR``,
    StepLR(``DECAY_LR_FREQ``, ``DECAY_LR_RATE``), each overridable. Other keywords go to
    ``finetune``."""
    from lib.training import finetune

    pick = lambda value, name: getattr(cfg, name) if value is None else value  # noqa: E731
    return finetune(pruned.net, criterion, train_loader, cfg, run_dir, meta=pruned.meta,
                    max_iters=int(pick(max_iters, "MAX_ITERS")), lr=pick(lr, "INIT_LR"),
                    decay_freq=pick(decay_freq, "DECAY_LR_FREQ"),
                    decay_rate=pick(decay_rate, "DECAY_LR_RATE"), **kwargs)


# ----------------------------------------------------------------------------- IoU analysis
def mask_agreement(task_masks: Mapping[str, Mapping[str, torch.Tensor]],
                   layers: Iterable[str], rule: str = "reference") -> dict[str, Any]:
    """DiSparse's per-layer and overall agreement of per-task masks over ``layers``.

    ``task_masks`` is ``{task: {layer: bool mask}}``. Returns ``{"layers": {layer: ratio},
    "overall": ratio, "rule": rule, "tasks": [...]}``; a layer no task keeps anything of has
    ratio ``nan`` there and counts nothing overall.
    """
    if rule not in IOU_RULES:
        raise ValueError(f"IoU rule must be one of {list(IOU_RULES)}, got {rule!r}")
    tasks = list(task_masks)
    if len(tasks) < 2:
        raise ValueError(f"mask agreement needs at least two tasks' masks, got {tasks}")
    per_layer, agree_total, kept_total = {}, 0, 0
    for name in layers:
        votes = sum(task_masks[t][name].to(torch.int64) for t in tasks)
        if rule == "reference":
            agree, kept = int((votes == 2).sum()), int(((votes == 1) | (votes == 2)).sum())
        else:
            agree, kept = int((votes == len(tasks)).sum()), int((votes > 0).sum())
        per_layer[name] = agree / kept if kept else float("nan")
        agree_total += agree
        kept_total += kept
    return {"layers": per_layer, "overall": agree_total / kept_total if kept_total else
            float("nan"), "rule": rule, "tasks": tasks}


def iou_at_initialisation(net: nn.Module, criterion, loader, *,
                          num_batches: int | None = None, keep_ratio: float = IOU_KEEP_RATIO,
                          seed: int = 0, mode: str = "eval", rule: str = "reference",
                          device=None) -> dict[str, Any]:
    """DiSparse's ``iou_analysis.py`` on ``net``'s architecture: ``disparse_static`` per-task
    masks at a Xavier re-initialisation (seeded), keep ratio 0.078 per task, then
    :func:`mask_agreement` over the shared layers. ``num_batches`` defaults to DiSparse's 50
    (200 on Taskonomy). ``mode="train"`` scores as the original does (dropout, batch stats)."""
    from lib.pruning import task_masks, task_scores
    from lib.pruning.methods import xavier_copy

    dataset = getattr(criterion, "dataset", None)   # SceneNetLoss knows it; TaskLosses do not
    num_batches = num_batches or (IOU_DEFAULT_BATCHES if dataset is None
                                  else dataset_spec(dataset).iou_batches)
    probe = xavier_copy(net, seed)
    scores = task_scores(probe, criterion, loader, list(net.tasks), num_batches, mode, device)
    masks = task_masks(scores, keep_ratio)
    result = mask_agreement(masks, shared_layers(net), rule)
    result.update(keep_ratio=keep_ratio, num_batches=num_batches, seed=seed, mode=mode)
    return result


# ------------------------------------------------------------ the study's static protocol
def _static_scratch(job):
    """``disparse_static_scratch``'s cell: :func:`static_from_scratch` masks (keep ratio from
    DiSparse's own table when the study asks for it), then :func:`train_from_scratch` for the
    study's base budget."""
    from .study import resume_or_start

    options = dict(job.options)
    if job.sparsity_mode == "reference_table":   # DiSparse's own table, by name
        options.setdefault("keep_ratio",
                           disparse_keep_ratio("disparse_static", job.cfg.DATASET, job.sparsity))
    restricted = job.criterion.restricted_to(job.selection)
    pruning = static_from_scratch(
        job.cfg, restricted, job.loaders.train, selected_tasks=job.selection,
        sparsity=None if "keep_ratio" in options else job.sparsity,
        num_batches=job.num_batches or job.cfg.PRUNE_NUM_BATCHES, seed=job.seed,
        device=job.device, **options)
    result = train_from_scratch(pruning, restricted, job.loaders.train, job.cfg, job.run_dir,
                                max_iters=job.base_iters, weighting=job.weighting,
                                **resume_or_start(job.run_dir), **job.common())
    return result.net, pruning.task_masks, result.final_model


def _register() -> None:
    from lib.pruning.registry import number, register_method, votes

    register_method("disparse_static_scratch", _static_scratch, kind="trained_from_scratch",
                    summary="DiSparse's static protocol: disparse_static masks on a fresh "
                            "network, trained from scratch with the masks held",
                    options={"keep_ratio": number(None, above=0, at_most=1, help=(
                                 "default: from the target sparsity")),
                             "min_votes": votes("any")})


_register()
