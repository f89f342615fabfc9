"""CUT's core: task selection, per-task scores vs the naive oracle, masks, fusion, sparsity."""
import copy

import pytest
import torch

from lib.config import load_config
from lib.models import backbone_modules, head_modules, prunable_modules
from lib.pruning import (ScoreRanking, cut_prune, fuse_backbone, install_masks,
                         keep_ratio_for_sparsity, prune,
                         masks_of, reference_keep_ratio, remove_masks, select_tasks,
                         sparsity_report, task_masks, task_scores, task_scores_reference,
                         topk_mask)


@pytest.fixture(scope="module")
def setup(tiny_setup):
    return tiny_setup


# ------------------------------------------------------------------------- task selection
def test_select_tasks_removes_heads_keeps_names_and_order(setup):
    _, net, _, loader = setup
    compact = select_tasks(net, ["depth", "seg"])
    keys = set(compact.state_dict())
    assert not any(k.startswith("task2_") for k in keys)
    assert any(k.startswith("task3_fc1_c0.") for k in keys) and any(k.startswith("task1_") for k in keys)
    assert compact.task_ids == [3, 1] and compact.tasks == ["depth", "seg"]
    assert set(net.state_dict()) >= keys and any(k.startswith("task2_") for k in net.state_dict())
    img = loader[0]["img"]
    with torch.no_grad():
        full, small = net(img), compact.eval()(img)
    assert len(small) == 2
    assert torch.equal(small[0], full[2]) and torch.equal(small[1], full[0])
    assert torch.equal(compact.forward_dict(img)["seg"], full[0])


@pytest.mark.parametrize("selected,match", [(["seg", "edge"], "available tasks"),
                                            (["seg", "seg"], "more than once"),
                                            ([], "no task selected")])
def test_select_tasks_rejects_bad_names(setup, selected, match):
    with pytest.raises(ValueError, match=match) as info:
        select_tasks(setup[1], selected)
    assert "\n" not in str(info.value) and "['seg', 'sn', 'depth']" in str(info.value)


def test_select_tasks_rejects_non_scene_net():
    with pytest.raises(TypeError, match="SceneNet"):
        select_tasks(torch.nn.Linear(2, 2), ["seg"])


# ------------------------------------------------------------------------------ scores
@pytest.mark.parametrize("tasks", [["seg", "depth"], ["sn"]])
def test_shared_forward_scores_equal_naive_oracle(setup, tasks):
    _, net, criterion, loader = setup
    before = copy.deepcopy(net.state_dict())
    shared = task_scores(net, criterion, loader, tasks, num_batches=2, progress=False)
    oracle = task_scores_reference(net, criterion, loader, tasks, num_batches=2, progress=False)
    assert list(shared) == tasks
    for t in tasks:
        tid = net.task_ids[net.tasks.index(t)]
        expected_layers = {**backbone_modules(net), **head_modules(net, tid)}
        assert list(shared[t]) == list(oracle[t]) == list(expected_layers)
        for name in shared[t]:
            torch.testing.assert_close(shared[t][name], oracle[t][name], rtol=1e-5, atol=1e-12)
        assert sum(float(s.sum()) for s in shared[t].values()) > 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_train_mode_scoring_restores_network(setup):
    _, net, criterion, loader = setup
    net = copy.deepcopy(net)
    net.backbone.conv1.weight.requires_grad_(False)
    before = copy.deepcopy(net.state_dict())
    scores = task_scores(net, criterion, loader, ["seg"], num_batches=1, mode="train",
                         progress=False)
    assert not net.training and not net.backbone.conv1.weight.requires_grad
    assert net.backbone.blocks[0][0].conv1.weight.requires_grad
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # BN stats too
    assert sum(float(s.sum()) for s in scores["seg"].values()) > 0


