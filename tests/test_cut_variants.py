"""CUT beyond the paper: iterative CUT, the per-layer floor and per-layer normalisation, on hand
examples and through the shared pruning pipeline (target sparsity) on the tiny network."""
import pytest
import torch

import lib.pruning.cut_variants as variants
from lib.masks import layer_weights
from lib.models import shared_layers, task_layers
from lib.pruning import METHODS, PruneContext, prune, select_tasks, sparsity_report
from lib.pruning.cut_variants import (cut_floor, cut_iterative, cut_layer_norm, floor_scores,
                                      iterative_masks, layer_normalised, top_of_layer,
                                      with_floor)

SEL = ["seg", "depth"]


@pytest.fixture(scope="module")
def setup(tiny_setup):
    return tiny_setup


@pytest.fixture
def registered():
    """The variants are reachable by name through ``prune``: one METHODS line each."""
    for name, fn in variants.VARIANTS.items():
        assert METHODS[name] is fn


def _collapsed(result):
    return [n for n, v in sparsity_report(result.net)["layers"].items() if v["sparsity"] >= 100.0]


def _layers(result):
    return sparsity_report(result.net)["layers"]


def test_layer_normalisation_divides_by_the_layer_mean():
    scores = {"seg": {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([10.0, 30.0]),
                      "dead": torch.zeros(3)}}
    out = layer_normalised(scores)["seg"]
    assert out["a"].tolist() == [0.5, 1.5] and out["b"].tolist() == [0.5, 1.5]
    assert out["dead"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="non-finite"):
        layer_normalised({"seg": {"a": torch.tensor([1.0, float("inf")])}})


def test_floor_keeps_the_best_weights_of_a_layer_below_it():
    # top 2 of 4 by score, the tie between 1.0 and 1.0 broken by |w|
    best = top_of_layer(torch.tensor([1.0, 5.0, 1.0, 0.0]), torch.tensor([0.1, 1.0, 0.9, 2.0]), 2)
    assert best.tolist() == [False, True, True, False]
    masks = {"empty": torch.zeros(4, dtype=torch.bool), "full": torch.ones(4, dtype=torch.bool)}
    scores = {"empty": torch.tensor([0.0, 2.0, 1.0, 3.0]), "full": torch.ones(4)}
    weights = {"empty": torch.tensor([1.0, 1.0, 1.0, 0.0]), "full": torch.ones(4)}
    out = with_floor(masks, scores, weights, min_density=0.5)
    # index 3 scores best but its weight is already zero: it cannot count toward the floor
    assert out["empty"].tolist() == [False, True, True, False]
    assert out["full"].all()
    assert with_floor(masks, scores, weights, min_density=0.2)["empty"].sum() == 1


def test_floor_scores_weigh_every_task_alike_on_the_backbone(setup):
    _, net, _, _ = setup
    compact = select_tasks(net, SEL, net.tasks)
    layers = {**shared_layers(compact), **task_layers(compact, "seg"),
              **task_layers(compact, "depth")}
    g = torch.Generator().manual_seed(0)
    scores = {t: {n: torch.rand(3, generator=g) for n in layers} for t in SEL}
    for t in compact.tasks:                               # a task layer is only its task's
        other = next(o for o in SEL if o != t)
        for n in task_layers(compact, t):
            del scores[other][n]
    picks = floor_scores(compact, scores)
    total = {t: sum(float(s.sum()) for s in scores[t].values()) for t in SEL}
    name = next(iter(shared_layers(compact)))
    expected = scores["seg"][name] / total["seg"] + scores["depth"][name] / total["depth"]
    assert torch.allclose(picks[name], expected)
    head = next(iter(task_layers(compact, "depth")))
    assert torch.equal(picks[head], scores["depth"][head])


def test_floor_variant_collapses_no_layer_where_cut_does(setup, registered):
    _, net, criterion, loader = setup
    kwargs = dict(selected_tasks=SEL, tasks=net.tasks, sparsity=97.0, num_batches=2)
    cut = prune("cut", net, criterion, loader, **kwargs)
    floored = prune("cut_floor", net, criterion, loader, min_density=0.02, **kwargs)
    assert _collapsed(cut), "the tiny random network should lose whole layers at 97 %"
    assert not _collapsed(floored)
    assert abs(floored.sparsity - 97.0) <= 0.5
    assert all(v["sparsity"] <= 98.0 + 100.0 / v["total"] for v in _layers(floored).values())
    assert floored.meta["min_density"] == 0.02


