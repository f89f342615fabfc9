"""The explorer's state, without widgets: what a setting of the controls shows, and its caches.

A *setting* is the selected tasks, the method, the fusion rule and a target deployed sparsity.
:meth:`ExplorerState.snapshot` turns one into a :class:`Snapshot`:

- the method's :class:`lib.pruning.PruningPlan` is made once per (task selection, method) by
  :func:`lib.pruning.make_plan`, :func:`lib.pruning.prune`'s own set-up (the scores are
  computed then, and only then);
- another fusion rule is the plan's ``with_votes(rule)``: the plan ``prune(min_votes=rule)``
  makes, from the same rankings, so changing it re-scores nothing;
- the keep ratio for the target comes from :class:`lib.pruning.TargetSearch`, ``prune``'s
  own search, kept per (selection, method, rule) so it remembers every sparsity it counted:
  the keep ratio and the masks are ``prune(sparsity=S)``'s, bit for bit;
- the figures (sparsity per layer and part, parameters, MACs, mask IoU) are counted from the
  masks by :class:`lib.export.MaskCounter`, nothing is installed.

The slow figures are measured on request and cached per (setting, keep ratio):
:meth:`ExplorerState.measure` writes the real artifact with :func:`lib.export.save_artifact`
into a temporary folder, deleted at once (its size is the writer's, by construction; the dense
state dict is ``torch.save``-d to memory for the ratio) and times PyTorch CPU forwards;
:meth:`ExplorerState.evaluate` and :meth:`ExplorerState.prediction_grid` run the pruned, not
fine-tuned network on the test loader; :meth:`ExplorerState.export` writes the pruned checkpoint
(+ sidecar), the artifact and the ONNX file. The plans and caches are guarded by one lock, so
a view can measure in a background thread while the controls move.
"""
from __future__ import annotations

import functools
import io
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from lib.checkpoints import pruned_filename, save_pruned
from lib.export import (ARTIFACT_SUFFIX, MaskCounter, check_onnx_parity, export_onnx,
                        save_artifact, torch_latency_ms)
from lib.masks import Masks, install_masks
from lib.models import MultiTaskModel, check_model, check_selection, copy_network, shared_layers
from lib.pruning import (PruningPlan, TargetSearch, check_method, make_plan, method_names,
                         pairwise_mask_iou, required_votes)
from lib.pruning.errors import PruningError
from lib.pruning.fusion import MinVotes
from lib.pruning.scores import SCORING_MODES
from lib.pruning.sparsity import check_sparsity
from lib.utils import resolve_device

FUSION_RULES: tuple[MinVotes, ...] = (2, "all", "any", "majority")


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, else a one-line ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or int(value) < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Snapshot:
    """What the explorer shows for one setting.

    ``rule``: the fusion rule of the shared layers (None for a global method, which has no
    fusion); ``keep_ratio`` and ``exact`` (ties broken) as :func:`lib.pruning.prune` records
    them; ``report``: :func:`lib.masks.sparsity_report`'s ``layers``, ``backbone``, ``heads``,
    ``deployed``; ``params``: ``total`` / ``nonzero``; ``macs``: ``dense`` / ``effective`` for
    one forward of ``input_shape``; ``iou``: ``{"a&b": {shared layer: IoU}}`` of the task masks
    (per-task methods with two or more tasks, else None).
    """
    tasks: tuple[str, ...]
    method: str
    rule: MinVotes | None
    target: float
    keep_ratio: float
    exact: bool
    report: dict
    params: dict
    macs: dict
    input_shape: tuple[int, ...]
    iou: dict | None = None

    @property
    def sparsity(self) -> float:
        """Deployed sparsity (percent of the prunable weights that are zero)."""
        return self.report["deployed"]["sparsity"]

    @property
    def key(self) -> tuple:
        """What the masks depend on: the cache key of every measurement."""
        return (self.tasks, self.method, self.rule, self.keep_ratio, self.exact)

    def meta(self, **extra: Any) -> dict[str, Any]:
        """The metadata :func:`lib.pruning.prune` would record for these masks."""
        return {"method": self.method, "selected_tasks": list(self.tasks),
                "keep_ratio": self.keep_ratio, "target_sparsity": self.target,
                "ties": "broken" if self.exact else "kept",
                **({"min_votes": self.rule} if self.rule is not None else {}),
                "deployed_sparsity": self.sparsity, "made_by": "lib.explorer", **extra}