def test_scoring_input_errors(setup):
    _, net, criterion, loader = setup
    with pytest.raises(ValueError, match="only 2 batches"):
        task_scores(net, criterion, loader, ["seg"], num_batches=3, progress=False)
    with pytest.raises(ValueError, match="positive integer"):
        task_scores(net, criterion, loader, ["seg"], num_batches=0, progress=False)
    with pytest.raises(ValueError, match="no loss for task"):
        task_scores(net, criterion.restricted_to(["depth"]), loader, ["seg"], 1, progress=False)
    with pytest.raises(ValueError, match="mode"):
        task_scores(net, criterion, loader, ["seg"], 1, mode="test", progress=False)
    with pytest.raises(ValueError, match="only 2 batches"):  # a generator has no len()
        task_scores(net, criterion, iter(loader), ["seg"], num_batches=3, progress=False)


# ------------------------------------------------------------------------------- masks
def test_task_masks_keep_exact_ratio_per_task():
    g = torch.Generator().manual_seed(0)
    scores = {"a": {"l1": torch.rand(10, 10, generator=g), "l2": torch.rand(7, 3, generator=g)},
              "b": {"l1": torch.rand(10, 10, generator=g), "l3": torch.rand(50, generator=g)}}
    for keep in (0.1, 0.33, 0.5, 1.0):
        masks = task_masks(scores, keep)
        for t, layers in scores.items():
            n = sum(s.numel() for s in layers.values())
            assert sum(int(m.sum()) for m in masks[t].values()) == int(n * keep)
            kept = torch.cat([s[masks[t][k]] for k, s in layers.items()])
            dropped = torch.cat([s[~masks[t][k]] for k, s in layers.items()])
            assert dropped.numel() == 0 or kept.min() > dropped.max()


def test_topk_keeps_ties_and_rejects_bad_keep_ratio():
    masks = topk_mask({"l": torch.tensor([3.0, 1.0, 1.0, 1.0, 0.5])}, 0.4)
    assert masks["l"].tolist() == [True, True, True, True, False]  # k=2, threshold tie kept
    for bad in (0, -0.1, 1.5, "x"):
        with pytest.raises(ValueError, match=r"keep_ratio must be"):
            topk_mask({"l": torch.ones(4)}, bad)
    with pytest.raises(ValueError, match="keeps no weight"):
        topk_mask({"l": torch.ones(4)}, 0.2)


# ------------------------------------------------------------------------------ fusion
# Three tasks' masks over 8 weights enumerate every vote pattern (a, b, c).
A = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
B = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
C = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], dtype=torch.bool)


@pytest.mark.parametrize("rule,expected", [
    (2, [0, 0, 0, 1, 0, 1, 1, 1]),
    ("majority", [0, 0, 0, 1, 0, 1, 1, 1]),
    ("all", [0, 0, 0, 0, 0, 0, 0, 1]),
    ("any", [0, 1, 1, 1, 1, 1, 1, 1]),
    (1, [0, 1, 1, 1, 1, 1, 1, 1]),
    (3, [0, 0, 0, 0, 0, 0, 0, 1]),
])
def test_fusion_truth_table_three_tasks(rule, expected):
    fused = fuse_backbone({"a": {"l": A}, "b": {"l": B}, "c": {"l": C}}, rule)
    assert fused["l"].tolist() == [bool(x) for x in expected]


@pytest.mark.parametrize("rule,expected", [(2, [0, 0, 0, 1]), ("all", [0, 0, 0, 1]),
                                           ("any", [0, 1, 1, 1]), ("majority", [0, 0, 0, 1])])
def test_fusion_truth_table_two_tasks(rule, expected):
    a = torch.tensor([0, 0, 1, 1], dtype=torch.bool)
    b = torch.tensor([0, 1, 0, 1], dtype=torch.bool)
    assert fuse_backbone({"a": {"l": a}, "b": {"l": b}}, rule)["l"].tolist() == [bool(x) for x in expected]


def test_fusion_single_task_and_bad_rules():
    for rule in (2, "all", "any", "majority"):
        assert torch.equal(fuse_backbone({"a": {"l": A}}, rule)["l"], A)
    assert not fuse_backbone({"a": {"l": A}}, 2, reproduce_single_task_bug=True)["l"].any()
    with pytest.raises(ValueError, match="exceeds"):
        fuse_backbone({"a": {"l": A}, "b": {"l": B}}, 3)
    for bad in (0, "most", 1.5, True):
        with pytest.raises(ValueError, match="min_votes"):
            fuse_backbone({"a": {"l": A}, "b": {"l": B}}, bad)


