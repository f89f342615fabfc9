"""The MultiTaskModel contract: selection, layer enumeration, registry, validation."""
import pytest
import torch
import torch.nn as nn
from conftest import TwoHeadToy

from lib.models import (MODEL_REGISTRY, MultiTaskModel, SceneNet, build_model, check_model,
                        layer_owner, prunable_layers, register_model, shared_layers,
                        task_layers, task_model_layers)


class Toy(MultiTaskModel):
    """A conv trunk, a per-task BatchNorm inside the trunk (ModuleList), heads in a ModuleDict."""

    def __init__(self, tasks=("cls", "dense", "aux")):
        super().__init__()
        self.tasks = list(tasks)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.task_bn = nn.ModuleList(nn.BatchNorm2d(4) for _ in self.tasks)
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
                                    if t == "cls" else nn.Conv2d(4, 1, 1) for t in self.tasks})
        self.index = {t: i for i, t in enumerate(self.tasks)}

    def shared_modules(self):
        return {"stem": self.stem}

    def task_modules(self, task):
        i = self.index[task]
        return {f"task_bn.{i}": self.task_bn[i], f"heads.{task}": self.heads[task]}

    def forward(self, x):
        f = self.stem(x)
        return [self.heads[t](self.task_bn[self.index[t]](f)) for t in self.tasks]


def test_select_removes_other_tasks_and_keeps_names():
    torch.manual_seed(0)
    net = Toy().eval()
    check_model(net)
    x = torch.randn(2, 3, 8, 8)
    full = dict(zip(net.tasks, net(x)))
    compact = net.select(["aux", "cls"])
    assert compact.tasks == ["aux", "cls"] and net.tasks == ["cls", "dense", "aux"]
    keys = set(compact.state_dict())
    assert not any(k.startswith(("heads.dense", "task_bn.1.")) for k in keys)
    assert {"task_bn.0.weight", "task_bn.2.weight", "heads.aux.weight"} <= keys
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in compact.state_dict().items())
    outs = compact(x)
    assert torch.equal(outs[0], full["aux"]) and torch.equal(outs[1], full["cls"])
    check_model(compact)


def test_layer_enumeration_follows_the_contract():
    net = Toy()
    assert list(shared_layers(net)) == ["stem"]
    assert list(task_layers(net, "cls")) == ["heads.cls.1"]
    assert list(task_model_layers(net, "dense")) == ["stem", "heads.dense"]
    assert list(prunable_layers(net)) == ["stem", "heads.cls.1", "heads.dense", "heads.aux"]
    assert layer_owner(net) == {"stem": None, "heads.cls.1": "cls", "heads.dense": "dense",
                                "heads.aux": "aux"}


def test_check_model_refuses_overlap_and_wrong_names():
    class Overlap(Toy):
        def task_modules(self, task):
            return {"stem": self.stem}
    with pytest.raises(ValueError, match="belongs to both"):
        check_model(Overlap())

    class Misnamed(Toy):
        def shared_modules(self):
            return {"trunk": self.stem}
    with pytest.raises(ValueError, match="'trunk' is not the module"):
        check_model(Misnamed())
    with pytest.raises(TypeError, match="MultiTaskModel"):
        check_model(nn.Conv2d(1, 1, 1))


def test_select_refuses_bad_selections():
    net = Toy()
    for bad, message in (([], "no task selected"), (["nope"], "unknown task"),
                         (["cls", "cls"], "more than once")):
        with pytest.raises(ValueError, match=message):
            net.select(bad)


def test_scene_net_select_matches_a_freshly_built_compact_net():
    torch.manual_seed(0)
    net = SceneNet([5, 3, 1], "ResNet18", width_mult=0.125, tasks=["seg", "sn", "depth"]).eval()
    compact = net.select(["depth", "seg"])
    fresh = SceneNet([1, 5], "ResNet18", width_mult=0.125, task_ids=[3, 1],
                     tasks=["depth", "seg"])
    assert list(compact.state_dict()) == list(fresh.state_dict())
    assert compact.architecture() == fresh.architecture()
    assert list(prunable_layers(compact)) == list(prunable_layers(fresh))
    x = torch.randn(1, 3, 33, 41)
    full = net.forward_dict(x)
    out = compact.forward_dict(x)
    assert torch.equal(out["depth"], full["depth"]) and torch.equal(out["seg"], full["seg"])


