"""Baselines through the shared registry: sparsity targets, seeds, iterative LTH, DiSparse."""
import pytest
import torch

from lib.models import backbone_modules, prunable_modules, task_model_modules
from lib.pruning import (METHODS, STRUCTURED_METHODS, PruneContext, effective_weight, magnitude_scores, masks_of,
                         per_round_runs, prune,
                         select_tasks, sparsity_report, task_masks, task_scores)
from lib.pruning.methods import fresh_like

SELECTED = ["seg", "depth"]


@pytest.fixture(scope="module")
def setup(tiny_setup):
    return tiny_setup


def run(method, setup, **kwargs):
    _, net, criterion, loader = setup
    if "keep_ratio" not in kwargs:
        kwargs.setdefault("sparsity", 90)
    return prune(method, net, criterion, loader, selected_tasks=SELECTED, num_batches=2, **kwargs)


def same_masks(a, b):
    ma, mb = masks_of(a.net), masks_of(b.net)
    return ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(STRUCTURED_METHODS)))
def test_every_method_hits_the_requested_deployed_sparsity(setup, method):
    result = run(method, setup)
    pruned = result.net
    assert pruned.tasks == SELECTED and pruned.task_ids == [1, 3]
    report = sparsity_report(pruned)
    assert abs(report["deployed"]["sparsity"] - 90) <= 0.5
    assert set(masks_of(pruned)) == set(prunable_modules(pruned))
    assert result.meta["method"] == method and result.meta["target_sparsity"] == 90


@pytest.mark.parametrize("method", ["random", "random_untrained", "snip_untrained",
                                    "disparse_static"])
def test_same_seed_same_masks(setup, method):
    a, b = run(method, setup, seed=3), run(method, setup, seed=3)
    assert same_masks(a, b)
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    if method.startswith("random"):
        assert not same_masks(a, run(method, setup, seed=4))


def test_cut_train_mode_is_seeded(setup):
    a, b = run("cut", setup, mode="train", seed=1), run("cut", setup, mode="train", seed=1)
    assert same_masks(a, b)


def test_untrained_variants_reinitialise_pretrained_variants_keep_weights(setup):
    _, net, _, _ = setup
    for method in ("random", "snip", "lth"):
        pruned = run(method, setup).net
        for name, module in prunable_modules(pruned).items():
            assert torch.equal(module.weight_orig, prunable_modules(net)[name].weight)
    untrained = run("random_untrained", setup, seed=5).net
    fresh = fresh_like(select_tasks(net, SELECTED), 5)
    for name, module in prunable_modules(untrained).items():
        assert torch.equal(module.weight_orig, prunable_modules(fresh)[name].weight)
        assert not torch.equal(module.weight_orig, prunable_modules(net)[name].weight)


def test_global_methods_rank_the_whole_compact_network(setup):
    pruned = run("lth", setup, keep_ratio=0.25).net
    weights = torch.cat([m.weight_orig.abs().flatten() for m in prunable_modules(pruned).values()])
    kept = torch.cat([m.weight_mask.bool().flatten() for m in prunable_modules(pruned).values()])
    assert int(kept.sum()) == int(weights.numel() * 0.25)
    assert weights[kept].min() >= weights[~kept].max()


def test_disparse_scores_and_union(setup):
    cfg, net, criterion, loader = setup
    compact = select_tasks(net, SELECTED)
    ctx = PruneContext(criterion, loader, 2, 0, None)
    plan = METHODS["disparse_pt"](compact, ctx, score="gradient")
    cut = task_scores(compact, criterion, loader, SELECTED, 2, progress=False)
    mags = magnitude_scores(compact)
    expected = task_masks({t: {n: s * mags[n] for n, s in ts.items()} for t, ts in cut.items()}, 0.1)
    got = plan.task_masks_for(0.1)
    assert all(torch.equal(got[t][n], expected[t][n]) for t in expected for n in expected[t])
    fused = plan.masks_for(0.1)
    for n in backbone_modules(compact):
        assert torch.equal(fused[n], got["seg"][n] | got["depth"][n])
    magnitude = METHODS["disparse_pt"](compact, ctx)  # NYU: per-task |w|, no data needed
    per_task = magnitude.task_masks_for(0.2)
    assert magnitude.info["score"] == "magnitude"
    expected = task_masks({t: {n: mags[n] for n in task_model_modules(compact, tid)}
                           for t, tid in zip(SELECTED, compact.task_ids)}, 0.2)
    assert all(torch.equal(per_task[t][n], expected[t][n]) for t in expected for n in expected[t])


def test_iterative_lth_rewinds_and_holds_masks(setup):
    cfg, net, criterion, loader = setup
    calls = []
    original = {n: m.weight.detach().clone() for n, m in prunable_modules(net).items()}

    def train_fn(model):
        loss_fn = criterion.restricted_to(model.tasks)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.train()
        for batch in loader[:1]:
            opt.zero_grad()
            loss_fn(dict(zip(model.tasks, model(batch["img"]))), batch).backward()
            opt.step()
        model.eval()
        for module in prunable_modules(model).values():  # pruned weights stay exactly zero
            assert not effective_weight(module)[~module.weight_mask.bool()].any()
        calls.append(sparsity_report(model)["deployed"]["sparsity"])

    pruned = run("lth", setup, iterative=True, rounds=3, train_fn=train_fn).net
    assert len(calls) == 3 and calls[0] < 1 and 50 < calls[2] < 90
    assert sparsity_report(pruned)["deployed"]["sparsity"] == pytest.approx(90, abs=0.01)
    for name, module in prunable_modules(pruned).items():  # surviving weights rewound
        assert torch.equal(module.weight_orig, original[name])
    with pytest.raises(ValueError, match="train_fn"):
        run("lth", setup, iterative=True)


def test_registry_errors(setup):
    _, net, criterion, loader = setup
    with pytest.raises(ValueError, match="unknown pruning method 'magic'"):
        run("magic", setup)
    with pytest.raises(ValueError, match="exactly one"):
        run("cut", setup, keep_ratio=0.1, sparsity=90)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        run("random", setup, keep_ratio=0.0)
    with pytest.raises(ValueError, match="num_batches"):
        prune("cut", net, criterion, loader, selected_tasks=SELECTED, sparsity=90)
    with pytest.raises(ValueError, match="no loss for task"):
        prune("snip", net, criterion.restricted_to(["sn"]), loader, selected_tasks=SELECTED,
              sparsity=90, num_batches=1)


def test_iterative_lth_with_lib_training_finetune(setup, tmp_path):
    from lib.training import finetune
    cfg, net, criterion, loader = setup
    samples = [{k: v[i] for k, v in batch.items()} for batch in loader for i in range(2)]
    data = torch.utils.data.DataLoader(samples, batch_size=2, shuffle=True)
    train_fn = per_round_runs(finetune, tmp_path, criterion=criterion, train_loader=data, cfg=cfg,
                              log=False)
    pruned = run("lth", setup, sparsity=80, iterative=True, rounds=2, train_fn=train_fn).net
    assert sparsity_report(pruned)["deployed"]["sparsity"] == pytest.approx(80, abs=0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round1", "round2"]