# ---------------------------------------------------------------------------------- CUT
def test_cut_prune_installs_reference_style_masks(setup):
    _, net, criterion, loader = setup
    result = prune("cut", net, criterion, loader, selected_tasks=["seg", "depth"], tasks=net.tasks,
                   num_batches=2, keep_ratio=0.1)
    pruned = result.net
    assert torch.equal(torch.cat([m.flatten() for m in masks_of(pruned).values()]),
                       torch.cat([m.flatten() for m in masks_of(
                           cut_prune(net, criterion, loader, 2, 0.1, ["seg", "depth"],
                                     net.tasks)).values()]))
    keys = set(pruned.state_dict())
    for name in prunable_modules(pruned):
        assert f"{name}.weight_orig" in keys and f"{name}.weight_mask" in keys
    assert not any(k.startswith("task2_") for k in keys)
    masks = masks_of(pruned)
    assert set(masks) == set(prunable_modules(pruned)) and all(m.dtype == torch.bool for m in masks.values())
    # heads carry their own task's mask: exactly the task mask stored for analysis
    for t, tid in zip(pruned.tasks, pruned.task_ids):
        for name in head_modules(pruned, tid):
            assert torch.equal(masks[name], result.task_masks[t][name])
    # backbone = 2-vote fusion of the two task masks (AND for two tasks)
    for name in backbone_modules(pruned):
        assert torch.equal(masks[name], result.task_masks["seg"][name] & result.task_masks["depth"][name])
    assert 80 < sparsity_report(pruned)["deployed"]["sparsity"] < 100


def test_one_task_keeps_backbone_unless_reproducing_bug(setup):
    _, net, criterion, loader = setup
    pruned = cut_prune(net, criterion, loader, 1, 0.2, ["sn"], net.tasks)
    report = sparsity_report(pruned)
    assert report["backbone"]["sparsity"] < 100 and list(report["heads"]) == ["sn"]
    buggy = cut_prune(net, criterion, loader, 1, 0.2, ["sn"], net.tasks,
                      reproduce_single_task_bug=True)
    assert sparsity_report(buggy)["backbone"]["sparsity"] == 100


def test_no_pruning_compact_outputs_equal_full_outputs(setup):
    _, net, criterion, loader = setup
    pruned = cut_prune(net, criterion, loader, 1, 1.0, ["sn", "depth"], net.tasks).eval()
    assert all(m.all() for m in masks_of(pruned).values())
    img = loader[1]["img"]
    with torch.no_grad():
        full, small = net(img), pruned(img)
    assert torch.equal(small[0], full[1]) and torch.equal(small[1], full[2])


def test_install_and_remove_masks_keep_outputs(setup):
    _, net, _, loader = setup
    compact = select_tasks(net, ["seg"]).eval()
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(m.weight.shape, generator=g) > 0.5
             for n, m in prunable_modules(compact).items()}
    install_masks(compact, masks)
    assert all(torch.equal(masks_of(compact)[n], masks[n]) for n in masks)
    with torch.no_grad():
        masked = compact(loader[0]["img"])[0]
        remove_masks(compact)
        permanent = compact(loader[0]["img"])[0]
    assert not any(k.endswith("weight_mask") for k in compact.state_dict())
    assert torch.equal(masked, permanent)
    with pytest.raises(KeyError, match="unknown layer"):
        install_masks(compact, {"nope": torch.ones(1, dtype=torch.bool)})


# ----------------------------------------------------------------------------- sparsity
def test_sparsity_report_deployed_and_reference_figures(setup):
    _, net, _, _ = setup
    compact = select_tasks(net, ["seg", "depth"])
    layers = prunable_modules(compact)
    name = next(iter(backbone_modules(compact)))
    mask = torch.ones_like(layers[name].weight, dtype=torch.bool)
    mask.view(-1)[:10] = False
    install_masks(compact, {name: mask})
    report = sparsity_report(compact, net)
    compact_total = sum(m.weight.numel() for m in layers.values())
    full_total = sum(m.weight.numel() for m in prunable_modules(net).values())
    assert report["layers"][name]["zeros"] == 10
    assert report["deployed"] == {"total": compact_total, "zeros": 10,
                                  "sparsity": pytest.approx(100 * 10 / compact_total)}
    assert report["reference"]["total"] == full_total
    assert report["reference"]["sparsity"] == pytest.approx(100 * 10 / full_total)
    assert report["backbone"]["zeros"] == 10 and report["heads"]["seg"]["zeros"] == 0