def test_registry_rebuilds_models_and_names_bad_records():
    net = SceneNet([2, 1], "ResNet18", width_mult=0.125, tasks=["seg", "depth"])
    rebuilt = build_model(net.architecture())
    assert isinstance(rebuilt, SceneNet) and rebuilt.architecture() == net.architecture()
    legacy = {k: v for k, v in net.architecture().items() if k != "model"}
    assert build_model(legacy).architecture() == net.architecture()
    with pytest.raises(ValueError, match="x.json: unknown model 'Nope'"):
        build_model({"model": "Nope"}, "x.json")
    with pytest.raises(ValueError, match="x.json: cannot build SceneNet"):
        build_model({"model": "SceneNet", "bogus": 1}, "x.json")
    with pytest.raises(ValueError, match="already registered"):
        register_model(Toy, name="SceneNet")
    assert MODEL_REGISTRY["SceneNet"] is SceneNet


# ------------------------------------------------------------------ contract violations
TwoTasks = TwoHeadToy   # a conv trunk and a conv head per task; subclasses break the contract


class ExtraOutput(TwoTasks):
    def forward(self, x):
        return super().forward(x) + [x]


class DictOutput(TwoTasks):
    def forward(self, x):
        return dict(zip(self.tasks, super().forward(x)))


class LooseConv(TwoTasks):
    def __init__(self):
        super().__init__()
        self.refine = nn.Conv2d(4, 4, 1)   # used by every task, declared by none

    def forward(self, x):
        f = self.refine(self.trunk(x))
        return [self.heads[t](f) for t in self.tasks]


class CrossStitch(MultiTaskModel):
    """One column per task mixed by a cross-stitch unit: a task's output depends on the
    other columns, so declaring the columns as per-task modules breaks select()."""

    def __init__(self, tasks=("a", "b")):
        super().__init__()
        self.tasks = list(tasks)
        self.columns = nn.ModuleDict({t: nn.Conv2d(3, 4, 3, padding=1) for t in self.tasks})
        self.heads = nn.ModuleDict({t: nn.Conv2d(4, 1, 1) for t in self.tasks})
        self.stitch = nn.Parameter(torch.full((len(tasks), len(tasks)), 0.5))
        self.index = {t: i for i, t in enumerate(self.tasks)}

    def shared_modules(self):
        return {}

    def task_modules(self, task):
        return {f"columns.{task}": self.columns[task], f"heads.{task}": self.heads[task]}

    def forward(self, x):
        feats = {t: self.columns[t](x) for t in self.tasks}
        return [self.heads[t](sum(self.stitch[self.index[t], self.index[u]] * feats[u]
                                  for u in self.tasks)) for t in self.tasks]


def _losses(tasks, calls):
    from lib.losses import TaskLosses

    def loss(pred, batch):
        calls.append(1)
        return pred.abs().mean()
    return TaskLosses({t: loss for t in tasks})


def _batches(n=2):
    g = torch.Generator().manual_seed(0)
    return [{"img": torch.randn(2, 3, 8, 8, generator=g)} for _ in range(n)]


@pytest.mark.parametrize("model, error, message", [
    (ExtraOutput, ValueError, r"ExtraOutput.forward returned 3 outputs for the 2 tasks \['a', "
                              r"'b'\]"),
    (DictOutput, TypeError, r"DictOutput.forward returned a dict; the contract wants a list"),
])
def test_outputs_not_aligned_with_the_tasks_are_refused_before_scoring(model, error, message):
    from lib.explorer import ExplorerState
    from lib.pruning import prune

    torch.manual_seed(0)
    net = model()
    check_model(net)   # the static checks cannot see the outputs
    with pytest.raises(error, match=message):
        check_model(net, torch.randn(1, 3, 8, 8))
    calls = []
    with pytest.raises(error, match=message):
        prune("cut", net, _losses(net.tasks, calls), _batches(), selected_tasks=["a"],
              keep_ratio=0.5, num_batches=2)
    assert not calls   # refused before any score was taken
    with pytest.raises(error, match=message):
        ExplorerState(net, _losses(net.tasks, calls), _batches(), input_shape=(1, 3, 8, 8))
    with pytest.raises(error, match=message):   # one-shot iterators too
        prune("snip", net, _losses(net.tasks, calls), iter(_batches()), selected_tasks=["a"],
              keep_ratio=0.5, num_batches=2)
    assert not calls


