"""The explorer's state logic (lib.explorer.state), without widgets or a browser: every figure it
shows is checked against the function that computes it on the real network, every setting's
keep ratio and masks against prune's."""
import copy

import pytest
import torch
from torch.utils.data import DataLoader

from lib.checkpoints import load_pruned, read_sidecar, sidecar_path
from lib.explorer import ExplorerState
from lib.export import conv_macs, load_artifact, parameter_counts, save_artifact
from lib.masks import install_masks, masks_of, sparsity_report
from lib.losses import TaskLosses
from lib.models import MultiTaskModel, copy_network, register_model, shared_layers
from lib.pruning import METHODS, PruningError, TargetSearch, UnreachableSparsityError, prune
from lib.pruning.sparsity import (SPARSITY_TOLERANCE, RememberedCurve, SparsityCurve,
                                  keep_ratio_for_sparsity)


class _Frames(torch.utils.data.Dataset):
    """Single frames of random batches, so a DataLoader (what evaluate takes) can batch them."""

    def __init__(self, batches):
        self.items = [{k: v[i] for k, v in b.items()} for b in batches
                      for i in range(len(b["img"]))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def setup(tiny_setup):
    cfg, net, criterion, loader = tiny_setup
    net = copy.deepcopy(net)
    with torch.no_grad():  # an exact zero in a kept weight must count as a zero
        net.backbone.conv1.weight.view(-1)[:5] = 0.0
    test_loader = DataLoader(_Frames(loader), batch_size=2, shuffle=False)
    return cfg, net, criterion, loader, test_loader


def _state(setup):
    cfg, net, criterion, loader, test_loader = setup
    return ExplorerState(net, criterion, loader, num_batches=2, cfg=cfg, test_loader=test_loader,
                         latency_repeats=1)


@pytest.fixture(scope="module")
def state(setup):
    """One state for the module: its caches are what the explorer relies on anyway."""
    return _state(setup)


def _installed(state, snap):
    return install_masks(copy_network(state.scored(snap.tasks, snap.method).plan.net),
                         state.masks(snap))


@pytest.mark.parametrize("method, rule", [("cut", None), ("cut", "any"), ("lth", None)])
def test_counted_figures_equal_the_real_functions_on_the_installed_masks(state, method, rule):
    snap = state.snapshot(["seg", "depth"], method, 80, rule=rule)
    net = _installed(state, snap)
    report = sparsity_report(net)
    assert {k: report[k] for k in ("layers", "backbone", "heads", "deployed")} == snap.report
    assert report["layers"]["backbone.conv1"]["zeros"] >= 5
    assert parameter_counts(net) == snap.params
    assert conv_macs(net, snap.input_shape) == snap.macs
    assert snap.macs["effective"] < snap.macs["dense"]
    assert abs(snap.sparsity - 80) <= SPARSITY_TOLERANCE


@pytest.mark.parametrize("rule", [2, "any", "all"])
def test_masks_are_prunes_at_the_chosen_keep_ratio(setup, state, rule):
    cfg, net, criterion, loader, _ = setup
    snap = state.snapshot(["seg", "sn", "depth"], "cut", 85, rule=rule)
    assert not snap.exact and snap.rule == rule
    result = prune("cut", net, criterion, loader, selected_tasks=["seg", "sn", "depth"],
                   keep_ratio=snap.keep_ratio, num_batches=2, min_votes=rule)
    expected, got = result.masks, state.masks(snap)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert result.sparsity == pytest.approx(snap.sparsity)


@pytest.mark.parametrize("method, rule", [("cut", None), ("cut", "any"), ("lth", None),
                                          ("cut_floor", "majority")])
def test_every_setting_is_prunes_keep_ratio_and_masks(setup, method, rule):
    """The slider's keep ratio and masks are prune(sparsity=S)'s, bit for bit, along a path of
    targets (each search starts from what the earlier ones remembered); 45 % is reached only
    with ties broken (a plateau of zero scores on the tiny inputs)."""
    cfg, net, criterion, loader, _ = setup
    state = _state(setup)
    options = {} if rule is None else {"min_votes": rule}
    broken = []
    for target in (90, 89, 91.5, 70, 45):
        snap = state.snapshot(["seg", "depth"], method, target, rule=rule)
        result = prune(method, net, criterion, loader, selected_tasks=["seg", "depth"],
                       sparsity=target, num_batches=2, **options)
        assert snap.keep_ratio == result.meta["keep_ratio"], target
        assert snap.exact == (result.meta["ties"] == "broken"), target
        expected, got = result.masks, state.masks(snap)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[n], got[n]) for n in expected), target
        assert snap.sparsity == result.sparsity
        broken.append(snap.exact)
    if method == "cut":
        assert broken[-1] and not broken[0]