def test_target_sparsity_within_half_a_point(setup):
    _, net, criterion, loader = setup
    for target in (85.0, 92.5):
        pruned = cut_prune(net, criterion, loader, 2, None, ["seg", "depth"], net.tasks,
                           sparsity=target)
        assert abs(sparsity_report(pruned)["deployed"]["sparsity"] - target) <= 0.5
    g = torch.Generator().manual_seed(0)
    scores = {"l": torch.rand(1000, generator=g)}
    keep = keep_ratio_for_sparsity(lambda k: topk_mask(scores, k), 37.0)
    assert abs(100 * (1 - float(topk_mask(scores, keep)["l"].float().mean())) - 37.0) <= 0.5
    with pytest.raises(ValueError, match="cannot reach"):  # all scores tied
        keep_ratio_for_sparsity(lambda k: topk_mask({"l": torch.ones(100)}, k), 50.0)
    for bad in (100, -1, 150):
        with pytest.raises(ValueError, match=r"sparsity must be a percentage in \[0, 100\)"):
            keep_ratio_for_sparsity(lambda k: topk_mask(scores, k), bad)


def test_exact_ranking_breaks_ties_by_magnitude_then_position():
    scores = {"a": torch.tensor([3.0, 0.0, 0.0]), "b": torch.tensor([0.0, 0.0, 1.0])}
    magnitude = {"a": torch.tensor([9.0, 0.1, 0.5]), "b": torch.tensor([0.5, 0.7, 0.0])}
    ranking = ScoreRanking(scores, normalise=False, tie_break=magnitude)
    kept = ranking.masks(0.5)                       # reference rule: the zero plateau is all kept
    assert kept["a"].all() and kept["b"].all()
    exact = ranking.masks(0.5, exact=True)          # exactly 3: 3.0, 1.0, then the largest |w| tie
    assert exact["a"].tolist() == [True, False, False]
    assert exact["b"].tolist() == [False, True, True]
    position = ScoreRanking(scores, normalise=False).masks(4 / 6, exact=True)
    assert position["a"].tolist() == [True, True, True] and position["b"].tolist() == [False, False, True]


def test_target_sparsity_breaks_a_zero_score_plateau(setup):
    """Tiny inputs leave most dilated head taps on padding: their scores are exactly 0, and
    keeping ties (the reference's rule) cannot reach a low sparsity. The target mode must."""
    _, net, criterion, loader = setup
    kept = prune("cut", net, criterion, loader, selected_tasks=["seg", "depth"], tasks=net.tasks,
                 num_batches=2, keep_ratio=0.5)
    assert kept.meta["ties"] == "kept"
    assert sparsity_report(kept.net)["deployed"]["sparsity"] < 45   # the plateau was kept
    for method in ("cut", "snip", "lth"):
        pruned = prune(method, net, criterion, loader, selected_tasks=["seg", "depth"],
                       tasks=net.tasks, sparsity=50.0, num_batches=2)
        assert abs(sparsity_report(pruned.net)["deployed"]["sparsity"] - 50.0) <= 0.5, method
    assert pruned.meta["ties"] in ("kept", "broken")


def test_reference_keep_ratio_table(setup):
    cfg = setup[0]
    assert reference_keep_ratio(cfg, 90) == 0.08 and reference_keep_ratio(cfg, 70.0) == 0.257
    assert reference_keep_ratio(cfg, 80) == pytest.approx(0.2)
    cs = load_config("cityscapes")
    assert reference_keep_ratio(cs, 90) == 0.095
    with pytest.raises(ValueError):
        reference_keep_ratio(cfg, 100)