class _Passes:
    """A loader whose every pass yields other batches (as lib.data's samplers move to the next
    epoch's order per pass); it counts its passes."""

    def __init__(self, n=2):
        self.n, self.passes = n, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        self.passes += 1
        return iter(_batches(self.n + self.passes)[self.passes:])


def test_the_probe_costs_the_loader_nothing():
    from lib.masks import masks_of
    from lib.pruning import prune

    torch.manual_seed(0)
    net = TwoTasks()
    loader = _Passes()
    result = prune("cut", net, _losses(net.tasks, []), loader, selected_tasks=["a", "b"],
                   keep_ratio=0.5, num_batches=2)
    assert loader.passes == 1
    expected = prune("cut", net, _losses(net.tasks, []), _batches(3)[1:],
                     selected_tasks=["a", "b"], keep_ratio=0.5, num_batches=2)
    assert all(torch.equal(m, masks_of(expected.net)[n]) for n, m in masks_of(result.net).items())


def test_a_prunable_layer_outside_every_declared_module_is_refused():
    from lib.pruning import prune

    with pytest.raises(ValueError, match=r"LooseConv: prunable layer\(s\) \['refine'\] are in "
                                         r"neither shared_modules\(\) nor any task_modules\(\)"):
        check_model(LooseConv())
    with pytest.raises(ValueError, match="'refine'"):
        prune("random", LooseConv(), None, None, selected_tasks=["a", "b"], keep_ratio=0.5)


def test_select_compares_the_compact_outputs_with_the_full_model_on_a_probe():
    from lib.pruning import prune

    torch.manual_seed(0)
    net = CrossStitch()
    probe = torch.randn(1, 3, 8, 8)
    check_model(net, probe)   # the declaration itself is consistent
    with pytest.raises(ValueError, match=r"CrossStitch.select\(\['a'\]\): task 'a''s output "
                                         r"differs from the full model's by max \|diff\| [0-9.]+"):
        net.select(["a"], probe=probe)
    assert net.select(["b", "a"], probe=probe).tasks == ["b", "a"]   # all tasks: nothing lost
    with pytest.raises(ValueError, match=r"task 'b''s output differs"):
        prune("cut", net, _losses(["b"], []), _batches(), selected_tasks=["b"], keep_ratio=0.5,
              num_batches=2)
    compact = Toy().eval().select(["dense"], probe=torch.randn(1, 3, 8, 8))  # a correct model
    assert compact.tasks == ["dense"]


def test_a_pruned_network_is_deep_copyable_before_and_after_a_forward():
    import copy

    from lib.masks import masks_of
    from lib.pruning import prune

    torch.manual_seed(0)
    result = prune("cut", TwoTasks(), _losses(["a", "b"], []), _batches(), selected_tasks=["a",
                   "b"], keep_ratio=0.5, num_batches=2)
    for _ in range(2):
        clone = copy.deepcopy(result.net)
        assert set(masks_of(clone)) == set(masks_of(result.net))
        x = torch.randn(1, 3, 8, 8)
        assert all(torch.equal(u, v) for u, v in zip(clone(x), result.net(x)))
        assert clone.trunk.weight_orig is not result.net.trunk.weight_orig
        result.net.train()(x)[0].sum().backward()   # cached weights are non-leaf from now on
        assert not result.net.trunk.weight.is_leaf


def test_on_select_is_the_public_hook_and_the_old_name_still_works():
    class Counted(TwoTasks):
        def on_select(self, tasks):
            self.seen = (list(self.tasks), list(tasks))

    class Legacy(TwoTasks):
        def _on_select(self, tasks):
            self.seen = list(tasks)

    assert Counted().select(["b"]).seen == (["a", "b"], ["b"])
    assert Legacy().select(["b"]).seen == ["b"]
