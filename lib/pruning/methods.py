"""CUT and its baselines behind one registry, sharing one pipeline, for any MultiTaskModel:

    select tasks -> score -> per-task / global masks -> shared-layer fusion -> install masks

A method is a function ``method(net, ctx) -> PruningPlan`` where ``net`` is the compact
network (``net.select(selected_tasks)``: only the selected tasks' modules) and ``ctx`` the
shared inputs; it returns the network the masks go on and a function ``keep ratio -> masks``.
A structural method returns a :class:`StructuredPlan` instead (``channel sparsity -> smaller
network``). :func:`prune` turns a keep ratio or a target sparsity into the pruned network and
returns a :class:`PruneResult`. Adding a method = one function decorated with
:func:`~lib.pruning.registry.register_method` in its own file (its kind, options, summary:
:class:`~lib.pruning.registry.MethodSpec`); :data:`METHODS` is the registry's view of the
one-shot methods.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from lib.datasets import dataset_spec
from lib.masks import (Masks, count_zeros, install_masks, layer_weights, masks_of,
                       sparsity_report, weight_parameter)
from lib.models import (MultiTaskModel, architecture_of, build_model, check_model, prunable_layers,
                        shared_layers, task_layers, task_model_layers)
from lib.utils import resolve_device, seed_everything

from .compact import probe_from, select_tasks
from .errors import PruningError, UnreachableSparsityError
from .fusion import MinVotes, fuse_backbone, required_votes
from .lth import TrainFn, iterative_magnitude_masks
from .ranking import ScoreRanking, VotedSparsityCurve, check_keep_ratio
from .registry import (ONE_SHOT, REGISTRY, MethodSpec, NameView, PlanView, choice, flag,
                       function, integer, method_spec, register_method, votes)
from .scores import (check_criterion, joint_scores, magnitude_scores, random_scores,
                     score_progress, task_scores)
from .sparsity import (SPARSITY_TOLERANCE, MaskSparsityCurve, RememberedCurve, SparsityCurve,
                       check_sparsity, keep_ratio_for_sparsity, mask_sparsity)
from .structured import structured_cut_prune

CurveFactory = Callable[[bool, Mapping[str, torch.Tensor]], "SparsityCurve | None"]


@dataclass
class PruneContext:
    """Inputs every method may use (data-free methods ignore the data)."""
    criterion: Any
    loader: Iterable | None
    num_batches: int | None
    seed: int
    device: torch.device | None
    mode: str = "eval"


@dataclass
class PruningPlan:
    """What a method hands back to the shared pipeline.

    ``global_budget``: masks keep exactly ``int(n * keep_ratio)`` of the whole network (up to
    ties), so a target sparsity S maps to keep ratio 1 - S/100 without a search.
    ``masks_for(keep, exact=False)``: ``exact=True`` breaks score ties (see ScoreRanking).
    ``task_masks_for``: optional keep ratio -> per-task masks, kept for mask analysis.
    ``sparsity_curve(exact, weights)``: optional; the deployed sparsity by keep ratio counted
    without building masks, for the target-sparsity search (None, or returning None: the
    search counts ``masks_for``'s).
    ``with_votes(min_votes)``: optional (per-task plans); the plan the method gives with
    ``min_votes=...``, from the same scores and rankings (nothing is re-scored).
    """
    net: MultiTaskModel
    masks_for: Callable[[float], Masks]
    global_budget: bool
    task_masks_for: Callable[[float], dict[str, Masks]] | None = None
    info: dict = field(default_factory=dict)
    sparsity_curve: CurveFactory | None = None
    with_votes: Callable[[MinVotes], "PruningPlan"] | None = None


@dataclass
class StructuredPlan:
    """What a structural method hands back: ``build(channel_sparsity)`` -> a smaller, plain
    network with that fraction of every channel group removed (see :mod:`.structured`)."""
    net: MultiTaskModel
    build: Callable[[float], MultiTaskModel]
    info: dict = field(default_factory=dict)


@dataclass
class PruneResult:
    """What :func:`prune` returns.

    ``net``: the compact pruned network (``torch.nn.utils.prune`` masks on every prunable
    layer; a structural method's network carries none); ``task_masks``: per-task methods' masks
    ``{task: {layer: bool}}`` at the chosen keep ratio (CPU), for mask analysis, else None;
    ``meta``: JSON-able record of how it was made (method, keep ratio, seed, ...);
    ``sparsity``: percent of the dense compact network's prunable weights that are zero or
    removed (for masked networks the deployed sparsity of :func:`lib.masks.sparsity_report`).
    """
    net: MultiTaskModel
    task_masks: dict[str, Masks] | None
    meta: dict
    sparsity: float

    @property
    def masks(self) -> Masks:
        """The installed masks ``{layer: bool}`` (empty for a structurally pruned network)."""
        return masks_of(self.net)


def decide(net: MultiTaskModel, per_task: dict[str, Masks], min_votes: MinVotes,
           reproduce_single_task_bug: bool = False) -> Masks:
    """Parameter decision: fused masks of the shared layers + each task's own layers' mask."""
    shared = list(shared_layers(net))
    masks = fuse_backbone({t: {n: m[n] for n in shared} for t, m in per_task.items()},
                          min_votes, reproduce_single_task_bug)
    for task in net.tasks:
        masks.update({n: per_task[task][n] for n in task_layers(net, task)})
    return masks


def per_task_plan(net: MultiTaskModel, scores: dict[str, dict[str, torch.Tensor]], min_votes: MinVotes,
                  reproduce_single_task_bug: bool = False, info: dict | None = None) -> PruningPlan:
    required_votes(min_votes, len(scores))  # validate the rule before any search
    magnitude = _magnitudes(net)
    shared = list(shared_layers(net))
    rankings = {t: ScoreRanking(s, normalise=True, label=f"task {t!r}", tie_break=magnitude,
                                leading=shared if list(s)[:len(shared)] == shared else ())
                for t, s in scores.items()}

    @functools.lru_cache(maxsize=1)  # the fused masks and net.task_masks share one computation
    def task_masks_for(keep: float, exact: bool = False) -> dict[str, Masks]:
        return {t: r.masks(keep, exact) for t, r in rankings.items()}

    def voted(votes: MinVotes) -> PruningPlan:
        required_votes(votes, len(rankings))

        def masks_for(keep: float, exact: bool = False) -> Masks:
            return decide(net, task_masks_for(keep, exact), votes, reproduce_single_task_bug)

        return PruningPlan(net, masks_for, False, task_masks_for,
                           {"min_votes": votes, **(info or {})},
                           _voted_curve(net, rankings, votes, reproduce_single_task_bug), voted)
    return voted(min_votes)


def _voted_curve(net: MultiTaskModel, rankings: dict[str, ScoreRanking], min_votes: MinVotes,
                 reproduce_single_task_bug: bool):
    """``(exact, weights) -> VotedSparsityCurve`` of what :func:`decide` makes of ``rankings``,
    or None where fusion refuses the rule or a ranking is not the shared layers followed by its
    task's own (the search then counts the masks themselves, and meets decide's errors)."""
    def curve(exact: bool, weights: Mapping[str, torch.Tensor]) -> SparsityCurve | None:
        tasks = list(rankings)
        need = required_votes(min_votes, len(tasks))
        if len(tasks) == 1 and not reproduce_single_task_bug:
            need = 1  # one task: its own mask is the backbone's
        elif need > len(tasks) and not reproduce_single_task_bug:
            return None
        shared = list(shared_layers(net))
        if any(rankings[t].names != shared + list(task_layers(net, t)) for t in tasks):
            return None
        return VotedSparsityCurve(rankings, shared, need, weights, exact)
    return curve


def global_plan(net: MultiTaskModel, scores: dict[str, torch.Tensor], normalise: bool,
                info: dict | None = None) -> PruningPlan:
    ranking = ScoreRanking(scores, normalise=normalise, label="global scores",
                           tie_break=_magnitudes(net))
    return PruningPlan(net, ranking.masks, True, None, info or {})


class _Magnitudes(Mapping):
    """``|w|`` per layer, computed when read: only weights tied at a cut are ever looked at."""

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        self._weights = weights

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._weights[name].abs()

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)


def _magnitudes(net: MultiTaskModel) -> Mapping[str, torch.Tensor]:
    """``|w|`` per prunable layer: the tie-break between equal scores in target-sparsity mode."""
    return _Magnitudes(layer_weights(net))


def require_data(ctx: PruneContext, net: MultiTaskModel, method: str) -> None:
    """One-line errors unless ``ctx`` can score ``net``'s tasks on data (a method's first check)."""
    if ctx.num_batches is None:
        raise PruningError(f"method {method!r} scores on data: pass num_batches")
    check_criterion(ctx.criterion, net.tasks)


def fresh_like(net: MultiTaskModel, seed: int) -> MultiTaskModel:
    """An untrained network of ``net``'s architecture, initialised from ``seed``, same device.

    A model that describes itself (``architecture()``) is rebuilt from its registry entry; any
    other is copied and every submodule's ``reset_parameters()`` is called.
    """
    record = architecture_of(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if record is not None:
            fresh = build_model(record)
        else:
            fresh = copy.deepcopy(net)
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return fresh.to(next(net.parameters()).device).train(net.training)


def xavier_copy(net: MultiTaskModel, seed: int) -> MultiTaskModel:
    """A copy of ``net`` with Xavier-normal re-initialised prunable weights (DiSparse static)."""
    clone = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in prunable_layers(clone).values():
            w = weight_parameter(module)
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            w.copy_(torch.randn(w.shape, generator=g).mul_(std).to(w.device))
    return clone


# ---------------------------------------------------------------------------------- methods
@register_method("cut", kind="mask", summary="CUT: per-task |w * dL_t/dw| at the trained "
                 "weights, per-task top-k, backbone weights kept by >= min_votes tasks",
                 options={"min_votes": votes(2), "reproduce_single_task_bug": flag(
                     False, "the reference's fusion of a single selected task")})
def cut(net: MultiTaskModel, ctx: PruneContext, *, min_votes: MinVotes = 2,
        reproduce_single_task_bug: bool = False) -> PruningPlan:
    """CUT: per-task |w * dL_t/dw| at the given weights, per-task top-k, backbone vote fusion."""
    require_data(ctx, net, "cut")
    required_votes(min_votes, len(net.tasks))
    scores = task_scores(net, ctx.criterion, ctx.loader, net.tasks, ctx.num_batches, ctx.mode,
                         ctx.device)
    return per_task_plan(net, scores, min_votes, reproduce_single_task_bug, {"mode": ctx.mode})


@register_method("lth", kind="mask", data=False,
                 summary="LTH: global |w| top-k (one shot), or iterative magnitude pruning",
                 options={"iterative": flag(False, "rounds of magnitude pruning with rewinding"),
                          "rounds": integer(3, 1, "rounds when iterative"),
                          "train_fn": function("training between rounds")})
def lth(net: MultiTaskModel, ctx: PruneContext, *, iterative: bool = False, rounds: int = 3,
        train_fn: TrainFn | None = None) -> PruningPlan:
    """LTH: global |w| one shot (the reference), or iterative magnitude pruning with rewinding."""
    if not iterative:
        return global_plan(net, magnitude_scores(net), normalise=False)
    # Training between rounds makes ties in |w| practically impossible: ``exact`` is moot.
    return PruningPlan(net, lambda keep, exact=False: iterative_magnitude_masks(
                           net, keep, train_fn, rounds),
                       True, None, {"iterative": True, "rounds": rounds})


@register_method("snip", kind="mask",
                 summary="SNIP on the trained weights: joint weighted loss, one global top-k")
def snip(net: MultiTaskModel, ctx: PruneContext) -> PruningPlan:
    """SNIP on the given (pre-trained) weights: joint weighted loss, one global top-k."""
    require_data(ctx, net, "snip")
    scores = joint_scores(net, ctx.criterion, ctx.loader, ctx.num_batches, ctx.mode, ctx.device)
    return global_plan(net, scores, normalise=True, info={"mode": ctx.mode})


@register_method("snip_untrained", kind="mask", fresh=True,
                 summary="SNIP as in the reference: on a freshly initialised network, seeded")
def snip_untrained(net: MultiTaskModel, ctx: PruneContext) -> PruningPlan:
    """SNIP as in the reference: on a freshly initialised (untrained) network, seeded."""
    return snip(fresh_like(net, ctx.seed), ctx)


@register_method("random", kind="mask", data=False,
                 summary="uniform random masks over the trained weights, seeded")
def random_pretrained(net: MultiTaskModel, ctx: PruneContext) -> PruningPlan:
    """Uniform random masks over the pre-trained weights, seeded."""
    return global_plan(net, random_scores(net, ctx.seed), normalise=False)


@register_method("random_untrained", kind="mask", data=False, fresh=True,
                 summary="random masks on a freshly initialised network, as in the reference")
def random_untrained(net: MultiTaskModel, ctx: PruneContext) -> PruningPlan:
    """Random masks on a freshly initialised network, as in the reference."""
    fresh = fresh_like(net, ctx.seed)
    return global_plan(fresh, random_scores(fresh, ctx.seed), normalise=False)


@register_method("disparse_static", kind="mask", options={"min_votes": votes("any")},
                 summary="DiSparse static: per-task scores at Xavier re-initialised weights, "
                         "union fusion, masks on the trained weights")
def disparse_static(net: MultiTaskModel, ctx: PruneContext, *,
                    min_votes: MinVotes = "any") -> PruningPlan:
    """DiSparse static: per-task scores at Xavier re-initialised weights, union fusion.

    The masks go onto the given weights (the project fine-tunes, DiSparse trained from scratch).
    """
    require_data(ctx, net, "disparse_static")
    probe = xavier_copy(net, ctx.seed)
    scores = task_scores(probe, ctx.criterion, ctx.loader, net.tasks, ctx.num_batches, ctx.mode,
                         ctx.device)
    return per_task_plan(net, scores, min_votes, info={"mode": ctx.mode})


def _disparse_pt_score(score: str, dataset: str | None) -> str:
    """``score``, with ``"auto"`` resolved by the dataset's spec (gradient on Taskonomy, as
    DiSparse; magnitude elsewhere and for a model of no registered dataset)."""
    if score != "auto":
        return score
    return dataset_spec(dataset).disparse_pt_score if dataset is not None else "magnitude"


def _disparse_pt_data(dataset: str | None, options: dict) -> bool:
    return _disparse_pt_score(options.get("score", "auto"), dataset) == "gradient"


@register_method("disparse_pt", kind="mask", data=_disparse_pt_data,
                 summary="DiSparse pre-trained: per-task |w| (w^2 * sum|dL_t/dw| on Taskonomy), "
                         "union fusion",
                 options={"score": choice("auto", ("auto", "magnitude", "gradient"),
                                          "auto: by the dataset, as DiSparse"),
                          "min_votes": votes("any")})
def disparse_pt(net: MultiTaskModel, ctx: PruneContext, *, score: str = "auto",
                min_votes: MinVotes = "any") -> PruningPlan:
    """DiSparse pre-trained: per-task |w| (NYU, Cityscapes) or ``w^2 * sum|dL_t/dw|`` (Taskonomy).

    ``score="auto"`` picks by ``criterion.dataset`` as DiSparse does; ``"magnitude"`` or
    ``"gradient"`` force one. Union fusion of the backbone.
    """
    score = _disparse_pt_score(score, getattr(ctx.criterion, "dataset", None))
    if score == "magnitude":
        mags = magnitude_scores(net)
        scores = {t: {n: mags[n] for n in task_model_layers(net, t)} for t in net.tasks}
    elif score == "gradient":
        require_data(ctx, net, "disparse_pt")
        mags = magnitude_scores(net)
        cut_scores = task_scores(net, ctx.criterion, ctx.loader, net.tasks, ctx.num_batches,
                                 ctx.mode, ctx.device)
        scores = {t: {n: s * mags[n] for n, s in ts.items()} for t, ts in cut_scores.items()}
    else:
        raise PruningError(f"score must be 'auto', 'magnitude' or 'gradient', got {score!r}")
    return per_task_plan(net, scores, min_votes, info={"score": score})


@register_method("structured_cut", kind="structured",
                 summary="structured CUT: CUT's scores voted per channel, channels removed",
                 options={"min_votes": votes(2),
                          "ranking": choice("uniform", ("uniform", "global"),
                                            "uniform: S % of every channel group; global: "
                                            "groups compete")})
def structured_cut(net: MultiTaskModel, ctx: PruneContext, *,
                   min_votes: MinVotes = 2, ranking: str = "uniform") -> StructuredPlan:
    """Structured CUT: CUT's per-task scores turned into channel decisions with the same vote,
    channels physically removed (:func:`lib.pruning.structured.structured_cut_prune`). Its
    budget is the channel sparsity: ``sparsity=S`` removes S % of every channel group
    (``ranking="uniform"``) or of all channels, groups competing (``"global"``)."""
    require_data(ctx, net, "structured_cut")
    required_votes(min_votes, len(net.tasks))

    def build(channel_sparsity: float) -> MultiTaskModel:
        return structured_cut_prune(net, ctx.criterion, ctx.loader, net.tasks, channel_sparsity,
                                    ctx.num_batches, min_votes, mode=ctx.mode, ranking=ranking)
    return StructuredPlan(net, build, {"min_votes": min_votes, "mode": ctx.mode,
                                       "ranking": ranking})


# Views over the registry (lib.pruning.registry), kept for the names callers already use.
METHODS = PlanView()              # {name: plan} of every one-shot method
STRUCTURED_METHODS = NameView(lambda spec: spec.kind == "structured", "STRUCTURED_METHODS")
DATA_FREE_METHODS = NameView(lambda spec: spec.kind in ONE_SHOT and spec.data is False,
                             "DATA_FREE_METHODS")


def uses_data(method: str, dataset: str | None = None, **options) -> bool:
    """Whether ``method`` scores on batches (so needs a loader and a criterion)."""
    return method_spec(method).uses_data(dataset, **options)


# --------------------------------------------------------------------------------- pipeline
def check_method(method: str) -> MethodSpec:
    """A one-line PruningError unless ``method`` is a registered one-shot method
    (:data:`METHODS`)."""
    if method not in METHODS:
        raise PruningError(f"unknown pruning method {method!r}; available: {sorted(METHODS)}")
    return REGISTRY[method]


def make_plan(method: str, net: MultiTaskModel, criterion, loader: Iterable | None, *,
              selected_tasks: Sequence[str], tasks: Sequence[str] | None = None,
              num_batches: int | None = None, seed: int = 0, mode: str = "eval", device=None,
              probe=None, **options) -> PruningPlan | StructuredPlan:
    """The set-up of every pruning (:func:`prune`, the explorer): ``method``'s plan for the
    compact copy of ``net`` holding ``selected_tasks``, scored now, after seeding with
    ``seed``. ``net`` is not modified; the arguments are :func:`prune`'s. The compact copy's
    outputs are checked against ``net``'s on ``probe`` (default: a few samples of the
    loader's first batch, :func:`~lib.pruning.compact.probe_from`)."""
    spec = check_method(method)
    options = spec.check_options(options)
    if probe is None:
        probe, loader = probe_from(loader)
    compact = select_tasks(check_model(net), selected_tasks, tasks, probe=probe)
    device = None if device is None else resolve_device(device)
    if device is not None:
        compact.to(device)
    seed_everything(seed)
    ctx = PruneContext(criterion, loader, num_batches, seed, device, mode)
    return spec.plan(compact, ctx, **options)


