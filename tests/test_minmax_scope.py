"""The min-max methods' default layer scope is ``prune_apgda``'s: every 4-D weight whose
parameter name lacks ``task`` (issue 23 item 10). The rule and the original's per-layer kept
count are written out here independently of ``lib.sparse``."""
import inspect

import numpy as np
import pytest
import torch

from lib.models import shared_layers
from lib.models.segnet_mtan import SegNetMTAN
from lib.sparse.hard_prune import hard_prune_masks, kept
from lib.sparse.minmax_pipeline import minmax_pipeline, minmax_prune
from lib.sparse.reweighted import ReweightedL1, scoped_layers

RATIO = 0.975


def reference_counts(net, ratio):
    """``prune_apgda``: for every parameter with ``len(size()) == 4`` and ``'task' not in
    name``, ``weight_pruning`` zeroes ``|w| < np.percentile(|w|, 100 ratio)``; the retraining
    mask is ``weight != 0``. Returns {module name: kept count}."""
    out = {}
    for name, w in net.named_parameters():
        if len(w.size()) == 4 and "task" not in name:
            a = np.abs(w.detach().numpy())
            out[name.rsplit(".", 1)[0]] = int(((a >= np.percentile(a, ratio * 100)) & (a != 0)).sum())
    return out


@pytest.fixture(scope="module")
def mtan():
    torch.manual_seed(0)
    return SegNetMTAN(width_mult=0.25)


def test_reference_scope_is_the_default_of_every_minmax_entry_point():
    for fn in (minmax_prune, ReweightedL1.__init__):
        assert inspect.signature(fn).parameters["layers"].default == "reference"
    assert ReweightedL1().layer_scope == "reference"
    assert "layers" not in inspect.signature(minmax_pipeline).parameters   # passed on as is


def test_segnet_mtan_pruned_as_prune_apgda_at_0975(mtan):
    expected = reference_counts(mtan, RATIO)
    scope = scoped_layers(mtan, "reference")
    assert sorted(scope) == sorted(expected)
    assert any(n.startswith("encoder_att.") for n in scope)        # per-task attention convs
    assert any(n.startswith("decoder_att.") for n in scope)
    assert len(scope) == 96 and len(shared_layers(mtan)) == 36    # only the 6 pred_task* dense
    # the original's counts, exactly, under counts="percentile"
    masks = hard_prune_masks(scope, RATIO, "irregular", counts="percentile")
    assert {n: int(m.sum()) for n, m in masks.items()} == expected
    # the default exact counts: round(ratio n) pruned per layer, within one of the original's
    exact = hard_prune_masks(scope, RATIO, "irregular")
    for name, mask in exact.items():
        n = mask.numel()
        assert int(mask.sum()) == kept(n, RATIO)
        assert abs(int(mask.sum()) - expected[name]) <= 1
    convs = {n: p for n, p in mtan.named_parameters() if p.dim() == 4}
    pruned = sum(m.numel() - int(m.sum()) for m in exact.values())
    assert pruned / sum(p.numel() for p in convs.values()) > 0.96   # "40x", not ~77 %


def test_shared_and_all_scopes_stay_available(mtan):
    assert set(scoped_layers(mtan, "shared")) == set(shared_layers(mtan))
    assert len(scoped_layers(mtan, "all")) == 102
    with pytest.raises(ValueError, match=r"layers must be one of \['reference', 'shared', "
                                         r"'all'\], got 'task'"):
        scoped_layers(mtan, "task")


def test_reference_scope_on_names_without_task():
    """A model whose names carry no 'task': every conv layer, heads included; Linear layers
    (2-D weights) are outside the rule, and a scope with no layer is one line."""
    from lib.models import MultiTaskModel

    class Heads(MultiTaskModel):
        def __init__(self):
            super().__init__()
            self.tasks = ["a", "b"]
            self.trunk = torch.nn.Conv2d(3, 4, 3)
            self.heads = torch.nn.ModuleDict({t: torch.nn.Conv2d(4, 1, 1) for t in self.tasks})
            self.fc = torch.nn.Linear(4, 4)

        def shared_modules(self):
            return {"trunk": self.trunk, "fc": self.fc}

        def task_modules(self, task):
            return {f"heads.{task}": self.heads[task]}

        def forward(self, x):
            return [self.heads[t](self.trunk(x)) for t in self.tasks]

    assert sorted(scoped_layers(Heads(), "reference")) == ["heads.a", "heads.b", "trunk"]
    with pytest.raises(ValueError, match="layers='reference' selects no layer of Heads"):
        scoped_layers(Heads(), "reference", exclude=["*"])


def test_minmax_prune_default_on_segnet_mtan_masks_the_reference_layers(tmp_path):
    """The pipeline's stages 1-2 with their default scope: in ``pruned.pth`` every layer of the
    reference rule keeps what ``prune_apgda`` keeps (``counts="percentile"``) of the
    regularised weights, and the ``pred_task*`` heads stay dense."""
    from torch.utils.data import DataLoader

    from lib.config import load_config
    from lib.losses import losses_from_config
    from lib.models import model_from_config
    from lib.pruning import load_pruned
    from lib.sparse import masking
    from test_training import BatchItems

    cfg = load_config("nyuv2_mtan", profile="tiny")
    torch.manual_seed(0)
    net = model_from_config(cfg).select(["seg", "depth"])
    g = torch.Generator().manual_seed(0)
    batch = {"img": torch.randn(2, 3, 32, 48, generator=g),
             "seg": torch.randint(-1, 13, (2, 1, 32, 48), generator=g),
             "depth": torch.rand(2, 1, 32, 48, generator=g) + 0.5}
    loader = DataLoader(BatchItems(batch), batch_size=2)
    rew, pruned_path, settings = minmax_prune(
        net, losses_from_config(cfg, ["seg", "depth"]), loader, cfg, tmp_path / "mm",
        prune_ratio=RATIO, counts="percentile", rew_iters=1, log=False)
    assert settings["layers"] == "reference"
    regularised, _ = load_pruned(rew)
    expected = reference_counts(regularised, RATIO)
    pruned, _ = load_pruned(pruned_path)
    layers = {n: m for n, m in pruned.named_modules() if hasattr(m, "weight_mask")}
    heads = {n: m for n, m in layers.items() if n.startswith("pred_task")}
    assert heads and all(bool(m.weight_mask.all()) for m in heads.values())   # left dense
    scope = {n: m for n, m in layers.items() if n not in heads}
    assert masking.counts(scope) == expected
