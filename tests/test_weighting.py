"""lib.training.weighting: every weighting against a hand computation on a fixed loss sequence,
the simplex projection's edge cases, and the weightings inside the training loop (learnable
weights optimised, exact resume, changed settings refused)."""
import math

import pytest
import torch

from lib.losses import SceneNetLoss
from lib.training import read_checkpoint, train
from lib.training.weighting import WEIGHTINGS, make_weighting, project_simplex
from test_training import FailingLoss, loader, make_data, make_net, state_equal


def nested_equal(a, b):
    """Bit-for-bit equality of nested dicts / lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(nested_equal(a[k], b[k])
                                                                     for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(nested_equal, a, b))
    return a == b


def t(x):
    return torch.tensor(float(x), dtype=torch.float64)


def losses(values, tasks=("seg", "sn", "depth")):
    return {task: t(v) for task, v in zip(tasks, values)}


# ----------------------------------------------------------------------------- the projection
@pytest.mark.parametrize("v, expected", [
    ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),          # already on the simplex: unchanged
    ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),    # equal entries: the centre
    ([3.0, 1.0], [1.0, 0.0]),                    # far outside: a vertex
    ([0.5, 0.5, -10.0], [0.5, 0.5, 0.0]),        # a negative entry is clipped to zero
    ([-1.0, -1.0], [0.5, 0.5]),                  # all negative: shifted up
    ([2.0, 2.0, 0.0], [0.5, 0.5, 0.0]),          # ties at the top share the mass
    ([5.0], [1.0]),                              # one task: weight 1
])
def test_project_simplex_edge_cases(v, expected):
    w = project_simplex(torch.tensor(v, dtype=torch.float64))
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_project_simplex_is_the_euclidean_projection():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(5, generator=g, dtype=torch.float64) * 3
        w = project_simplex(v)
        assert abs(float(w.sum()) - 1) < 1e-12 and bool((w >= 0).all())
        # Optimality (KKT): w = v - theta on the support, v <= theta off it.
        theta = (v - w)[w > 0]
        assert torch.allclose(theta, theta[0].expand_as(theta), atol=1e-12)
        assert bool((v[w == 0] <= theta[0] + 1e-12).all())


def test_project_simplex_refuses_bad_input():
    with pytest.raises(FloatingPointError, match="non-finite"):
        project_simplex(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="non-empty vector"):
        project_simplex(torch.zeros(0))
    # Finite but beyond float64's resolution of the projection: one line, not a torch error.
    with pytest.raises(FloatingPointError, match="too large for float64"):
        project_simplex(torch.tensor([1e300, 1e300, 1e300], dtype=torch.float64))


# ----------------------------------------------------------------------------- hand computations
def test_fixed_and_equal():
    fixed = make_weighting(None, ["seg", "sn", "depth"], [1, 20, 3])
    assert fixed.name == "fixed" and not fixed.adaptive
    assert float(fixed.total(losses([1.0, 0.5, 2.0]))) == 1.0 + 20 * 0.5 + 3 * 2.0
    equal = make_weighting("equal", ["seg", "sn", "depth"], [1, 20, 3])
    assert float(equal.total(losses([1.0, 0.5, 2.0]))) == 3.5
    scaled = make_weighting({"name": "equal", "scale_by_lambdas": True}, ["seg", "sn"], [1, 20])
    assert float(scaled.total(losses([1.0, 0.5], ("seg", "sn")))) == 11.0


def test_uncertainty_value_and_gradient():
    w = make_weighting("uncertainty", ["seg", "sn"], [1, 20])
    assert w.log_var.tolist() == pytest.approx([-0.7, -0.7])
    total = w.total({"seg": torch.tensor(1.0), "sn": torch.tensor(2.0)})
    e = math.exp(-0.7)
    expected = 1 / (2 * e) - 0.35 + 2 / (2 * e) - 0.35
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert w.log_var.grad.tolist() == pytest.approx([-1 / (2 * e) + 0.5, -2 / (2 * e) + 0.5],
                                                    rel=1e-6)
    assert make_weighting({"name": "uncertainty", "init": -0.5}, ["a"]).log_var.tolist() == [-0.5]


def test_dwa_follows_epoch_averages():
    w = make_weighting({"name": "dwa", "epoch_iters": 2}, ["seg", "sn"])
    sequence = [[2, 4], [4, 4],      # epoch 0: means [3, 4]
                [3, 2], [3, 2],      # epoch 1: means [3, 2]
                [1, 1]]              # epoch 2
    seen = []
    for i, values in enumerate(sequence):
        seen.append(w.weights())
        w.observe(dict(zip(["seg", "sn"], values)), i)
    assert seen[:4] == [{"seg": 1.0, "sn": 1.0}] * 4     # lambda = 1 in the first two epochs
    a, b = math.exp((3 / 3) / 2), math.exp((2 / 4) / 2)  # w = Lbar(1) / Lbar(0), T = 2
    assert seen[4]["seg"] == pytest.approx(2 * a / (a + b), rel=1e-12)
    assert seen[4]["sn"] == pytest.approx(2 * b / (a + b), rel=1e-12)
    total = w.total(losses([1.0, 3.0], ("seg", "sn")))
    assert float(total) == pytest.approx(2 * a / (a + b) + 3 * 2 * b / (a + b), rel=1e-12)


def test_minmax_ascent_and_projection_once_per_epoch():
    w = make_weighting({"name": "minmax", "epoch_iters": 2}, ["seg", "sn", "depth"])
    assert w.options == {"beta": 10.0, "gamma": 5.0}
    assert float(w.total(losses([1, 2, 3]))) == pytest.approx(2.0)   # w = 1/3 each
    # Iteration 0 (first of epoch 0): w + (L - 5 (w - 1/3)) / 10 = 1/3 + L/10, sum 1.6 -> -0.2.
    w.observe(dict(zip(w.tasks, [1, 2, 3])), 0)
    assert w.w.tolist() == pytest.approx([7 / 30, 10 / 30, 13 / 30], abs=1e-12)
    w.observe(dict(zip(w.tasks, [9, 9, 9])), 1)                      # not an epoch start
    assert w.w.tolist() == pytest.approx([7 / 30, 10 / 30, 13 / 30], abs=1e-12)
    # Iteration 2: step = [1.0, 0.5, 3.5], w + step/10 sums to 1.5 -> shift by -1/6.
    w.observe(dict(zip(w.tasks, [0.5, 0.5, 4.0])), 2)
    assert w.w.tolist() == pytest.approx([1 / 6, 13 / 60, 37 / 60], abs=1e-12)
    # Iteration 4: one loss dominates, the projection lands on a vertex.
    w.observe(dict(zip(w.tasks, [0, 0, 30])), 4)
    assert w.w.tolist() == [0.0, 0.0, 1.0]
    assert float(w.total(losses([5, 5, 2]))) == 2.0
    beta50 = make_weighting({"name": "minmax", "beta": 50, "epoch_iters": 1}, ["a", "b"])
    beta50.observe({"a": 1.0, "b": 0.0}, 0)
    assert beta50.w.tolist() == pytest.approx([0.51, 0.49], abs=1e-12)   # 1/2 +- (1/2)/50


def test_state_round_trips_exactly():
    for name in ("dwa", "minmax", "uncertainty"):
        a = make_weighting({"name": name, "epoch_iters": 2}, ["seg", "sn"])
        for i, v in enumerate([[1.0, 2.0], [0.3, 0.7], [2.5, 0.1]]):
            a.observe({"seg": v[0], "sn": v[1]}, i)
        b = make_weighting({"name": name, "epoch_iters": 2}, ["seg", "sn"])
        b.load_state_dict(a.state_dict())
        assert b.weights() == a.weights() and b.spec() == a.spec()


def test_bad_weighting_input_is_one_line():
    with pytest.raises(ValueError, match=r"unknown weighting 'dwaa'; expected one of \["):
        make_weighting("dwaa", ["seg"])
    with pytest.raises(ValueError, match=r"weighting 'minmax' has no option\(s\) \['betta'\]"):
        make_weighting({"name": "minmax", "betta": 3}, ["seg"])
    with pytest.raises(ValueError, match="beta must be > 0"):
        make_weighting({"name": "minmax", "beta": 0}, ["seg"])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_weighting({"name": "dwa", "temperature": -1}, ["seg"])
    with pytest.raises(ValueError, match="epoch_iters must be a positive integer"):
        make_weighting({"name": "dwa", "epoch_iters": 0}, ["seg"])
    with pytest.raises(ValueError, match="is for tasks"):
        make_weighting(make_weighting("equal", ["seg"]), ["seg", "sn"])
    assert sorted(WEIGHTINGS) == ["dwa", "equal", "fixed", "minmax", "uncertainty"]


# ----------------------------------------------------------------------------- in the loop
@pytest.mark.parametrize("name", ["uncertainty", "dwa", "minmax"])
def test_weighted_run_resumes_exactly(cfg, tmp_path, name):
    ds = make_data(cfg, n=5)   # 3 batches per epoch: one epoch = 3 iterations by default
    common = dict(max_iters=7, seed=1, log=False,
                  weighting={"name": name, **({"epoch_iters": 2} if name != "uncertainty"
                                              else {})})
    full = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "a",
                 **common)
    with pytest.raises(KeyboardInterrupt):   # dies during iteration 6; last.pth is at 4
        train(make_net(cfg), FailingLoss(cfg, at=6, mode="interrupt"), loader(ds), cfg,
              tmp_path / "b", **common)
    with pytest.raises(ValueError, match="task weighting"):
        train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "b",
              resume=True, **{**common, "weighting": "fixed"})
    resumed = train(make_net(cfg, seed=5), SceneNetLoss.from_config(cfg), loader(ds), cfg,
                    tmp_path / "b", resume=True, **common)
    assert state_equal(full.net.state_dict(), resumed.net.state_dict())
    a, b = (read_checkpoint(p / "last.pth") for p in (tmp_path / "a", tmp_path / "b"))
    assert a["weighting"]["spec"] == b["weighting"]["spec"]
    assert a["weighting"]["spec"]["name"] == name
    assert nested_equal(a["weighting"], b["weighting"])
    assert nested_equal(a["optimizer"], b["optimizer"])
    weights = {k: v for k, v in full.history.items() if k.startswith("weight/")}
    assert set(weights) == {f"weight/{t}" for t in cfg.TASKS}
    assert weights == {k: resumed.history[k] for k in weights}
    if name == "uncertainty":   # the learnable s_t joined the optimiser and moved
        assert len(a["optimizer"]["param_groups"]) == 2
        assert not torch.equal(a["weighting"]["state"]["log_var"], torch.full((3,), -0.7))
    if name == "minmax":        # updated at iterations 0, 2, 4, 6
        assert len({tuple(v for _, v in weights[f"weight/{t}"]) for t in cfg.TASKS}) > 1


@pytest.fixture
def cfg():
    from lib.config import load_config
    return load_config("nyuv2_3task", profile="tiny")


def test_cli_refuses_bad_weighting_before_writing(tmp_path, capsys):
    from lib.cli import main

    common = ["train", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
              str(tmp_path / "no_data"), "--out", str(tmp_path / "run"), "--quiet"]
    assert main([*common, "--weighting", "dwaa"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown weighting 'dwaa'; expected one of" in err
    assert main([*common, "--weighting", "minmax", "--weighting-option", "beta=-1"]) == 2
    assert "beta must be > 0" in capsys.readouterr().err
    # issue 23: beta=1e-300 failed mid-run with a torch reduction error
    assert main([*common, "--weighting", "minmax", "--weighting-option", "beta=1e-300"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weighting 'minmax': beta=1e-300 is below 1e-06") and \
        err.count("\n") == 1
    assert not (tmp_path / "run").exists()
