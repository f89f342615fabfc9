"""Structured CUT: channels physically removed, selected outputs kept, rebuildable, trainable."""
import pytest
import torch
import torch.nn as nn

from lib.export import has_prune_hooks, load_artifact, save_artifact
from lib.losses import SceneNetLoss
from lib.models import SceneNet
from lib.pruning import global_magnitude_masks, install_masks, required_votes
from lib.pruning.structured import (build_structured, channel_spec, count_channels,
                                    structured_cut_prune)
from tests.conftest import make_random_batch

TASKS, NUM_CLASS = ["seg", "sn", "depth"], [40, 3, 1]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = SceneNet(NUM_CLASS, "ResNet18", 0.125, tasks=TASKS)
    criterion = SceneNetLoss("nyuv2_3", TASKS, [1, 20, 3])
    loader = [make_random_batch(TASKS, NUM_CLASS, seed=i) for i in range(2)]
    return net, criterion, loader


def _conv_widths(net):
    return {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def test_structured_network_runs_smaller_with_selected_outputs(setup):
    net, criterion, loader = setup
    before = [m.weight.detach().clone() for m in net.modules() if isinstance(m, nn.Conv2d)]
    pruned = structured_cut_prune(net, criterion, loader, ["depth", "seg"], channel_sparsity=0.5,
                                  num_batches=2, min_votes=2)
    assert isinstance(pruned, SceneNet) and not has_prune_hooks(pruned)
    assert pruned.tasks == ["depth", "seg"] and pruned.task_ids == [3, 1]
    assert not hasattr(pruned, "task2_fc1_c0")
    full, small = count_channels(net), count_channels(pruned)
    assert small["backbone"] <= 0.55 * full["backbone"]
    widths = _conv_widths(pruned)
    assert widths["task3_fc1_c0.conv1"] == _conv_widths(net)["task3_fc1_c0.conv1"] // 2
    pruned.eval(), net.eval()
    img = loader[0]["img"]
    with torch.no_grad():
        dense_out = dict(zip(TASKS, net(img)))
        out = pruned(img)
    assert [o.shape for o in out] == [dense_out["depth"].shape, dense_out["seg"].shape]
    assert all(torch.isfinite(o).all() for o in out)
    assert sum(p.numel() for p in pruned.parameters()) < 0.4 * sum(p.numel() for p in net.parameters())
    after = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the input is not modified


def test_one_task_uses_its_own_decision_and_is_deterministic(setup):
    net, criterion, loader = setup
    a = structured_cut_prune(net, criterion, loader, ["sn"], 0.5, 2, min_votes=2)  # not "2 votes"
    b = structured_cut_prune(net, criterion, loader, ["sn"], 0.5, 2, min_votes=2)
    assert channel_spec(a) == channel_spec(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    full = _conv_widths(net)
    for name, width in _conv_widths(a).items():  # one task: exactly half of every group
        if not name.endswith("conv3"):
            assert width == full[name] - full[name] // 2


def test_fusion_rules_order_kept_channels(setup):
    net, criterion, loader = setup
    kept = {rule: count_channels(structured_cut_prune(net, criterion, loader, TASKS, 0.5, 1,
                                                      min_votes=rule))["backbone"]
            for rule in ("any", "majority", "all")}
    assert kept["any"] >= kept["majority"] >= kept["all"] >= 1
    assert kept["any"] > kept["all"]
    assert [required_votes(r, 3) for r in ("any", "majority", "all", 2)] == [1, 2, 3, 2]
    with pytest.raises(ValueError, match="min_votes=3 exceeds the 2 selected tasks"):
        structured_cut_prune(net, criterion, loader, ["seg", "sn"], 0.5, 1, min_votes=3)
    with pytest.raises(ValueError, match="unknown task\\(s\\) \\['normal'\\]"):
        structured_cut_prune(net, criterion, loader, ["normal"], 0.5, 1)


def test_rebuild_from_channel_spec_and_artifact(setup, tmp_path):
    net, criterion, loader = setup
    pruned = structured_cut_prune(net, criterion, loader, ["seg"], 0.5, 1).eval()
    img = loader[0]["img"]
    rebuilt = build_structured(pruned.architecture(), channel_spec(pruned),
                               pruned.state_dict()).eval()
    with pytest.warns(UserWarning, match="no prune masks"):
        save_artifact(pruned, tmp_path / "s.cutedge")
    loaded = load_artifact(tmp_path / "s.cutedge")
    with torch.no_grad():
        expected = pruned(img)[0]
        assert torch.equal(rebuilt(img)[0], expected)
        assert torch.equal(loaded(img)[0], expected)


def test_structured_network_fine_tunes_with_a_plain_optimizer(setup):
    net, criterion, loader = setup
    pruned = structured_cut_prune(net, criterion, loader, ["sn", "depth"], 0.5, 1).train()
    loss_fn = criterion.restricted_to(["sn", "depth"])
    opt = torch.optim.SGD(pruned.parameters(), lr=1e-3)
    before = pruned.backbone.conv1.weight.detach().clone()
    loss = loss_fn(pruned(loader[0]["img"]), loader[0])
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, pruned.backbone.conv1.weight)


def test_masked_input_is_made_plain_first(setup):
    net, criterion, loader = setup
    masked = SceneNet(NUM_CLASS, "ResNet18", 0.125, tasks=TASKS)
    masked.load_state_dict(net.state_dict())
    install_masks(masked, global_magnitude_masks(masked, 0.5))
    pruned = structured_cut_prune(masked, criterion, loader, ["seg"], 0.25, 1)
    assert not has_prune_hooks(pruned) and has_prune_hooks(masked)
    with torch.no_grad():
        assert pruned.eval()(loader[0]["img"])[0].shape[1] == 40


# ----------------------------------------------------------------------------- global ranking
def test_global_ranking_lets_groups_compete_on_normalised_scores():
    from lib.pruning.structured import _global_top_channels

    flat = torch.tensor([1.0, 1.0, 1.0, 1.0])           # every channel matters alike
    peaked = torch.tensor([10.0, 0.0, 0.0, 0.0]) * 1e3  # one channel matters, larger scale
    kept = _global_top_channels([flat, peaked], 0.5)
    assert [int(k.sum()) for k in kept] == [3, 1]      # uniform ranking would keep 2 + 2
    assert bool(kept[1][0])
    # A per-group minimum of one channel, even past the budget.
    kept = _global_top_channels([flat, peaked, torch.zeros(2)], 0.99)
    assert [int(k.sum()) for k in kept] == [1, 1, 1]


def test_global_ranking_keeps_the_channel_budget_not_the_per_group_fraction(setup):
    from lib.pruning.structured import structured_cut_plan

    net, criterion, loader = setup
    plan = structured_cut_plan(net, criterion, loader, ["seg"], num_batches=2)
    uniform, global_ = plan.decide(0.5, "uniform"), plan.decide(0.5, "global")
    total = sum(g.size for g in plan.groups)
    assert sum(int(k.sum()) for k in global_.values()) == total - int(0.5 * total)
    assert all(int(k.sum()) >= 1 for k in global_.values())
    assert any(int(global_[r].sum()) != int(uniform[r].sum()) for r in uniform)
    pruned = plan.prune(0.5, "global").eval()
    again = structured_cut_prune(net, criterion, loader, ["seg"], 0.5, 2, ranking="global")
    assert channel_spec(pruned) == channel_spec(again)          # seeded scores: deterministic
    assert pruned.structured_meta["ranking"] == "global"
    widths = _conv_widths(pruned)
    for root, kept in global_.items():
        assert widths[root] == int(kept.sum())
    with torch.no_grad():
        out = pruned(loader[0]["img"])
    assert out[0].shape[1] == 40 and torch.isfinite(out[0]).all()
    # The plan's uniform decision is the one structured_cut_prune makes.
    assert channel_spec(plan.prune(0.5)) == channel_spec(
        structured_cut_prune(net, criterion, loader, ["seg"], 0.5, 2))
    with pytest.raises(ValueError, match="ranking must be one of"):
        plan.decide(0.5, "layerwise")