def test_scores_once_per_selection_and_method(setup, monkeypatch):
    state = _state(setup)
    calls = []
    original = METHODS["cut"]

    def counting(net, ctx, **options):
        calls.append(tuple(net.tasks))
        return original(net, ctx, **options)
    monkeypatch.setitem(METHODS, "cut", counting)
    assert not state.is_scored(["seg", "depth"], "cut")
    for target in (90, 70, 91, 89.5):
        for rule in (2, "any", "majority"):
            state.snapshot(["seg", "depth"], "cut", target, rule=rule)
    assert calls == [("seg", "depth")] and state.is_scored(["seg", "depth"], "cut")
    state.snapshot(["seg", "sn"], "cut", 90)
    state.snapshot(["seg", "depth"], "cut", 60)
    assert calls == [("seg", "depth"), ("seg", "sn")]


def test_a_remembered_curve_makes_the_next_move_cheap(setup):
    state = _state(setup)
    state.snapshot(["seg", "depth"], "cut", 90)
    scored = state.scored(["seg", "depth"], "cut")
    search = scored.searches[2]
    before = search.evaluations
    state.snapshot(["seg", "depth"], "cut", 90)     # the same target: no evaluation
    assert search.evaluations == before
    state.snapshot(["seg", "depth"], "cut", 89)
    fresh = TargetSearch(scored.plan)
    assert fresh.keep_for(89) == state.snapshot(["seg", "depth"], "cut", 89).key[3:]
    assert search.evaluations - before < fresh.evaluations


def test_iou_of_the_task_masks_over_shared_layers(state):
    snap = state.snapshot(["seg", "sn", "depth"], "cut", 70)
    assert set(snap.iou) == {"seg&sn", "seg&depth", "sn&depth"}
    shared = set(shared_layers(state.scored(snap.tasks, "cut").plan.net))
    assert all(set(pair) == shared for pair in snap.iou.values())
    assert all(0.0 <= v <= 1.0 for pair in snap.iou.values() for v in pair.values())
    assert state.snapshot(["seg", "depth"], "lth", 70).iou is None
    assert state.snapshot(["seg"], "cut", 70).iou is None


def test_measured_artifact_size_is_the_writers(setup, state, tmp_path):
    cfg, net, criterion, loader, _ = setup
    snap = state.snapshot(["seg", "depth"], "cut", 90, rule="any")
    measured = state.measure(snap)
    result = prune("cut", net, criterion, loader, selected_tasks=["seg", "depth"],
                   keep_ratio=snap.keep_ratio, num_batches=2, min_votes="any")
    written = save_artifact(result.net, tmp_path / "independent.cutedge")
    assert measured["artifact_bytes"] == written["bytes"]
    assert measured["artifact_bytes"] < 0.5 * measured["dense_state_dict_bytes"]
    assert measured["latency_ms"] > 0 and measured["dense_latency_ms"] > 0
    assert state.measure(snap) is measured  # cached per setting and keep ratio


def test_export_writes_checkpoint_artifact_and_onnx(state, tmp_path):
    snap = state.snapshot(["seg", "depth"], "cut", 80)
    out = state.export(snap, tmp_path / "export")
    assert out["onnx_parity_ok"] and out["onnx"].is_file()
    assert out["artifact_bytes"] == state.measure(snap)["artifact_bytes"]
    loaded, meta = load_pruned(out["checkpoint"])
    masks = masks_of(loaded)
    assert all(torch.equal(masks[n].cpu(), m.cpu()) for n, m in state.masks(snap).items())
    assert meta["keep_ratio"] == snap.keep_ratio and meta["min_votes"] == 2
    assert meta["made_by"] == "lib.explorer" and meta["ties"] == "kept"
    sidecar = read_sidecar(sidecar_path(out["checkpoint"]))
    assert sidecar["sparsity"]["deployed"] == snap.report["deployed"]
    plain = load_artifact(out["artifact"])
    img = torch.randn(snap.input_shape)
    with torch.no_grad():
        for a, b in zip(plain(img), loaded.eval()(img)):
            assert torch.allclose(a, b, atol=1e-5)


def test_test_metrics_and_prediction_grid_of_the_pruned_network(state):
    snap = state.snapshot(["seg", "depth"], "cut", 95)
    metrics = state.evaluate(snap)
    assert set(metrics["pruned"]) == set(metrics["dense"]) == {"seg", "depth"}
    assert metrics["pruned"] != metrics["dense"]
    assert state.evaluate(snap) is metrics
    png = state.prediction_grid(snap)
    assert png.startswith(b"\x89PNG")