def prune(method: str, net: MultiTaskModel, criterion, loader: Iterable | None, *,
          selected_tasks: Sequence[str], tasks: Sequence[str] | None = None,
          keep_ratio: float | None = None, sparsity: float | None = None,
          num_batches: int | None = None, seed: int = 0, mode: str = "eval", device=None,
          progress: bool = True, **options) -> PruneResult:
    """Prune ``net`` for ``selected_tasks`` with ``method``; returns a :class:`PruneResult`.

    Exactly one of ``keep_ratio`` (in (0, 1]) and ``sparsity`` (target *deployed* sparsity in
    percent, [0, 100), reached within 0.5 pp by bisection on the scores) must be given; for a
    structural method (:data:`STRUCTURED_METHODS`) they are the fraction of every channel
    group kept / the percent removed. ``net`` (any :class:`~lib.models.MultiTaskModel`) is not
    modified. ``criterion`` is a :class:`lib.losses.TaskLosses` knowing the selected tasks and
    ``loader`` yields batch dicts (``"img"`` + targets); data-free methods take None for both.
    ``options`` go to the method (e.g. ``min_votes`` for CUT, ``iterative``/``train_fn`` for LTH).
    ``progress=False`` hides the scoring's progress bar.
    Bad input raises a :class:`lib.pruning.errors.PruningError` (a ValueError) or ValueError.
    """
    options = check_method(method).check_options(options)
    if (keep_ratio is None) == (sparsity is None):
        raise PruningError("give exactly one of keep_ratio and sparsity")
    keep_ratio = None if keep_ratio is None else check_keep_ratio(keep_ratio)
    sparsity = None if sparsity is None else check_sparsity(sparsity)
    with score_progress(progress):   # the scoring's progress bar, shown unless told not to
        plan = make_plan(method, net, criterion, loader, selected_tasks=selected_tasks,
                         tasks=tasks, num_batches=num_batches, seed=seed, mode=mode,
                         device=device, **options)
    given = {k: v for k, v in options.items() if _jsonable(v)}
    if isinstance(plan, StructuredPlan):
        return _structured_result(plan, method, keep_ratio, sparsity, num_batches, seed, given)
    plan.masks_for = functools.lru_cache(maxsize=4)(plan.masks_for)  # search + final: no rework
    exact = False
    if keep_ratio is None:
        keep_ratio, exact = TargetSearch(plan).keep_for(sparsity)
    install_masks(plan.net, plan.masks_for(keep_ratio, exact))
    task_masks = ({t: {n: m.cpu() for n, m in tm.items()}
                   for t, tm in plan.task_masks_for(keep_ratio, exact).items()}
                  if plan.task_masks_for else None)
    meta = {"method": method, "selected_tasks": list(plan.net.tasks),
            "keep_ratio": keep_ratio, "target_sparsity": sparsity,
            "ties": "broken" if exact else "kept", "num_batches": num_batches, "seed": seed,
            **{k: v for k, v in plan.info.items() if _jsonable(v)}, **given}
    deployed = sparsity_report(plan.net)["deployed"]["sparsity"]
    return PruneResult(plan.net, task_masks, meta, deployed)


