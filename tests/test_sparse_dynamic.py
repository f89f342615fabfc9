"""lib.sparse: ERK densities, every drop/grow step of disparse_dynamic, rigl and minmax_dst
against its schedule, exact resume of a dynamic run, and the bad-input errors."""
import copy
import math

import pytest
import torch

from conftest import make_random_batch
from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet, layer_owner, prunable_layers
from lib.pruning import load_pruned
from lib.sparse import masking
from lib.sparse.dynamic import DisparseDynamic, RigL, drop_fraction
from lib.sparse.erk import erk_densities, keep_counts
from lib.sparse.minmax_dst import MinmaxDST
from lib.sparse.registry import make_sparse
from lib.training import read_checkpoint, train
from lib.training.hooks import RunContext
from lib.training.weighting import make_weighting
from test_training import FailingLoss, loader, make_data, state_equal
from test_weighting import nested_equal


@pytest.fixture
def cfg():
    return load_config("nyuv2_3task", profile="tiny")


def fresh(cfg, seed=0):
    torch.manual_seed(seed)
    return SceneNet.from_config(cfg)


def context(cfg, criterion=None, seed=0, max_iters=100, epoch_iters=3):
    criterion = criterion or SceneNetLoss.from_config(cfg)
    return RunContext(criterion, make_weighting(None, criterion.tasks, criterion.lambdas),
                      torch.device("cpu"), seed, max_iters, epoch_iters, None)


def shapes_of(net):
    return {n: tuple(m.weight.shape) for n, m in prunable_layers(net).items()}


def assert_pruned_are_zero(net, stored_zero):
    for name, m in prunable_layers(net).items():
        dead = ~masking.mask_of(m)
        assert not (m.weight_orig * m.weight_mask)[dead].any(), name   # effective weight
        assert not m.weight[dead].any(), name
        if stored_zero:
            assert not m.weight_orig[dead].any(), name


# ----------------------------------------------------------------------------- ERK
@pytest.mark.parametrize("sparsity", [50, 80, 90, 99])
def test_erk_hits_the_target_with_every_layer_at_most_dense(cfg, sparsity):
    shapes = shapes_of(fresh(cfg))
    total = sum(math.prod(s) for s in shapes.values())
    density = 1 - sparsity / 100
    first = next(iter(shapes))
    densities = erk_densities(shapes, density, power_scale=0.9, dense=[first])
    assert densities[first] == 1.0
    assert all(0 < d <= 1 for d in densities.values())
    solved = sum(densities[n] * math.prod(s) for n, s in shapes.items()) / total
    assert abs(solved - density) * 100 < 0.1
    counts = keep_counts(shapes, densities, density)
    assert all(1 <= counts[n] <= math.prod(s) for n, s in shapes.items())
    assert abs(sum(counts.values()) / total - density) * 100 < 0.1


