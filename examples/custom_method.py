"""Two methods of one's own, registered from this file without editing ``lib/``.

``cut_blend`` (kind ``mask``): CUT's per-task score blended with the weight's magnitude,
``|w * dL_t/dw| ** alpha * |w| ** (1 - alpha)`` (``alpha=1``: CUT; ``alpha=0``: per-task
magnitude), then CUT's per-task top-k and backbone vote. ``static_erk`` (kind
``trained_from_scratch``): random masks at ERK densities on a fresh network, held while it
trains (sparse training without mask updates: RigL's baseline).

Importing this file registers both; then every part of the workspace reaches them by name:

    import examples.custom_method                                   # or CUT_PLUGINS, below
    prune("cut_blend", net, criterion, loader, selected_tasks=["seg", "depth"], sparsity=90,
          num_batches=2, alpha=0.5)
    run_study(StudySpec(methods=("cut_blend", "static_erk"), ...))  # the study's cells
    ExplorerState(net, criterion, loader, ...).snapshot(["seg"], "cut_blend", 80)

From the command line, name the file in ``CUT_PLUGINS`` (paths or module names, separated by
``os.pathsep``):

    CUT_PLUGINS=examples/custom_method.py python -m lib methods
    CUT_PLUGINS=examples/custom_method.py python -m lib prune --method cut_blend \\
        --method-option alpha=0.25 --checkpoint base.pth --tasks seg depth --sparsity 90 \\
        --out runs/p
    CUT_PLUGINS=examples/custom_method.py python -m lib reproduce --methods cut cut_blend \\
        static_erk --method-option static_erk.distribution=uniform
"""
from __future__ import annotations

from typing import Any

import torch

from lib.masks import weight_parameter
from lib.models import prunable_layers
from lib.pruning import PruneContext, PruningPlan, magnitude_scores, register_method, task_scores
from lib.pruning.methods import per_task_plan, require_data
from lib.pruning.registry import choice, number, votes
from lib.sparse import masking
from lib.sparse.erk import check_density, erk_densities, keep_counts, uniform_densities
from lib.sparse.study import TrainJob
from lib.sparse.train import scratch_with_hook
from lib.training.hooks import RunContext, TrainingHook


# ------------------------------------------------------------------------ a mask method
@register_method("cut_blend", kind="mask",
                 summary="CUT's per-task score blended with the magnitude: "
                         "|w * dL_t/dw|^alpha * |w|^(1-alpha)",
                 options={"alpha": number(0.5, at_least=0, at_most=1,
                                          help="1: CUT's score, 0: the weight's magnitude"),
                          "min_votes": votes(2)})
def cut_blend(net, ctx: PruneContext, *, alpha: float = 0.5, min_votes=2) -> PruningPlan:
    """The plan of ``net`` (the compact network of the selected tasks): score, then CUT's
    per-task top-k and vote (``per_task_plan``, so the target-sparsity search and the
    explorer's fusion-rule control work unchanged)."""
    require_data(ctx, net, "cut_blend")
    scores = task_scores(net, ctx.criterion, ctx.loader, net.tasks, ctx.num_batches, ctx.mode,
                         ctx.device)
    magnitude = magnitude_scores(net)
    blended = {task: {name: s.pow(alpha) * magnitude[name].to(s.device).pow(1 - alpha)
                      for name, s in layers.items()}
               for task, layers in scores.items()}
    return per_task_plan(net, blended, min_votes, info={"mode": ctx.mode, "alpha": alpha})


# ------------------------------------------------------------------------ a trained method
class StaticERK(TrainingHook):
    """Random masks at ERK (or uniform) densities installed before training, never updated."""

    name = "static_erk"

    def __init__(self, sparsity: float, distribution: str = "erk"):
        self.sparsity, self.distribution = float(sparsity), distribution
        self.density = check_density(sparsity)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "sparsity": self.sparsity, "distribution": self.distribution}

    def setup(self, model, run: RunContext) -> None:
        layers = prunable_layers(model)
        shapes = {n: tuple(weight_parameter(m).shape) for n, m in layers.items()}
        spread = erk_densities if self.distribution == "erk" else uniform_densities
        counts = keep_counts(shapes, spread(shapes, self.density), self.density)
        generator = torch.Generator().manual_seed(int(run.seed))
        masking.install(model, {n: masking.random_mask(shapes[n], counts[n], generator)
                                for n in layers})
        masking.zero_dead(layers)

    def after_step(self, model, iteration: int) -> None:
        masking.zero_dead(prunable_layers(model))   # pruned weights stay exactly zero


@register_method("static_erk", kind="trained_from_scratch",
                 summary="random ERK masks on a fresh network, held while it trains from scratch",
                 options={"distribution": choice("erk", ("erk", "uniform"))})
def static_erk(job: TrainJob):
    """The study's cell: a fresh network of the cell's tasks trained for the study's base
    budget with the hook (resuming an interrupted run); returns (network, task masks, final
    checkpoint)."""
    return scratch_with_hook(job, StaticERK(job.sparsity, **job.options))