def test_iterative_cut_with_one_round_is_cut(setup, registered):
    _, net, criterion, loader = setup
    kwargs = dict(selected_tasks=SEL, tasks=net.tasks, sparsity=90.0, num_batches=2)
    one = prune("cut_iterative", net, criterion, loader, rounds=1, **kwargs)
    cut = prune("cut", net, criterion, loader, **kwargs)
    assert _layers(one) == _layers(cut)


def test_iterative_cut_rescores_the_masked_network_each_round(setup, registered, monkeypatch):
    _, net, criterion, loader = setup
    calls = []
    real = variants.task_scores

    def counting(scored, *args, **kwargs):
        zero = sum(int((w == 0).sum()) for w in layer_weights(scored).values())
        calls.append(zero)
        return real(scored, *args, **kwargs)

    monkeypatch.setattr(variants, "task_scores", counting)
    pruned = prune("cut_iterative", net, criterion, loader, selected_tasks=SEL, tasks=net.tasks,
                   sparsity=90.0, num_batches=2, rounds=3)
    assert abs(pruned.sparsity - 90.0) <= 0.5
    assert len(calls) == 3                               # one scoring per round
    assert calls[0] == 0 and 0 < calls[1] < calls[2]     # each on the sparser masked network
    assert pruned.meta["rounds"] == 3


def test_iterative_rounds_are_nested(setup):
    _, net, criterion, loader = setup
    compact = select_tasks(net, SEL, net.tasks)
    ctx = PruneContext(criterion, loader, 2, 0, None)
    final = iterative_masks(compact, ctx, 0.1, rounds=2, min_votes=2)
    first = iterative_masks(compact, ctx, 0.1 ** 0.5, rounds=1, min_votes=2)
    assert all(bool((final[n] <= first[n]).all()) for n in final)
    kept = sum(int((final[n] & (layer_weights(compact)[n] != 0)).sum()) for n in final)
    total = sum(m.numel() for m in final.values())
    assert abs(100 * (1 - kept / total) - 90.0) <= 0.5


def test_union_keeps_a_shared_weight_any_task_keeps(setup, registered):
    _, net, criterion, loader = setup
    kwargs = dict(selected_tasks=SEL, tasks=net.tasks, keep_ratio=0.2, num_batches=2)
    union, cut = (prune(m, net, criterion, loader, **kwargs) for m in ("cut_union", "cut"))
    assert union.meta["min_votes"] == "any"
    shared = shared_layers(union.net)
    masks, cut_masks = union.masks, cut.masks
    for name in shared:
        either = union.task_masks["seg"][name] | union.task_masks["depth"][name]
        both = cut.task_masks["seg"][name] & cut.task_masks["depth"][name]
        assert torch.equal(masks[name].cpu(), either) and torch.equal(cut_masks[name].cpu(), both)


def test_layer_norm_variant_reaches_the_target_and_differs_from_cut(setup, registered):
    _, net, criterion, loader = setup
    kwargs = dict(selected_tasks=SEL, tasks=net.tasks, sparsity=90.0, num_batches=2)
    normed = prune("cut_layer_norm", net, criterion, loader, **kwargs)
    cut = prune("cut", net, criterion, loader, **kwargs)
    assert abs(normed.sparsity - 90.0) <= 0.5
    assert _layers(normed) != _layers(cut)
    assert normed.meta["normalise"] == "layer"


def test_variant_options_are_checked(setup):
    _, net, criterion, loader = setup
    compact = select_tasks(net, SEL, net.tasks)
    ctx = PruneContext(criterion, loader, 2, 0, None)
    with pytest.raises(ValueError, match="rounds"):
        cut_iterative(compact, ctx, rounds=0)
    with pytest.raises(ValueError, match="min_density"):
        cut_floor(compact, ctx, min_density=1.5)
    with pytest.raises(ValueError, match="num_batches"):
        cut_layer_norm(compact, PruneContext(criterion, loader, None, 0, None))