def test_erk_re_solves_layers_that_would_exceed_one():
    shapes = {"small": (4, 3, 1, 1), "mid": (16, 16, 3, 3), "big": (256, 256, 3, 3)}
    d = erk_densities(shapes, 0.5)
    assert d["small"] == 1.0 and d["mid"] == 1.0        # raw probabilities above 1: dense
    kept = sum(d[n] * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(0.5 * sum(math.prod(s) for s in shapes.values()))
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    assert d["big"] == pytest.approx(raw["big"] * (kept - 12 - 2304) / (raw["big"] * 589824))


def test_erk_refuses_an_unreachable_sparsity(cfg):
    shapes = {"first": (64, 3, 7, 7), "rest": (10, 10, 1, 1)}
    with pytest.raises(ValueError, match=r"cannot reach 99% sparsity with ERK: the dense "
                                         r"layer\(s\) \['first'\] alone hold"):
        erk_densities(shapes, 0.01, dense=["first"])
    with pytest.raises(ValueError, match="cannot reach"):
        DisparseDynamic(99.99, interval=1, end=2).setup(fresh(cfg), context(cfg))


# ----------------------------------------------------------------------------- drop / grow
def expected_union(net, batch, criterion, names, dead, grow, chunks=2):
    """Independently: per task, |dL_t/dw| at the stored weights (masks set to one) summed
    over the batch's pieces, top positions among the dead ones, union over tasks."""
    probe = copy.deepcopy(net)
    for m in prunable_layers(probe).values():
        m.weight_mask.fill_(1)
    owner = layer_owner(net)
    sums = {t: {n: 0 for n in names} for t in net.tasks}
    size = batch["img"].shape[0]
    for i in range(chunks):
        piece = {k: v[i * size // chunks:(i + 1) * size // chunks] for k, v in batch.items()}
        for t in net.tasks:
            probe.zero_grad()
            criterion.task_loss(probe(piece["img"]), piece, t).backward()
            for n in names:
                grad = prunable_layers(probe)[n].weight_orig.grad
                if grad is not None:   # another task's head
                    sums[t][n] = sums[t][n] + grad.abs()
    out = {}
    for n in names:
        chosen = torch.zeros_like(dead[n])
        for t in (net.tasks if owner[n] is None else [owner[n]]):
            chosen |= masking.top_k(sums[t][n], dead[n], grow[n])
        out[n] = chosen
    return out


def test_disparse_dynamic_steps_follow_the_schedule(cfg):
    net = fresh(cfg).eval()   # no dropout: the independent gradient check sees the same net
    criterion = SceneNetLoss.from_config(cfg)
    hook = DisparseDynamic(90, interval=2, end=6)
    hook.setup(net, context(cfg, criterion))
    layers = prunable_layers(net)
    k = hook.counts
    first = next(iter(layers))
    assert masking.counts(layers) == k and k[first] == layers[first].weight.numel()
    assert abs(sum(k.values()) / sum(m.weight.numel() for m in layers.values()) - 0.1) < 1e-3
    owner = layer_owner(net)
    shared = [n for n in layers if owner[n] is None and k[n] < layers[n].weight.numel()]
    tasks = len(net.tasks)
    for step, t in enumerate((0, 4)):
        batch = make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=step)
        before = {n: m.weight_orig.detach().clone() for n, m in layers.items()}
        grow = hook.drop(net, t)
        rate = 0.5 * (1 + math.cos(math.pi * t / 6)) / 2
        assert drop_fraction(0.5, t, 6) == pytest.approx(rate)
        for n, m in hook.sparse_layers(net).items():
            assert masking.counts({n: m})[n] == round(k[n] * (1 - rate)), n
            assert grow[n] == k[n] - round(k[n] * (1 - rate))
        assert_pruned_are_zero(net, stored_zero=False)
        for n, m in layers.items():   # dropped weights keep their stored values
            assert torch.equal(m.weight_orig, before[n])
        dead = {n: ~masking.mask_of(layers[n]) for n in grow}
        alive = {n: masking.mask_of(layers[n]) for n in grow}
        want = expected_union(net, batch, criterion, [n for n in grow if grow[n]], dead, grow)
        hook.grow(net, batch, grow)
        for n, m in hook.sparse_layers(net).items():
            now = masking.mask_of(m)
            assert torch.equal(now & alive[n], alive[n])        # only growth
            if grow[n]:
                assert torch.equal(now & ~alive[n], want[n]), n
            c = int(now.sum())
            if owner[n] is None:
                assert k[n] <= c <= k[n] + (tasks - 1) * grow[n], n
            else:
                assert c == k[n], n
        if step == 0:
            assert any(int(masking.mask_of(layers[n]).sum()) > k[n] for n in shared)
        assert_pruned_are_zero(net, stored_zero=False)
    hook.finalise(net)
    assert masking.counts(layers) == k
    assert_pruned_are_zero(net, stored_zero=True)


def test_disparse_dynamic_reference_first_layer(cfg):
    net = fresh(cfg)
    hook = DisparseDynamic(90, interval=2, end=6, first_layer="reference")
    hook.setup(net, context(cfg))
    layers = prunable_layers(net)
    first = next(iter(layers))
    assert hook.counts[first] < layers[first].weight.numel()          # ERK-solved
    assert int(masking.mask_of(layers[first]).sum()) == layers[first].weight.numel()
    hook.drop(net, 0)                                                  # cut by the first drop
    assert int(masking.mask_of(layers[first]).sum()) == round(hook.counts[first] * 0.5)


@pytest.mark.parametrize("distribution", ["erk", "global"])
def test_rigl_steps_keep_counts_and_zero_weights(cfg, distribution):
    net = fresh(cfg).train()
    hook = RigL(90, interval=2, end=6, distribution=distribution)
    hook.setup(net, context(cfg))
    layers = prunable_layers(net)
    k = dict(hook.counts)
    assert_pruned_are_zero(net, stored_zero=True)
    for step, t in enumerate((0, 2, 4)):
        rate = 0.3 * (1 + math.cos(math.pi * t / 6)) / 2
        total = sum(masking.counts(layers).values())
        grow = hook.drop(net, t)
        after = masking.counts(layers)
        if distribution == "erk":
            for n in hook.sparse_layers(net):
                assert after[n] == k[n] - round(rate * k[n]) and grow[n] == round(rate * k[n])
        else:
            assert sum(after.values()) == total - round(rate * (total - sum(
                layers[n].weight.numel() for n in layers if n not in hook.sparse_layers(net))))
        dead_before = {n: ~masking.mask_of(m) for n, m in layers.items()}
        hook.grow(net, make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=step), grow)
        if distribution == "erk":
            assert masking.counts(layers) == k
        assert sum(masking.counts(layers).values()) == sum(k.values())
        for n, m in layers.items():   # grown weights start at zero
            assert not m.weight_orig[dead_before[n] & masking.mask_of(m)].any()
        assert_pruned_are_zero(net, stored_zero=True)


def test_minmax_dst_prunes_grows_and_ends_at_its_ratio(cfg):
    net = fresh(cfg).train()
    hook = MinmaxDST(0.9, grow_ratio=0.01, every_epochs=1, stop_epoch=2)
    hook.setup(net, context(cfg, max_iters=9, epoch_iters=3))   # updates at epochs 1 and 2
    layers = prunable_layers(net)
    want = {n: m.weight.numel() - round(0.9 * m.weight.numel()) for n, m in layers.items()}
    assert masking.counts(layers) == want and hook.last_epoch == 2
    for n, m in layers.items():   # magnitude prune of the fresh weights
        kept_min = m.weight_orig[masking.mask_of(m)].abs().min()
        dead_max = m.weight_orig.detach().clone()
        assert not dead_max[~masking.mask_of(m)].any()
        assert kept_min > 0
    hook.before_forward(net, make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS), 3)  # epoch 1
    grown = masking.counts(layers)
    for n, m in layers.items():
        extra = min(math.ceil(0.01 * m.weight.numel()), m.weight.numel() - want[n])
        assert grown[n] == want[n] + extra, n
    assert_pruned_are_zero(net, stored_zero=True)
    hook.before_forward(net, make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS), 6)  # last
    assert masking.counts(layers) == want and hook.updates == 2
    with pytest.raises(ValueError, match=r"grow_ratio must be in \(0, 1\), got 1.5"):
        MinmaxDST(0.9, grow_ratio=1.5)
    with pytest.raises(ValueError, match=r"grow_ratio must be in \(0, 1\), got 0.0"):
        make_sparse("minmax_dst", 90, cfg, grow_ratio=0)


