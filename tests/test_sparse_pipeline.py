"""lib.sparse: the reweighted-L1 penalty by hand, exact one-shot hard pruning, the min-max
pipeline's stages (per-layer ratios reached exactly, resumable, settings recorded), DiSparse's
static protocol, keep tables and IoU statistics."""
import math

import pytest
import torch

from conftest import make_random_batch
from lib.losses import SceneNetLoss
from lib.models import prunable_layers, shared_layers
from lib.pruning import load_pruned
from lib.sparse import masking
from lib.sparse.disparse import (disparse_keep_ratio, iou_at_initialisation, mask_agreement,
                                 static_from_scratch, train_from_scratch)
from lib.sparse.hard_prune import hard_prune_masks, kept
from lib.sparse.minmax_pipeline import minmax_pipeline
from lib.sparse.reweighted import ReweightedL1
from lib.training import read_checkpoint
from test_sparse_dynamic import cfg, context, fresh  # noqa: F401 (cfg: a fixture)
from test_training import loader, make_data


def test_reweighted_penalty_by_hand(cfg):
    net = fresh(cfg)
    hook = ReweightedL1(penalty=1e-3, eps=1e-6, refresh_at=[3])
    hook.setup(net, context(cfg))
    w0 = {n: m.weight.detach().clone() for n, m in shared_layers(net).items()}
    assert set(hook.scales) == set(w0)     # reference scope: on SceneNet the shared layers
    with torch.no_grad():
        for m in shared_layers(net).values():
            m.weight.mul_(-2)
    expected = 1e-3 * sum((2 * w.abs() / (w.abs() + 1e-6)).sum() for w in w0.values())
    assert float(hook.penalty(net).detach()) == pytest.approx(float(expected), rel=1e-5)
    hook.before_forward(net, None, 2)                          # not a refresh iteration
    assert float(hook.penalty(net).detach()) == pytest.approx(float(expected), rel=1e-5)
    hook.before_forward(net, None, 3)                          # W_old := current weights
    count = sum(w.numel() for w in w0.values())
    assert float(hook.penalty(net).detach()) == pytest.approx(1e-3 * count, rel=1e-3)
    ref = ReweightedL1(penalty=1.0, reference_eps=True, layers="all")
    ref.setup(net, context(cfg))
    name, module = next(iter(prunable_layers(net).items()))
    assert torch.equal(ref.scales[name], 1 / (module.weight.detach() + 1e-6))
    with pytest.raises(ValueError, match=r"refresh_at \[9\] lie beyond the run's 5 iterations"):
        ReweightedL1(refresh_at=[9]).check(fresh(cfg), 5)


@pytest.mark.parametrize("ratio", [0.975, 0.983, 0.99])
def test_hard_prune_reaches_each_layer_ratio_exactly(cfg, ratio):
    net = fresh(cfg)
    layers = prunable_layers(net)
    masks = hard_prune_masks(layers, ratio, "irregular")
    for name, m in layers.items():
        n = m.weight.numel()
        assert int(masks[name].sum()) == kept(n, ratio) == max(1, n - round(ratio * n))
        threshold = m.weight.detach().abs()[masks[name]].min()
        assert bool((m.weight.detach().abs()[~masks[name]] <= threshold).all())
    filters = hard_prune_masks(layers, ratio, "filter")
    for name, m in layers.items():
        rows = filters[name].flatten(1)
        alive_rows = rows.all(dim=1)
        assert torch.equal(alive_rows, rows.any(dim=1))       # whole filters
        assert int(alive_rows.sum()) == kept(rows.shape[0], ratio)


def test_minmax_pipeline_stages(cfg, tmp_path):
    ds = make_data(cfg, n=4)
    base = fresh(cfg).select(["seg", "depth"])
    criterion = SceneNetLoss.from_config(cfg)
    common = dict(rew_iters=2, retrain_iters=2, log=False, seed=1, layers="all")
    result = minmax_pipeline(base, criterion, loader(ds), cfg, tmp_path / "mm",
                             prune_ratio=0.9, **common)
    rew = read_checkpoint(tmp_path / "mm" / "rew" / "last.pth")
    assert rew["hook"]["spec"]["name"] == "reweighted_l1"
    assert rew["weighting"]["spec"]["name"] == "minmax" and rew["weighting"]["spec"]["beta"] == 50
    assert "loss/penalty" in rew["history"]
    pruned, meta = load_pruned(result.pruned)
    assert meta["method"] == "minmax_pipeline"
    for net in (pruned, result.net):
        for name, m in prunable_layers(net).items():
            n = m.weight.numel()
            assert int(masking.mask_of(m).sum()) == max(1, n - round(0.9 * n)), name
            assert not m.weight_orig[~masking.mask_of(m)].any()
    # Resumed: every stage's output exists, nothing is retrained, the result is the same.
    stamp = (tmp_path / "mm" / "pruned.pth").stat().st_mtime_ns
    again = minmax_pipeline(base, criterion, loader(ds), cfg, tmp_path / "mm", prune_ratio=0.9,
                            **common)
    assert (tmp_path / "mm" / "pruned.pth").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(),
                                                 result.net.state_dict().values()))
    with pytest.raises(ValueError, match=r"other settings \['prune_ratio'\]"):
        minmax_pipeline(base, criterion, loader(ds), cfg, tmp_path / "mm", prune_ratio=0.99,
                        **common)


