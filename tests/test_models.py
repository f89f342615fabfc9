import pytest
import torch

from lib.config import load_config
from lib.models import (SceneNet, backbone_modules, head_modules, prunable_modules,
                        task_model_modules)

REFERENCE_BACKBONE_PARAMS = 21_284_672


def head_params(num_class):
    return 23_076_864 + 4_100 * num_class


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("config", ["nyuv2_3task", "cityscapes", "taskonomy"])
def test_reference_parameter_counts(config):
    cfg = load_config(config)
    with torch.device("meta"):
        net = SceneNet.from_config(cfg)
    assert count(net.backbone) == REFERENCE_BACKBONE_PARAMS
    expected = REFERENCE_BACKBONE_PARAMS + sum(head_params(c) for c in cfg.TASKS_NUM_CLASS)
    assert count(net) == expected


def reference_keys(layers, num_tasks):
    """State-dict keys the original code produces, written out from REFERENCE.md section 1."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["backbone.conv1.weight"] + [f"backbone.bn1.{k}" for k in bn]
    for s, n in enumerate(layers):
        for b in range(n):
            p = f"backbone.blocks.{s}.{b}"
            keys += [f"{p}.conv1.weight"] + [f"{p}.bn1.{k}" for k in bn]
            keys += [f"{p}.conv2.weight"] + [f"{p}.bn2.{k}" for k in bn]
        if s > 0:
            keys += [f"backbone.ds.{s}.0.weight"] + [f"backbone.ds.{s}.1.{k}" for k in bn]
    for t in range(1, num_tasks + 1):
        for c in range(4):
            for conv in (1, 2, 3):
                keys += [f"task{t}_fc1_c{c}.conv{conv}.weight", f"task{t}_fc1_c{c}.conv{conv}.bias"]
    return set(keys)


@pytest.mark.parametrize("backbone,layers", [("ResNet18", [2, 2, 2, 2]), ("ResNet34", [3, 4, 6, 3])])
def test_state_dict_keys_match_reference(backbone, layers):
    with torch.device("meta"):
        net = SceneNet([40, 3, 1], backbone)
    assert set(net.state_dict()) == reference_keys(layers, 3)


@pytest.mark.parametrize("config,size,out", [("nyuv2_3task", (65, 81), (9, 11)),
                                             ("cityscapes", (64, 128), (9, 17)),
                                             ("taskonomy", (64, 64), (9, 9))])
def test_strict_load_and_output_shapes(config, size, out):
    """A checkpoint with reference keys loads strictly into a fresh network; same outputs."""
    cfg = load_config(config, profile="tiny")
    torch.manual_seed(0)
    source = SceneNet.from_config(cfg).eval()
    target = SceneNet.from_config(cfg).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    img = torch.randn(2, 3, *size)
    with torch.no_grad():
        a, b = source(img), target(img)
    assert len(a) == len(cfg.TASKS)
    for pred, ref, c in zip(a, b, cfg.TASKS_NUM_CLASS):
        assert pred.shape == (2, c, *out)
        torch.testing.assert_close(pred, ref, rtol=0, atol=0)


def test_reference_output_stride():
    """321x321 -> 41x41 as in the reference (ceil-mode max pool, output stride 8)."""
    net = SceneNet([2], "ResNet18", width_mult=0.125).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 321, 321))[0].shape[-2:] == (41, 41)
        assert net(torch.zeros(1, 3, 480, 640))[0].shape[-2:] == (61, 81)


def test_every_parameter_gets_a_gradient_and_no_nan():
    net = SceneNet([5, 3, 1], "ResNet18", width_mult=0.125)
    out = net(torch.randn(2, 3, 48, 64))
    sum(o.mean() for o in out).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_structure_helpers_partition_prunable_layers():
    net = SceneNet([5, 3, 1], "ResNet18", width_mult=0.125)
    backbone = backbone_modules(net)
    heads = [head_modules(net, t) for t in net.task_ids]
    assert all(n.startswith("backbone.") for n in backbone)
    assert all(n.startswith(f"task{t}_") for t, h in zip(net.task_ids, heads) for n in h)
    assert len(prunable_modules(net)) == len(backbone) + sum(len(h) for h in heads)
    assert set(task_model_modules(net, 2)) == set(backbone) | set(heads[1])
    assert all(len(h) == 12 for h in heads)  # 4 branches x 3 convs


def test_compact_network_keeps_head_names():
    net = SceneNet([3, 1], "ResNet18", width_mult=0.125, task_ids=[2, 3], tasks=["sn", "depth"])
    assert {k.split("_")[0] for k in net.state_dict() if k.startswith("task")} == {"task2", "task3"}
    out = net.forward_dict(torch.randn(1, 3, 48, 64))
    assert list(out) == ["sn", "depth"] and out["sn"].shape[1] == 3


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'ResNet99'"):
        SceneNet([2], "ResNet99")
    with pytest.raises(ValueError, match="task_ids"):
        SceneNet([2, 3], task_ids=[1, 1])
    with pytest.raises(KeyError, match="no head task7"):
        SceneNet([2], "ResNet18", width_mult=0.125).head(7)