# ----------------------------------------------------------------------------- in the loop
@pytest.mark.parametrize("method, options", [
    ("disparse_dynamic", {"interval": 2, "end": 5}),   # updates at 0, 2 and 4, final drop at 5
    ("rigl", {"interval": 2, "end": 5}),
    ("minmax_dst", {"every_epochs": 1, "stop_epoch": 2, "epoch_iters": 2, "grow_ratio": 0.02}),
])
def test_interrupted_dynamic_run_resumes_exactly(cfg, tmp_path, method, options):
    ds = make_data(cfg, n=5)
    sparsity = 90

    def run(run_dir, criterion, resume=False, seed_net=0):
        return train(fresh(cfg, seed_net), criterion, loader(ds), cfg, run_dir, max_iters=6,
                     seed=2, log=False, resume=resume,
                     hook=make_sparse(method, sparsity, cfg, **options))

    full = run(tmp_path / "a", SceneNetLoss.from_config(cfg))
    with pytest.raises(KeyboardInterrupt):   # dies in iteration 4, after last.pth at 2
        run(tmp_path / "b", FailingLoss(cfg, at=4, mode="interrupt"))
    resumed = run(tmp_path / "b", SceneNetLoss.from_config(cfg), resume=True, seed_net=7)
    assert state_equal(full.net.state_dict(), resumed.net.state_dict())  # weights and masks
    a, b = (read_checkpoint(p / "last.pth") for p in (tmp_path / "a", tmp_path / "b"))
    assert nested_equal(a["optimizer"], b["optimizer"])
    assert nested_equal(a["hook"], b["hook"]) and a["hook"]["spec"]["name"] == method
    # The final model is a pruned checkpoint with its masks; pruned weights exactly zero.
    net, meta = load_pruned(full.final_model)
    assert meta["training"]["name"] == method
    assert state_equal(net.state_dict(), full.net.state_dict())
    assert_pruned_are_zero(net, stored_zero=True)
    if method != "minmax_dst":
        layers = prunable_layers(net)
        total = sum(m.weight.numel() for m in layers.values())
        assert abs(sum(masking.counts(layers).values()) / total - 0.1) * 100 < 0.1
    with pytest.raises(ValueError, match="training hook"):
        train(fresh(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "b",
              max_iters=6, seed=2, log=False, resume=True)


def test_bad_sparse_input_fails_before_writing(cfg, tmp_path):
    ds = make_data(cfg, n=4)
    with pytest.raises(ValueError, match="end=15000 exceeds max_iters=7"):
        train(fresh(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "run",
              max_iters=7, log=False, hook=make_sparse("disparse_dynamic", 90, cfg))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown sparse training method 'rigll'"):
        make_sparse("rigll", 90, cfg)
    with pytest.raises(ValueError, match=r"has no option\(s\) \['intervall'\]"):
        make_sparse("rigl", 90, cfg, intervall=3)
    with pytest.raises(ValueError, match=r"sparsity must be a percentage in \[0, 100\)"):
        make_sparse("disparse_dynamic", 100, cfg)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        make_sparse("disparse_dynamic", 90, cfg, interval=0).check(fresh(cfg), 100)
    with pytest.raises(ValueError, match="cannot reach 99.99% sparsity with ERK"):
        train(fresh(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "run",
              max_iters=7, log=False, hook=make_sparse("rigl", 99.99, cfg, end=3))
    assert not (tmp_path / "run").exists()