def test_minmax_pipeline_shared_scope_filter_pruning(cfg, tmp_path):
    ds = make_data(cfg, n=4)
    base = fresh(cfg).select(["seg", "sn"])
    result = minmax_pipeline(base, SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path,
                             prune_ratio=0.5, sparsity_type="filter", rew_iters=1,
                             retrain_iters=1, log=False, weighting="equal")
    shared = shared_layers(result.net)
    for name, m in prunable_layers(result.net).items():
        rows = masking.mask_of(m).flatten(1).all(dim=1)
        if name in shared:
            assert int(rows.sum()) == kept(rows.numel(), 0.5)
        else:
            assert bool(masking.mask_of(m).all())              # heads stay dense


def test_disparse_keep_tables_by_name():
    assert disparse_keep_ratio("disparse_static", "nyuv2_3", 90) == 0.08
    assert disparse_keep_ratio("disparse_static", "cityscapes", 70) == 0.3
    assert disparse_keep_ratio("disparse_pt", "taskonomy", 90) == 0.2
    assert disparse_keep_ratio("disparse_pt", "cityscapes", 30) == 0.644
    assert disparse_keep_ratio("disparse_static", "nyuv2_3", 80) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown DiSparse keep table 'cut'"):
        disparse_keep_ratio("cut", "nyuv2_3", 90)


def test_mask_agreement_by_hand():
    a = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    c = torch.tensor([1, 0, 0, 0, 0], dtype=torch.bool)
    two = mask_agreement({"seg": {"l": a}, "sn": {"l": b}}, ["l"])
    assert two["layers"]["l"] == 2 / 4 and two["overall"] == 2 / 4      # = IoU
    three = {"seg": {"l": a, "m": a}, "sn": {"l": b, "m": a}, "depth": {"l": c, "m": ~a}}
    ref = mask_agreement(three, ["l", "m"])
    # l: votes [3, 1, 1, 0, 2] -> exactly 2: 1, 1 or 2: 3;  m: votes [2, 2, 1, 1, 2] -> 3 / 5
    assert ref["layers"] == {"l": 1 / 3, "m": 3 / 5} and ref["overall"] == 4 / 8
    every = mask_agreement(three, ["l", "m"], rule="all_any")
    assert every["layers"] == {"l": 1 / 4, "m": 0.0} and every["overall"] == 1 / 9


def test_static_protocol_and_iou_at_initialisation(cfg, tmp_path):
    criterion = SceneNetLoss.from_config(cfg)
    batches = [make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=i) for i in range(2)]
    pruning = static_from_scratch(cfg, criterion, batches, selected_tasks=["seg", "sn"],
                                  keep_ratio=disparse_keep_ratio("disparse_static", "nyuv2_3", 90),
                                  num_batches=2, seed=3)
    net = pruning.net
    assert pruning.meta["protocol"] == "from_scratch" and net.tasks == ["seg", "sn"]
    initial = fresh(cfg, seed=3).select(["seg", "sn"])
    for name, m in prunable_layers(net).items():   # the kept weights are the fresh ones
        keep = masking.mask_of(m)
        assert torch.equal(m.weight_orig[keep], prunable_layers(initial)[name].weight[keep])
    ds = make_data(cfg, n=4)
    result = train_from_scratch(pruning, criterion, loader(ds), cfg, tmp_path / "run", max_iters=2,
                                log=False)
    schedule = read_checkpoint(tmp_path / "run" / "last.pth")["schedule"]
    assert schedule["lr"] == cfg.INIT_LR and schedule["decay_freq"] == cfg.DECAY_LR_FREQ
    assert result.iterations == 2
    iou = iou_at_initialisation(fresh(cfg), criterion, batches, num_batches=2, seed=0)
    assert set(iou["layers"]) == set(shared_layers(fresh(cfg)))
    assert iou["keep_ratio"] == 0.078 and 0 < iou["overall"] < 1
    assert all(math.isnan(v) or 0 <= v <= 1 for v in iou["layers"].values())