def test_bad_settings_are_one_line_errors(setup, state):
    with pytest.raises(PruningError, match="unknown pruning method 'nope'"):
        state.snapshot(["seg"], "nope", 50)
    with pytest.raises(PruningError, match="structured_cut.*mask-based methods only"):
        state.snapshot(["seg"], "structured_cut", 50)
    with pytest.raises(PruningError, match="fusion rule 3 needs more votes than the 2"):
        state.snapshot(["seg", "depth"], "cut", 50, rule=3)
    with pytest.raises(ValueError, match="min_votes must be"):
        state.snapshot(["seg", "depth"], "cut", 50, rule="most")
    with pytest.raises(ValueError, match=r"sparsity must be a percentage in \[0, 100\)"):
        state.snapshot(["seg"], "cut", 100)
    with pytest.raises(ValueError, match="edge"):
        state.snapshot(["edge"], "cut", 50)
    cfg, net, criterion, loader, _ = setup
    no_data = ExplorerState(net, input_shape=(1, 3, 48, 64))
    assert "cut" not in no_data.methods and "lth" in no_data.methods
    with pytest.raises(ValueError, match="test loader"):
        no_data.evaluate(no_data.snapshot(["seg"], "lth", 50))
    with pytest.raises(ValueError, match="min_votes is the explorer's"):
        ExplorerState(net, input_shape=(1, 3, 48, 64), method_options={"cut": {"min_votes": 2}})
    with pytest.raises(ValueError, match=r"input_shape must be \(N, 3, H, W\)"):
        ExplorerState(net, input_shape=(3, 48, 64))
    for option, value in (("latency_repeats", 0), ("threads", 0), ("max_scored", -1),
                          ("num_batches", 0), ("latency_repeats", 2.5), ("threads", "4")):
        with pytest.raises(ValueError, match=f"{option} must be a whole number >= 1, got "
                                             f"{value!r}"):
            ExplorerState(net, input_shape=(1, 3, 48, 64), **{option: value})
    with pytest.raises(ValueError, match="mode must be one of"):
        ExplorerState(net, input_shape=(1, 3, 48, 64), mode="training")


@register_model
class ExplorerColumns(MultiTaskModel):
    """Every layer belongs to one task: no shared layer to fuse or to compare masks on."""

    def __init__(self, tasks=("a", "b")):
        super().__init__()
        self.tasks = list(tasks)
        self.columns = torch.nn.ModuleDict({t: torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 1, 1)) for t in self.tasks})

    def shared_modules(self):
        return {}

    def task_modules(self, task):
        return {f"columns.{task}": self.columns[task]}

    def forward(self, x):
        return [self.columns[t](x) for t in self.tasks]

    def architecture(self):
        return {"model": "ExplorerColumns", "tasks": list(self.tasks)}


def test_a_model_without_shared_modules_is_explored():
    torch.manual_seed(0)
    criterion = TaskLosses({t: lambda pred, batch: pred.abs().mean() for t in ("a", "b")})
    g = torch.Generator().manual_seed(0)
    loader = [{"img": torch.randn(2, 3, 8, 8, generator=g)} for _ in range(2)]
    state = ExplorerState(ExplorerColumns().eval(), criterion, loader, num_batches=2,
                          latency_repeats=1)
    snap = state.snapshot(["a", "b"], "cut", 50)
    assert snap.iou is None and abs(snap.sparsity - 50) <= SPARSITY_TOLERANCE
    assert snap.report["backbone"]["total"] == 0
    assert state.measure(snap)["artifact_bytes"] > 0


class _Counted(SparsityCurve):
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def at(self, keep):
        self.calls.append(keep)
        return self.fn(keep)


def test_a_remembered_curve_gives_a_fresh_searchs_answer_and_counts_less():
    smooth = _Counted(lambda keep: 100.0 * (1.0 - keep) ** 2)
    remembered = RememberedCurve(smooth)
    for target in (75, 74, 75, 60.5):
        assert (keep_ratio_for_sparsity(remembered, target)
                == keep_ratio_for_sparsity(_Counted(smooth.fn), target))
    assert len(smooth.calls) == remembered.evaluations == len(set(smooth.calls))
    before = remembered.evaluations
    keep_ratio_for_sparsity(remembered, 75)             # every point of its path is known
    assert remembered.evaluations == before


def test_a_remembered_curve_proves_a_second_target_in_a_jump_unreachable_for_free():
    step = _Counted(lambda keep: 100.0 - 33.3 * keep if keep < 0.3
                    else 40.0 - 40.0 * (keep - 0.3) / 0.7)   # 90 % down to 40 % at keep 0.3
    remembered = RememberedCurve(step)
    with pytest.raises(UnreachableSparsityError) as info:
        keep_ratio_for_sparsity(remembered, 60)
    assert info.value.closest in (pytest.approx(40.0, abs=1e-3), pytest.approx(90.0, abs=0.1))
    spent = remembered.evaluations
    with pytest.raises(UnreachableSparsityError):
        keep_ratio_for_sparsity(remembered, 55)
    assert remembered.evaluations == spent
    assert abs(step.fn(keep_ratio_for_sparsity(remembered, 30)) - 30) <= SPARSITY_TOLERANCE


