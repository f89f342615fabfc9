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