def _structured_result(plan: StructuredPlan, method: str, keep_ratio: float | None,
                       sparsity: float | None, num_batches: int | None, seed: int,
                       options: dict) -> PruneResult:
    """Build the structurally pruned network; its sparsity counts removed weights as zeros."""
    channel_sparsity = 1.0 - keep_ratio if keep_ratio is not None else sparsity / 100.0
    pruned = plan.build(channel_sparsity)
    dense = count_zeros(layer_weights(plan.net))["total"]
    kept = count_zeros(layer_weights(pruned))
    removed = 100.0 * (dense - (kept["total"] - kept["zeros"])) / max(dense, 1)
    meta = {"method": method, "selected_tasks": list(pruned.tasks),
            "keep_ratio": 1.0 - channel_sparsity, "target_sparsity": sparsity,
            "channel_sparsity": channel_sparsity, "weight_sparsity": removed,
            "num_batches": num_batches, "seed": seed,
            **{k: v for k, v in plan.info.items() if _jsonable(v)}, **options}
    return PruneResult(pruned, None, meta, removed)


class TargetSearch:
    """The keep ratio, and whether score ties are broken, that gives a target deployed sparsity
    on one plan: :func:`prune`'s ``sparsity=S`` (a fresh search) and the explorer's slider (one
    search per plan and fusion rule, kept) both ask ``keep_for(S)``.

    The reference's rule keeps every weight tied at the threshold; when a plateau of equal
    scores (typically exact zeros) makes the target unreachable that way, ties are broken by
    ``|w|`` and position instead, so the requested sparsity is met. A global budget keeps
    ``1 - S/100`` of the weights; a per-task one is bisected on the plan's sparsity curve
    (:func:`keep_ratio_for_sparsity`). Every sparsity counted is remembered
    (:class:`RememberedCurve`), so a later target re-counts only the points its bisection has
    not visited, and gets the keep ratio a fresh search gets.
    """

    def __init__(self, plan: PruningPlan, weights: Mapping[str, torch.Tensor] | None = None):
        self.plan = plan
        self.weights = layer_weights(plan.net) if weights is None else weights
        self.curves: dict[bool, RememberedCurve] = {}
        self._global: dict[tuple[float, bool], float] = {}

    @property
    def evaluations(self) -> int:
        """Sparsities counted so far (remembered ones are not counted again)."""
        return len(self._global) + sum(c.evaluations for c in self.curves.values())

    def keep_for(self, sparsity: float) -> tuple[float, bool]:
        """``(keep ratio, ties broken)`` within :data:`SPARSITY_TOLERANCE` of ``sparsity`` %;
        an UnreachableSparsityError naming the closest sparsity when even breaking ties
        cannot reach it."""
        sparsity = check_sparsity(sparsity)
        for exact in (False, True):
            if self.plan.global_budget:
                keep = (100.0 - sparsity) / 100.0
                achieved = self._global_sparsity(keep, exact)
                if abs(achieved - sparsity) <= SPARSITY_TOLERANCE:
                    return keep, exact
                continue
            try:
                return keep_ratio_for_sparsity(self._curve(exact), sparsity), exact
            except UnreachableSparsityError:
                if exact:
                    raise
        # With ties broken a global budget keeps exactly 1 - S/100 of the weights; missing the
        # target then means the kept weights themselves hold zeros.
        raise UnreachableSparsityError(
            f"cannot reach {sparsity}% deployed sparsity: {achieved:.2f}% of the weights end up "
            f"zero (zeros among the kept weights)", closest=achieved, keep_ratio=keep)

    def _global_sparsity(self, keep: float, exact: bool) -> float:
        if (keep, exact) not in self._global:
            self._global[(keep, exact)] = mask_sparsity(self.plan.masks_for(keep, exact),
                                                        self.weights)
        return self._global[(keep, exact)]

    def _curve(self, exact: bool) -> RememberedCurve:
        if exact not in self.curves:
            plan = self.plan
            curve = plan.sparsity_curve(exact, self.weights) if plan.sparsity_curve else None
            if curve is None:
                curve = MaskSparsityCurve(lambda keep: plan.masks_for(keep, exact), self.weights)
            self.curves[exact] = RememberedCurve(curve)
        self.curves[exact].restart()
        return self.curves[exact]


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def cut_prune(net: MultiTaskModel, criterion, loader: Iterable, num_batches: int,
              keep_ratio: float | None, selected_tasks: Sequence[str],
              tasks: Sequence[str] | None = None, min_votes: MinVotes = 2, mode: str = "eval",
              *, sparsity: float | None = None, seed: int = 0, device=None,
              reproduce_single_task_bug: bool = False) -> MultiTaskModel:
    """CUT with the reference's signature: :func:`prune` with ``method="cut"``; returns the
    pruned network (``prune`` returns it with its per-task masks and metadata).

    Pass ``keep_ratio=None, sparsity=S`` to target S % deployed sparsity instead.
    """
    return prune("cut", net, criterion, loader, selected_tasks=selected_tasks, tasks=tasks,
                 keep_ratio=keep_ratio, sparsity=sparsity, num_batches=num_batches, seed=seed,
                 mode=mode, device=device, min_votes=min_votes,
                 reproduce_single_task_bug=reproduce_single_task_bug).net
