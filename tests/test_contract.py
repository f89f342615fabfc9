"""The MultiTaskModel contract: selection, layer enumeration, registry, validation."""
import pytest
import torch
import torch.nn as nn

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