@dataclass
class _Scored:
    """One (task selection, method): its plan, counter, searches and counted points."""
    plan: PruningPlan
    counter: MaskCounter
    plans: dict = field(default_factory=dict)      # rule -> the plan with that fusion rule
    searches: dict = field(default_factory=dict)   # rule -> TargetSearch of that plan
    kept: dict = field(default_factory=dict)       # (rule, exact, keep) -> {layer: kept}
    iou: dict = field(default_factory=dict)        # (rule, exact, keep) -> IoU dict

    @property
    def per_task(self) -> bool:
        return self.plan.task_masks_for is not None


class ExplorerState:
    """Caches and computations behind the explorer (see the module docstring).

    Args:
        net: the dense base network (any :class:`lib.models.MultiTaskModel`); not modified.
        criterion, loader, num_batches: what :func:`lib.pruning.prune` scores with (data-free
            methods need none of them).
        cfg: the config, for the reference tasks' test metrics and prediction grid.
        test_loader: batches for the test metrics and the prediction grid (a DataLoader).
        metrics: ``{task: fn(pred, batch) -> {metric: value}}`` for tasks of other models
            (:func:`lib.training.evaluate`'s ``metrics``); default: the config's.
        input_shape: ``(N, 3, H, W)`` for MACs, latency and ONNX; default: one image of the
            test loader's (else the scoring loader's) first batch.
        seed, mode, device: as for ``prune``.
        method_options: ``{method: {option: value}}`` passed to the method, checked by its
            spec (:class:`lib.pruning.MethodSpec`; not ``min_votes``: the fusion rule is a
            control).
        max_scored: how many (task selection, method) plans stay cached (each holds a copy of
            the compact network, its scores and their rankings: gigabytes at reference width).
        latency_repeats, threads: timed forwards per measurement and CPU threads (default:
            ``torch.get_num_threads()``).
    """

    def __init__(self, net: MultiTaskModel, criterion=None, loader: Iterable | None = None, *,
                 num_batches: int | None = None, cfg=None, test_loader: Iterable | None = None,
                 metrics: Mapping | None = None, input_shape: Sequence[int] | None = None,
                 seed: int = 0, mode: str = "eval", device=None,
                 method_options: Mapping[str, Mapping[str, Any]] | None = None,
                 max_scored: int = 3, latency_repeats: int = 5, threads: int | None = None):
        self.net = check_model(net)
        self.criterion, self.loader, self.num_batches = criterion, loader, num_batches
        self.cfg, self.test_loader, self.metrics = cfg, test_loader, metrics
        self.seed, self.mode = int(seed), mode
        if mode not in SCORING_MODES:
            raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
        self.device = None if device is None else resolve_device(device)
        self.method_options = {}
        for method, options in (method_options or {}).items():
            spec = self._check_method(method)
            if "min_votes" in options:
                raise ValueError(f"method_options[{method!r}]: min_votes is the explorer's "
                                 f"fusion-rule control, not an option")
            self.method_options[method] = spec.check_options(options)
        self.max_scored = _positive_int("max_scored", max_scored)
        self.latency_repeats = _positive_int("latency_repeats", latency_repeats)
        self.threads = _positive_int("threads", torch.get_num_threads() if threads is None
                                     else threads)
        if num_batches is not None:
            _positive_int("num_batches", num_batches)
        self.input_shape = self._input_shape(input_shape)
        # The contract's output checks, and select()'s, run on one seeded random image.
        self._probe = torch.randn((1, *self.input_shape[1:]),
                                  generator=torch.Generator().manual_seed(self.seed))
        check_model(self.net, self._probe)
        self._lock = threading.RLock()
        self._scored: OrderedDict[tuple, _Scored] = OrderedDict()
        self._masks: OrderedDict[tuple, tuple[Masks, dict | None]] = OrderedDict()
        self._measured: dict[tuple, dict] = {}
        self._dense: dict[tuple, dict] = {}
        self._evaluated: dict[tuple, dict] = {}
        self._test_batch: dict | None = None

    # ------------------------------------------------------------------------- choices
    @property
    def tasks(self) -> list[str]:
        return list(self.net.tasks)

    @property
    def methods(self) -> list[str]:
        """The methods the explorer offers: every registered mask method whose inputs were
        given (structural methods rebuild by re-scoring, so they are left out)."""
        dataset = getattr(self.criterion, "dataset", None)
        return [m for m in method_names("mask") if self.loader is not None
                or not check_method(m).uses_data(dataset, **self.options(m))]

    def options(self, method: str) -> dict[str, Any]:
        return dict(self.method_options.get(method, {}))

    def default_rule(self, tasks: Sequence[str], method: str) -> MinVotes | None:
        """The method's own fusion rule (``plan.info["min_votes"]``), None for global methods."""
        scored = self.scored(tasks, method)
        return scored.plan.info.get("min_votes", 2) if scored.per_task else None

    # ------------------------------------------------------------------------- scoring
    def is_scored(self, tasks: Sequence[str], method: str) -> bool:
        """Whether the plan of ``method`` for ``tasks`` is cached (nothing is computed)."""
        with self._lock:
            return (tuple(tasks), method) in self._scored

    def scored(self, tasks: Sequence[str], method: str) -> _Scored:
        """The plan of ``method`` for ``tasks``, made (scored) on first use, then cached."""
        tasks = tuple(check_selection(self.net, list(tasks)))
        self._check_method(method)
        key = (tasks, method)
        with self._lock:
            if key in self._scored:
                self._scored.move_to_end(key)
                return self._scored[key]
            plan = make_plan(method, self.net, self.criterion, self.loader,
                             selected_tasks=list(tasks), num_batches=self.num_batches,
                             seed=self.seed, mode=self.mode, device=self.device,
                             probe=self._probe, **self.options(method))
            if plan.global_budget:  # the search's masks at its answer are the snapshot's
                plan.masks_for = functools.lru_cache(maxsize=2)(plan.masks_for)
            scored = _Scored(plan, MaskCounter(plan.net, self.input_shape))
            self._scored[key] = scored
            while len(self._scored) > self.max_scored:
                old, _ = self._scored.popitem(last=False)
                self._forget(old)
            return scored

    def _check_method(self, method: str):
        """The spec of ``method``; a PruningError unless it is a registered mask method."""
        spec = check_method(method)
        if spec.kind != "mask":
            raise PruningError(f"method {method!r} removes channels and re-scores for every "
                               f"budget; the explorer offers mask-based methods only")
        return spec

    def _forget(self, selection: tuple) -> None:
        for cache in (self._masks, self._measured, self._evaluated, self._dense):
            for key in [k for k in cache if k[:2] == selection]:
                del cache[key]

    # ------------------------------------------------------------------------- masks
    def _rule(self, scored: _Scored, rule: MinVotes | None) -> MinVotes | None:
        if not scored.per_task:
            return None
        rule = scored.plan.info.get("min_votes", 2) if rule is None else rule
        num_tasks = len(scored.plan.net.tasks)
        if num_tasks > 1 and required_votes(rule, num_tasks) > num_tasks:
            raise PruningError(f"fusion rule {rule!r} needs more votes than the {num_tasks} "
                               f"selected tasks have: it would prune the whole backbone")
        return rule

    def _plan(self, scored: _Scored, rule: MinVotes | None) -> PruningPlan:
        """The plan ``prune`` makes with ``min_votes=rule`` (None: a global plan's own)."""
        if rule is None or rule == scored.plan.info.get("min_votes", 2):
            return scored.plan
        if rule not in scored.plans:
            if scored.plan.with_votes is None:
                raise PruningError("this method's plan offers no other fusion rule")
            scored.plans[rule] = scored.plan.with_votes(rule)
        return scored.plans[rule]

    def _masks_at(self, selection: tuple, scored: _Scored, rule, exact: bool,
                  keep: float) -> tuple[Masks, dict | None]:
        """(fused masks, per-task masks or None) at ``keep``; the last two are kept."""
        key = (*selection, rule, keep, exact)
        if key in self._masks:
            return self._masks[key]
        plan = self._plan(scored, rule)
        out = (plan.masks_for(keep, exact),
               plan.task_masks_for(keep, exact) if scored.per_task else None)
        self._masks[key] = out
        while len(self._masks) > 2:
            self._masks.popitem(last=False)
        return out

    def _kept(self, selection: tuple, scored: _Scored, rule, exact: bool,
              keep: float) -> dict[str, int]:
        key = (rule, exact, keep)
        if key not in scored.kept:
            masks, _ = self._masks_at(selection, scored, rule, exact, keep)
            scored.kept[key] = scored.counter.kept(masks)
        return scored.kept[key]

    def _keep_for(self, scored: _Scored, rule, target: float) -> tuple[float, bool]:
        """Keep ratio (and whether ties are broken) for ``target`` % deployed sparsity:
        ``prune``'s search on the plan with this rule, remembered across targets."""
        if rule not in scored.searches:
            scored.searches[rule] = TargetSearch(self._plan(scored, rule))
        return scored.searches[rule].keep_for(target)

    # ------------------------------------------------------------------------- snapshot
    def snapshot(self, tasks: Sequence[str], method: str, sparsity: float,
                 rule: MinVotes | None = None) -> Snapshot:
        """What the explorer shows for this setting (``rule`` None: the method's own)."""
        target = check_sparsity(sparsity)
        scored = self.scored(tasks, method)
        selection = (tuple(scored.plan.net.tasks), method)
        with self._lock:
            rule = self._rule(scored, rule)
            keep, exact = self._keep_for(scored, rule, target)
            kept = self._kept(selection, scored, rule, exact, keep)
            counter = scored.counter
            macs = {"dense": counter.macs_dense, "effective": counter.effective_macs(kept)}
            return Snapshot(selection[0], method, rule, target, keep, exact,
                            counter.report(kept), counter.params(kept), macs, self.input_shape,
                            self._iou(selection, scored, rule, exact, keep))

    def _iou(self, selection, scored: _Scored, rule, exact: bool, keep: float) -> dict | None:
        shared = shared_layers(scored.plan.net)
        if not scored.per_task or len(selection[0]) < 2 or not shared:
            return None  # nothing two task masks have in common to compare
        key = (rule, exact, keep)
        if key not in scored.iou:
            _, per_task = self._masks_at(selection, scored, rule, exact, keep)
            scored.iou[key] = pairwise_mask_iou(
                {t: {n: m for n, m in masks.items() if n in shared}
                 for t, masks in per_task.items()})
        return scored.iou[key]

    def masks(self, snap: Snapshot) -> Masks:
        """The fused masks of ``snap`` (what :func:`lib.pruning.prune` would install)."""
        scored = self.scored(snap.tasks, snap.method)
        with self._lock:
            return self._masks_at(snap.key[:2], scored, snap.rule, snap.exact, snap.keep_ratio)[0]

    def pruned_net(self, snap: Snapshot) -> MultiTaskModel:
        """A new copy of the compact network with ``snap``'s masks installed."""
        scored = self.scored(snap.tasks, snap.method)
        with self._lock:
            masks = self.masks(snap)
            net = copy_network(scored.plan.net)
        return install_masks(net, masks)

    # ------------------------------------------------------------------------- measured
    def measure(self, snap: Snapshot) -> dict[str, Any]:
        """Artifact bytes and PyTorch CPU latency of the pruned network, with the dense
        network's for comparison (cached per setting and keep ratio).

        ``artifact_bytes``: the size of the file :func:`lib.export.save_artifact` writes,
        written to a temporary folder and deleted; ``dense_state_dict_bytes``: the dense
        compact network's ``torch.save``-d state dict, written to memory; latencies: median of
        ``latency_repeats`` forwards of ``input_shape`` at ``threads`` threads.
        """
        with self._lock:
            if snap.key in self._measured:
                return self._measured[snap.key]
        net = self.pruned_net(snap)
        with tempfile.TemporaryDirectory(prefix="cut_explorer_") as folder:
            artifact = save_artifact(net, Path(folder) / f"explorer{ARTIFACT_SUFFIX}")["bytes"]
        latency = torch_latency_ms(net, self.input_shape, self.threads,
                                   repeats=self.latency_repeats, warmup=1)
        result = {"artifact_bytes": artifact, "latency_ms": latency,
                  **self._dense_figures(snap.tasks, snap.method)}
        with self._lock:
            self._measured[snap.key] = result
        return result

    def measured(self, snap: Snapshot) -> dict[str, Any] | None:
        """:meth:`measure`'s result if it is cached, else None (nothing is measured)."""
        with self._lock:
            return self._measured.get(snap.key)

    def _dense_figures(self, tasks: tuple, method: str) -> dict[str, Any]:
        key = (tasks, method)
        with self._lock:
            if key in self._dense:
                return self._dense[key]
            dense = self.scored(tasks, method).plan.net
        buffer = io.BytesIO()
        torch.save(dense.state_dict(), buffer)
        figures = {"dense_state_dict_bytes": buffer.tell(),
                   "dense_latency_ms": torch_latency_ms(dense, self.input_shape, self.threads,
                                                        repeats=self.latency_repeats, warmup=1)}
        with self._lock:
            self._dense[key] = figures
        return figures

    # ------------------------------------------------------------------------- on request
    def evaluate(self, snap: Snapshot) -> dict[str, dict[str, dict[str, float]]]:
        """``{"pruned": metrics, "dense": metrics}`` on the test loader, where metrics is
        ``{task: {metric: value}}`` (:func:`lib.training.evaluate`); the pruned network is not
        fine-tuned, the dense one is the compact network without masks."""
        from lib.training import evaluate

        self._require_test_data("test metrics")
        if self.metrics is None and self.cfg is None:
            raise ValueError("test metrics need the config (cfg=...) or metrics=...")
        with self._lock:
            if snap.key in self._evaluated:
                return self._evaluated[snap.key]
            dense = self.scored(snap.tasks, snap.method).plan.net
        device = self.device or next(dense.parameters()).device

        def run(net):
            return evaluate(net, self.test_loader, self.cfg, device=device, progress=False,
                            metrics=self.metrics)
        result = {"pruned": run(self.pruned_net(snap)), "dense": run(dense)}
        with self._lock:
            self._evaluated[snap.key] = result
        return result

    def prediction_grid(self, snap: Snapshot, num_samples: int = 2) -> bytes:
        """PNG bytes of :func:`lib.reports.plot_prediction_grid` for the pruned (not
        fine-tuned) network on the first ``num_samples`` test images (reference tasks)."""
        from lib.reports import plot_prediction_grid
        from lib.tasks import INPUT_KEY, TASKS

        self._require_test_data("the prediction grid")
        unknown = [t for t in snap.tasks if t not in TASKS]
        if unknown or self.cfg is None:
            raise ValueError(f"the prediction grid draws reference tasks with a config; got "
                             f"tasks {list(snap.tasks)}{' and no cfg' if self.cfg is None else ''}")
        batch = self._first_test_batch()
        net = self.pruned_net(snap).eval()
        device = next(net.parameters()).device
        with torch.no_grad():
            preds = [p.cpu() for p in net(batch[INPUT_KEY][:num_samples].to(device))]
        with tempfile.TemporaryDirectory(prefix="cut_explorer_") as folder:
            path = plot_prediction_grid(batch[INPUT_KEY][:num_samples], preds, batch,
                                        list(snap.tasks), Path(folder) / "grid.png",
                                        dataset=self.cfg.DATASET, max_samples=num_samples)
            return path.read_bytes()

    def export(self, snap: Snapshot, folder: str | Path) -> dict[str, Any]:
        """Write the pruned network as a checkpoint (+ sidecar with ``snap.meta()``), an edge
        artifact and ONNX (checked against PyTorch) into ``folder``; returns their paths."""
        folder = Path(folder)
        stem = Path(pruned_filename(snap.method, snap.tasks, sparsity=snap.target)).stem
        net = self.pruned_net(snap)
        checkpoint = save_pruned(net, folder / f"{stem}.pth", meta=snap.meta(), full_net=self.net)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notices
            artifact = save_artifact(net, folder / f"{stem}{ARTIFACT_SUFFIX}")
            onnx_path = export_onnx(net, folder / f"{stem}.onnx", self.input_shape)
        parity = check_onnx_parity(net, onnx_path, self.input_shape, threads=self.threads)
        return {"checkpoint": checkpoint, "artifact": Path(artifact["path"]),
                "artifact_bytes": artifact["bytes"], "onnx": onnx_path,
                "onnx_parity_ok": parity["ok"], "onnx_max_abs_diff": parity["max_abs_diff"]}

    # ------------------------------------------------------------------------- data
    def _require_test_data(self, what: str) -> None:
        if self.test_loader is None:
            raise ValueError(f"{what} need a test loader: pass test_loader=...")

    def _first_test_batch(self) -> dict:
        if self._test_batch is None:
            self._test_batch = next(iter(self.test_loader))
        return self._test_batch

    def _input_shape(self, given: Sequence[int] | None) -> tuple[int, ...]:
        if given is not None:
            shape = tuple(int(s) for s in given)
            if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
                raise ValueError(f"input_shape must be (N, 3, H, W), got {tuple(given)}")
            return shape
        from lib.tasks import INPUT_KEY

        source = self.test_loader if self.test_loader is not None else self.loader
        if source is None:
            raise ValueError("pass input_shape=(N, 3, H, W): there is no loader to take it from")
        batch = next(iter(source))
        return (1, *tuple(batch[INPUT_KEY].shape[1:]))
