"""The reference behaviours the README's departures table says are kept (issue 23 item 11):
the min-max normal loss's sum rule, DiSparse's grow count and its last-update IndexError."""
import pytest
import torch

from conftest import make_random_batch
from lib.config import load_config
from lib.losses import SceneNetLoss, losses_from_config
from lib.metrics import metrics_from_config
from lib.sparse import masking
from lib.sparse.dynamic import GROW_ALL, DisparseDynamic, reference_grow_count
from test_sparse_dynamic import cfg, context, fresh  # noqa: F401 (cfg: a fixture)


def normal_batch():
    """Unit normals, one of them (0.7071, -0.7071, 0) (valid, components sum to 0), and one
    (0, 0, 0) marker."""
    g = torch.nn.functional.normalize(torch.rand(1, 3, 2, 2) + 0.1, dim=1)
    g[0, :, 0, 0] = torch.tensor([0.7071, -0.7071, 0.0])
    g[0, :, 1, 1] = 0
    p = torch.nn.functional.normalize(torch.randn(1, 3, 2, 2), dim=1)
    return p, {"normal": g}


@pytest.mark.parametrize("config,formula", [
    ("nyuv2_mtan", lambda p, g, m: 1 - (p * g * m).sum() / m.sum()),           # model_fit
    ("nyuv2_deeplab", lambda p, g, m: ((p - g).abs() * m).sum() / m.sum())])  # compute_loss
def test_normal_loss_sum_rule_is_the_references(config, formula):
    p, batch = normal_batch()
    g = batch["normal"]
    ref_mask = (g.sum(dim=1, keepdim=True) != 0).float()      # the original's binary mask
    ours_mask = (g != 0).any(dim=1, keepdim=True).float()
    reference = losses_from_config(load_config(config, NORMAL_MASK="sum"))
    default = losses_from_config(load_config(config))
    assert float(reference.task_loss([None, None, p], batch, "normal")) == pytest.approx(
        float(formula(p, g, ref_mask)), rel=1e-6)
    assert float(default.task_loss([None, None, p], batch, "normal")) == pytest.approx(
        float(formula(p, g, ours_mask)), rel=1e-6)
    assert metrics_from_config(load_config(config, NORMAL_MASK="sum")).normal_mask == "sum"
    with pytest.raises(ValueError, match="config NORMAL_MASK 'all' is not one of"):
        losses_from_config(load_config(config, NORMAL_MASK="all"))


def test_reference_grow_count_by_hand():
    # 1000 weights, ERK density 0.0995 (99.5 weights), 90 alive after the drop:
    # sparsity 0.91 (float32), grow_ratio 0.91 - 0.9005 = 0.0095, int(9.5) = 9
    assert reference_grow_count(1000, 90, 0.0995) == 9
    # density 0.1: grow_ratio float32(0.91) - 0.9 = 0.0100000262..., int(10.0000262) = 10
    assert reference_grow_count(1000, 90, 0.1) == 10
    # 99 alive: grow_ratio 0.0005 > 0 but int(0.5) = 0 -> topk(.., 0)[-1] IndexError -> dense
    assert reference_grow_count(1000, 99, 0.0995) == GROW_ALL
    assert reference_grow_count(1000, 100, 0.0995) == 0       # already at (above) its density
    assert reference_grow_count(10, 0, 1.0) == GROW_ALL       # grow_ratio 1: every position


def test_disparse_reference_grow_count_turns_layers_dense_at_the_last_update(cfg):
    """With the reference count the last update before ``end`` (DiSparse's t = 14950 of
    15000) turns the layers whose grow count truncates to 0 fully dense; the default grows
    ``k - keep`` and every task-owned layer is back at exactly ``k``."""
    criterion = SceneNetLoss.from_config(cfg)
    batch = make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=0)
    end, last = 15000, 14950
    results = {}
    for rule in ("exact", "reference"):
        net = fresh(cfg).eval()
        hook = DisparseDynamic(90, interval=50, end=end, grow_count=rule)
        hook.setup(net, context(cfg, criterion, max_iters=end))
        grow = hook.drop(net, last)
        hook.grow(net, batch, grow)
        layers = hook.sparse_layers(net)
        results[rule] = (hook, {n: int(masking.mask_of(m).sum()) for n, m in layers.items()},
                         {n: m.weight_orig.numel() for n, m in layers.items()}, grow)
    hook, counts, sizes, grow = results["reference"]
    dense = [n for n in counts if counts[n] == sizes[n]]
    assert dense and all(grow[n] == GROW_ALL for n in dense)
    assert set(dense) == {n for n in grow if grow[n] == GROW_ALL}
    hook, counts, sizes, grow = results["exact"]
    assert not [n for n in counts if counts[n] == sizes[n]]
    assert all(g >= 0 for g in grow.values())
    assert hook.spec().get("grow_count") is None                # the default is not recorded
    assert results["reference"][0].spec()["grow_count"] == "reference"
    with pytest.raises(ValueError, match="grow_count must be one of"):
        DisparseDynamic(90, interval=50, end=end, grow_count="off-by-one")
