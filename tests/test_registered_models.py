"""Every model registered in lib, at a tiny width, through the contract's pipeline: CUT at a
target sparsity, structured CUT, the pruned checkpoint and the edge artifact read back exactly.
A model registered in lib without an entry in TINY fails here: add one."""
import warnings

import pytest
import torch

from lib.export import load_artifact, save_artifact
from lib.losses import TaskLosses
from lib.models import (MODEL_REGISTRY, MTANDeepLabv3, MultiDomainVGG16, SceneNet, SegNetMTAN,
                        SplitDeepLabv3)
from lib.pruning import PruningError, load_pruned, prune, save_pruned

TINY = {
    "SceneNet": lambda: SceneNet([5, 1], "ResNet50", width_mult=0.0625, tasks=["seg", "depth"]),
    "SegNetMTAN": lambda: SegNetMTAN(width_mult=0.125),
    "SplitDeepLabv3": lambda: SplitDeepLabv3(width_mult=0.0625),
    "MTANDeepLabv3": lambda: MTANDeepLabv3(width_mult=0.0625),
    "MultiDomainVGG16": lambda: MultiDomainVGG16([5, 5, 5, 5], width_mult=0.0625),
}
# Torch-Pruning does not see that SegNet's max-unpooling indices tie encoder and decoder channels.
NOT_STRUCTURED = {"SegNetMTAN"}


def test_every_registered_lib_model_has_a_tiny_entry():
    in_lib = {name for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("lib.")}
    assert in_lib == set(TINY)


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    torch.manual_seed(0)
    net = TINY[request.param]().eval()
    g = torch.Generator().manual_seed(1)
    loader = [{"img": torch.randn(2, 3, 32, 32, generator=g)} for _ in range(2)]
    # Any differentiable per-task loss will do: the pipeline only needs a TaskLosses.
    criterion = TaskLosses({t: lambda pred, batch: pred.float().pow(2).mean() for t in net.tasks})
    return request.param, net, criterion, loader


def reads_back(net, path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # a network without masks is exported dense
        save_pruned(net, path.with_suffix(".pth"))
        save_artifact(net, path.with_suffix(".cutedge"))
    with torch.no_grad():
        expected = net.eval()(x)
        for other in (load_pruned(path.with_suffix(".pth"))[0], load_artifact(path.with_suffix(".cutedge"))):
            assert all(torch.equal(a, b) for a, b in zip(expected, other.eval()(x)))


@pytest.mark.parametrize("method", ["cut", "structured_cut"])
def test_prune_and_read_back(model, method, tmp_path):
    name, net, criterion, loader = model
    selected = list(net.tasks[-2:])
    if method == "structured_cut" and name in NOT_STRUCTURED:
        with pytest.raises(PruningError, match="forward fails"):
            prune(method, net, criterion, loader, selected_tasks=selected, sparsity=50,
                  num_batches=1)
        return
    result = prune(method, net, criterion, loader, selected_tasks=selected, sparsity=50,
                   num_batches=1)
    assert result.net.tasks == selected and isinstance(result.net, type(net))
    if method == "cut":
        assert abs(result.sparsity - 50) <= 0.5
    else:
        assert result.sparsity > 50 and not result.masks
    reads_back(result.net, tmp_path / "m", loader[0]["img"])
