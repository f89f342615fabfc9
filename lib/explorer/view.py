"""The explorer in a notebook: ipywidgets controls over :class:`lib.explorer.ExplorerState`.

Controls: the tasks (check boxes), the method, the fusion rule of the shared layers and the
target deployed sparsity (slider). Every change shows at once, counted from the masks: the
deployed sparsity, keep ratio, parameters, MACs, the per-layer sparsity plot and the per-layer
IoU of the task masks. The artifact size and the PyTorch CPU latency follow from a background
thread (cached per setting). Buttons: test metrics + prediction grid of the pruned, not
fine-tuned network; export (checkpoint + sidecar, edge artifact, ONNX) into ``out_dir``.

Measured (``benchmarks/bench_explorer.py``) on the reference-width 3-task SceneNet (ResNet-34,
90.7 M parameters, untrained) at a 1x3x48x64 input, one thread, on a shared 2-core machine, with
``lib.pruning.ScoreRanking`` as it is on main (a full sort; the linear-time selection replacing
it only makes this faster): with the scores cached, moving the slider to a new position 1 to 5
points away took 0.44-0.56 s wall (0.24-0.26 s CPU: one evaluation of the masks, the counts,
the IoU and two plot frames), back to a position seen before 0.07-0.11 s, against 34 s for
re-running ``prune(sparsity=90)``; the first view (scoring) took 34 s, the background artifact
+ latency measurement 80 s. A target inside a plateau of tied scores is slower once (ties are
broken, as ``prune`` does; see README).
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as widgets

from .figures import LayerSparsityPlot, MaskIouPlot
from .state import FUSION_RULES, ExplorerState, Snapshot
from .worker import LatestOnly

RULE_LABELS = {2: "2 votes (reference)", "all": "all tasks", "any": "any task (union)",
               "majority": "majority"}


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0
    return f"{n:.2f} GB"


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def figures_html(snap: Snapshot, measured: dict | None, threads: int, repeats: int) -> str:
    """The readout of one snapshot (``measured``: :meth:`ExplorerState.measure`'s, or None
    while it is being measured)."""
    ties = "ties broken" if snap.exact else "ties kept"
    rule = "" if snap.rule is None else f", fusion {RULE_LABELS.get(snap.rule, snap.rule)}"
    shape = "x".join(str(s) for s in snap.input_shape)
    lines = [
        f"<b class='cut-explorer-sparsity'>deployed sparsity {snap.sparsity:.2f} %</b> "
        f"(target {snap.target:g} %, keep ratio {snap.keep_ratio:.4f}, {ties}{rule})",
        f"parameters {_count(snap.params['nonzero'])} non-zero of {_count(snap.params['total'])}"
        f" &middot; MACs {_count(snap.macs['effective'])} effective of "
        f"{_count(snap.macs['dense'])} (input {shape})"]
    if measured is None:
        lines.append("<span class='cut-explorer-pending'>artifact size and latency: "
                     "measuring&hellip;</span>")
    else:
        ratio = measured["artifact_bytes"] / measured["dense_state_dict_bytes"]
        lines.append(
            f"<span class='cut-explorer-measured'>artifact {_bytes(measured['artifact_bytes'])} "
            f"({ratio:.3f} of the dense state dict, {_bytes(measured['dense_state_dict_bytes'])})"
            f" &middot; latency {measured['latency_ms']:.1f} ms (dense "
            f"{measured['dense_latency_ms']:.1f} ms; PyTorch CPU, {threads} thread(s), median of "
            f"{repeats})</span>")
    return "<br>".join(lines)


def metrics_html(metrics: dict) -> str:
    """A table of ``{"pruned": m, "dense": m}`` (:meth:`ExplorerState.evaluate`; each m a
    :class:`lib.metrics.MetricResults`, whose undefined metrics are None with a reason)."""
    def cell(results, task: str, name: str) -> str:
        value = results[task][name]
        if value is not None:
            return f"{value:.5g}"
        reason = getattr(results, "undefined", {}).get(task, {}).get(name, "")
        return f"<span title='{html.escape(reason, quote=True)}'>undefined</span>"
    rows = ["<tr><th>task</th><th>metric</th><th>dense</th><th>pruned (not fine-tuned)</th></tr>"]
    notes = {}
    for task, values in metrics["pruned"].items():
        for name in values:
            rows.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(name)}</td>"
                        f"<td>{cell(metrics['dense'], task, name)}</td>"
                        f"<td>{cell(metrics['pruned'], task, name)}</td></tr>")
            for results in (metrics["dense"], metrics["pruned"]):
                reason = getattr(results, "undefined", {}).get(task, {}).get(name)
                if reason:
                    notes[f"{task} {name}"] = reason
    table = "<table class='cut-explorer-metrics'>" + "".join(rows) + "</table>"
    return table + "".join(f"<div>{html.escape(k)} undefined: {html.escape(v)}</div>"
                           for k, v in notes.items())


class ExplorerView:
    """The widgets and their callbacks; ``display(view)`` (or a cell ending in it) shows it.

    ``view.snapshot`` is what is shown; ``view.last_update_s`` how long the last change took
    (counting and drawing, not the background measurement).
    """

    def __init__(self, state: ExplorerState, *, tasks: Sequence[str] | None = None,
                 method: str = "cut", rule=None, sparsity: float = 90.0,
                 out_dir: str | Path = "explorer_exports", measure: bool = True):
        self.state = state
        self.out_dir = Path(out_dir)
        chosen = list(state.tasks if tasks is None else tasks)
        self.task_boxes = {t: widgets.Checkbox(value=t in chosen, description=t, indent=False,
                                               layout=widgets.Layout(width="auto"))
                           for t in state.tasks}
        self.method = widgets.Dropdown(options=state.methods, value=method, description="method")
        self.rule = widgets.Dropdown(options=[(RULE_LABELS[r], r) for r in FUSION_RULES],
                                     value=2, description="fusion")
        self.sparsity = widgets.FloatSlider(value=float(sparsity), min=0.0, max=99.0, step=1.0,
                                            description="sparsity %", readout_format=".0f",
                                            continuous_update=False)
        self.figures = widgets.HTML().add_class("cut-explorer-figures")
        self.status = widgets.HTML().add_class("cut-explorer-status")
        self.layer_plot = widgets.Image(format="png").add_class("cut-explorer-layer-plot")
        self.iou_plot = widgets.Image(format="png").add_class("cut-explorer-iou-plot")
        self.evaluate_button = widgets.Button(description="test metrics + predictions",
                                              layout=widgets.Layout(width="auto"))
        self.export_button = widgets.Button(description="export this",
                                            layout=widgets.Layout(width="auto"))
        self.metrics = widgets.HTML().add_class("cut-explorer-metrics")
        self.grid = widgets.Image(format="png").add_class("cut-explorer-grid")
        self.widget = widgets.VBox([
            widgets.HBox([widgets.Label("tasks"), *self.task_boxes.values()]),
            widgets.HBox([self.method, self.rule]), self.sparsity, self.figures, self.status,
            self.layer_plot, self.iou_plot,
            widgets.HBox([self.evaluate_button, self.export_button]), self.metrics, self.grid,
        ]).add_class("cut-explorer")
        self.snapshot: Snapshot | None = None
        self.last_update_s: float | None = None
        self._plots: dict[tuple, Any] = {}
        self._quiet = False
        self._worker = LatestOnly(state.measure, self._show_measured) if measure else None
        for control in (*self.task_boxes.values(), self.method, self.rule, self.sparsity):
            control.observe(self._changed, names="value")
        self.evaluate_button.on_click(lambda _: self.run_evaluation())
        self.export_button.on_click(lambda _: self.run_export())
        self.refresh(rule="method" if rule is None else rule)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def tasks(self) -> list[str]:
        return [t for t, box in self.task_boxes.items() if box.value]

    # ------------------------------------------------------------------------- changes
    def _changed(self, change) -> None:
        if self._quiet:
            return
        # A new method or task selection starts from the method's own fusion rule.
        self.refresh(rule="method" if change["owner"] is not self.rule else None)

    def _set_rule(self, rule) -> None:
        """Show ``rule`` in the fusion control without reacting to it; None disables it."""
        self._quiet = True
        try:
            self.rule.disabled = rule is None
            if rule is not None:
                if rule not in [value for _, value in self.rule.options]:
                    self.rule.options = [*self.rule.options, (f"{rule} votes", rule)]
                self.rule.value = rule
        finally:
            self._quiet = False

    def refresh(self, rule=None) -> None:
        """Show the current setting (scoring first if this selection has not been scored).

        ``rule``: a fusion rule to switch to first, or ``"method"`` for the method's own.
        """
        tasks = self.tasks
        if not tasks:
            self.status.value = "select at least one task"
            return
        start = time.perf_counter()
        if not self.state.is_scored(tasks, self.method.value):
            self.status.value = (f"scoring {html.escape(self.method.value)} for "
                                 f"{html.escape('+'.join(tasks))} (once for this selection)"
                                 f"&hellip;")
        try:
            if rule is not None:
                own = self.state.default_rule(tasks, self.method.value)
                self._set_rule(None if own is None else own if rule == "method" else rule)
            snap = self.state.snapshot(tasks, self.method.value, self.sparsity.value,
                                       None if self.rule.disabled else self.rule.value)
        except (ValueError, KeyError, RuntimeError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return
        self.snapshot = snap
        measured = self.state.measured(snap)
        self.figures.value = figures_html(snap, measured, self.state.threads,
                                          self.state.latency_repeats)
        layer_plot = self._layer_plot(snap)
        self.layer_plot.width, self.layer_plot.value = str(layer_plot.width), layer_plot.png(
            snap.report)
        if snap.iou:
            iou_plot = self._iou_plot(snap)
            self.iou_plot.width, self.iou_plot.value = str(iou_plot.width), iou_plot.png(snap.iou)
            self.iou_plot.layout.display = None
        else:
            self.iou_plot.layout.display = "none"
        self.metrics.value, self.grid.layout.display = "", "none"
        self.last_update_s = time.perf_counter() - start
        self.status.value = f"updated in {1000 * self.last_update_s:.0f} ms"
        if measured is None and self._worker is not None:
            self._worker.submit(snap)

    def _layer_plot(self, snap: Snapshot) -> LayerSparsityPlot:
        layers = tuple(snap.report["layers"])
        key = ("layers", snap.tasks, layers)
        if key not in self._plots:
            self._plots[key] = LayerSparsityPlot(
                layers, f"per-layer deployed sparsity, {'+'.join(snap.tasks)}")
        return self._plots[key]

    def _iou_plot(self, snap: Snapshot) -> MaskIouPlot:
        pairs = tuple(snap.iou)
        layers = tuple(next(iter(snap.iou.values())))
        key = ("iou", pairs, layers)
        if key not in self._plots:
            self._plots[key] = MaskIouPlot(pairs, layers,
                                           "per-layer IoU of the task masks (shared layers)")
        return self._plots[key]

    def _show_measured(self, snap: Snapshot, measured: dict | None, error) -> None:
        if snap is not self.snapshot:
            return  # the controls moved on; the measurement stays cached for later
        if error is not None:
            self.status.value = (f"<span style='color:#b00'>measuring failed: "
                                 f"{html.escape(str(error))}</span>")
            return
        self.figures.value = figures_html(snap, measured, self.state.threads,
                                          self.state.latency_repeats)

    # ------------------------------------------------------------------------- buttons
    def run_evaluation(self) -> None:
        """Test metrics and the prediction grid of the shown (pruned, not fine-tuned) network."""
        snap = self.snapshot
        if snap is None:
            return
        self.status.value = "evaluating the pruned network on the test loader&hellip;"
        try:
            self.metrics.value = metrics_html(self.state.evaluate(snap))
            try:
                self.grid.value = self.state.prediction_grid(snap)
                self.grid.layout.display = None
            except ValueError as exc:  # tasks the prediction grid cannot draw
                self.grid.layout.display = "none"
                self.status.value = html.escape(str(exc))
                return
        except (ValueError, KeyError, RuntimeError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return
        self.status.value = "test metrics of the pruned network (not fine-tuned)"

    def run_export(self) -> dict | None:
        """Write the shown network (checkpoint + sidecar, artifact, ONNX) into ``out_dir``."""
        snap = self.snapshot
        if snap is None:
            return None
        self.status.value = f"exporting to {html.escape(str(self.out_dir))}&hellip;"
        try:
            out = self.state.export(snap, self.out_dir)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return None
        parity = "matches PyTorch" if out["onnx_parity_ok"] else "DIFFERS from PyTorch"
        self.status.value = (f"exported: {html.escape(str(out['checkpoint']))} (+ .json), "
                             f"{html.escape(str(out['artifact']))} "
                             f"({_bytes(out['artifact_bytes'])}), "
                             f"{html.escape(str(out['onnx']))} (ONNX {parity})")
        return out

    def close(self) -> None:
        """Stop the background measurements and close the widgets."""
        if self._worker is not None:
            self._worker.close()
        self.widget.close()


def explore(net, criterion=None, loader=None, *, tasks: Sequence[str] | None = None,
            method: str = "cut", min_votes=None, sparsity: float = 90.0,
            out_dir: str | Path = "explorer_exports", measure: bool = True,
            **state_options) -> ExplorerView:
    """Open the explorer on the dense base network ``net``; the returned view displays itself.

    ``criterion``, ``loader`` and ``state_options`` (``num_batches``, ``cfg``,
    ``test_loader``, ``metrics``, ``input_shape``, ``seed``, ``mode``, ``device``,
    ``method_options``, ``max_scored``, ``latency_repeats``, ``threads``) are
    :class:`ExplorerState`'s; ``tasks`` (default all), ``method``, ``min_votes`` (default: the
    method's own) and ``sparsity`` the first setting shown; ``out_dir`` where "export this"
    writes; ``measure=False`` leaves out the background artifact/latency measurement.
    """
    state = ExplorerState(net, criterion, loader, **state_options)
    return ExplorerView(state, tasks=tasks, method=method, rule=min_votes, sparsity=sparsity,
                        out_dir=out_dir, measure=measure)