# ------------------------------------------------------------------------------ the view
def test_view_follows_its_controls_without_a_browser(state, tmp_path):
    from lib.explorer.view import ExplorerView

    view = ExplorerView(state, tasks=["seg", "depth"], sparsity=90, out_dir=tmp_path / "out")
    try:
        first = view.snapshot
        assert "deployed sparsity 90." in view.figures.value and view.rule.value == 2
        assert view._worker.wait_idle(60)
        assert "artifact" in view.figures.value and "measuring" not in view.figures.value
        plot, iou = view.layer_plot.value, view.iou_plot.value
        view.sparsity.value = 70
        assert view.snapshot.target == 70 and abs(view.snapshot.sparsity - 70) <= 0.5
        assert view.layer_plot.value != plot and view.iou_plot.value != iou
        assert f"deployed sparsity {view.snapshot.sparsity:.2f} %" in view.figures.value
        view.rule.value = "any"
        assert view.snapshot.rule == "any" and view.snapshot.keep_ratio != first.keep_ratio
        view.method.value = "lth"
        assert view.rule.disabled and view.snapshot.rule is None
        assert view.iou_plot.layout.display == "none"
        view.method.value = "disparse_pt"
        assert view.rule.value == "any" and not view.rule.disabled  # that method's own rule
        view.task_boxes["depth"].value = False
        assert view.snapshot.tasks == ("seg",)
        view.task_boxes["seg"].value = False
        assert "select at least one task" in view.status.value
        view.task_boxes["seg"].value = True
        assert view.snapshot.tasks == ("seg",)
        view.evaluate_button.click()
        assert "<table" in view.metrics.value and bytes(view.grid.value)[:4] == b"\x89PNG"
        view.export_button.click()
        assert "exported" in view.status.value and "matches PyTorch" in view.status.value
        assert len(list((tmp_path / "out").glob("disparse_pt_70_seg.*"))) == 4
    finally:
        view.close()


def test_view_shows_bad_settings_as_one_line(state):
    from lib.explorer.view import ExplorerView

    view = ExplorerView(state, tasks=["seg", "depth"], rule=3, measure=False)
    assert "fusion rule 3 needs more votes" in view.status.value and view.snapshot is None
    view.rule.value = "all"
    assert view.snapshot.rule == "all"
    view.close()


def test_keeping_every_weight_leaves_the_zero_weights(state):
    scored = state.scored(["seg", "depth"], "cut")
    masks = scored.plan.masks_for(1.0)
    kept = scored.counter.kept(masks)
    assert scored.counter.zero_percent == pytest.approx(
        100.0 * (sum(scored.counter.numel.values()) - sum(kept.values()))
        / sum(scored.counter.numel.values()))
    assert scored.counter.zero_percent > 0  # the fixture's five zeros


def test_background_worker_runs_only_the_latest_request():
    import threading

    from lib.explorer.worker import LatestOnly

    release, ran, reported = threading.Event(), [], []

    def work(item):
        ran.append(item)
        if item == "first":
            release.wait(10)
        if item == "bad":
            raise ValueError("no")
        return item.upper()
    worker = LatestOnly(work, lambda item, result, error: reported.append((item, result, error)))
    worker.submit("first")
    while not ran:
        threading.Event().wait(0.01)
    for item in ("dropped", "also dropped", "last"):
        worker.submit(item)
    release.set()
    assert worker.wait_idle(10)
    assert ran == ["first", "last"]
    assert reported == [("first", "FIRST", None), ("last", "LAST", None)]
    worker.submit("bad")
    assert worker.wait_idle(10)
    assert reported[-1][0] == "bad" and isinstance(reported[-1][2], ValueError)
    worker.close()


def test_metrics_table_shows_undefined_metrics_with_their_reason():
    from lib.explorer.view import metrics_html
    from lib.metrics import MetricResults

    reason = "no class has a true positive"
    pruned = MetricResults({"seg": {"mIoU": None, "err": 3.25}}, {"seg": {"mIoU": reason}})
    dense = MetricResults({"seg": {"mIoU": 0.5, "err": 3.0}})
    table = metrics_html({"pruned": pruned, "dense": dense})
    assert "<td>0.5</td><td><span title='no class has a true positive'>undefined</span>" in table
    assert "seg mIoU undefined: no class has a true positive" in table
    assert "<td>3</td><td>3.25</td>" in table
