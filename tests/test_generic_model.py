"""A model the workspace has never seen, written only against the documented contract
(lib.models.MultiTaskModel), through every pruning method, fine-tuning with masks held,
evaluation with its own metrics, the edge artifact and ONNX with onnxruntime parity."""
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.export import (check_onnx_parity, export_onnx, load_artifact, save_artifact,
                        size_speed_report)
from lib.losses import TaskLosses
from lib.masks import masked_modules, masks_of, sparsity_report
from lib.metrics import delta_mtl
from lib.models import MultiTaskModel, check_model, prunable_layers, register_model
from lib.pruning import METHODS, STRUCTURED_METHODS, load_pruned, prune, save_pruned
from lib.training import evaluate, finetune, metrics_eval_fn

SIZE = 16


@register_model
class TwoHeads(MultiTaskModel):
    """Conv trunk; an image-level classification head and a dense head, in an nn.ModuleDict."""

    def __init__(self, tasks=("cls", "dense"), num_classes=3, width=8):
        super().__init__()
        self.tasks = list(tasks)
        self.num_classes, self.width = num_classes, width
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                   nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
                                   nn.BatchNorm2d(width), nn.ReLU())
        heads = {"cls": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                              nn.Linear(width, num_classes)),
                 "dense": lambda: nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                                nn.Conv2d(width, 1, 1))}
        self.heads = nn.ModuleDict({t: heads[t]() for t in self.tasks})

    def shared_modules(self):
        return {"trunk": self.trunk}

    def task_modules(self, task):
        return {f"heads.{task}": self.heads[task]}

    def forward(self, x):
        features = self.trunk(x)
        return [self.heads[t](features) for t in self.tasks]

    def architecture(self):
        return {"model": "TwoHeads", "tasks": list(self.tasks), "num_classes": self.num_classes,
                "width": self.width}


def batches(n, seed=0, batch_size=4):
    g = torch.Generator().manual_seed(seed)
    return [{"img": torch.randn(batch_size, 3, SIZE, SIZE, generator=g),
             "label": torch.randint(0, 3, (batch_size,), generator=g),
             "target": torch.rand(batch_size, 1, SIZE // 2, SIZE // 2, generator=g),
             "name": [f"item{i}" for i in range(batch_size)]} for _ in range(n)]


CRITERION = TaskLosses({"cls": lambda pred, batch: F.cross_entropy(pred, batch["label"]),
                        "dense": lambda pred, batch: F.l1_loss(pred, batch["target"])},
                       weights={"cls": 1.0, "dense": 2.0})
METRICS = {"cls": lambda pred, batch: {"acc": (pred.argmax(1) == batch["label"]).float().mean()},
           "dense": lambda pred, batch: {"l1": (pred - batch["target"]).abs().mean()}}
SELECTED = ["dense", "cls"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return check_model(TwoHeads()).eval()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_in_target_sparsity_mode(net, method):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = prune(method, net, CRITERION, batches(2), selected_tasks=SELECTED, sparsity=60,
                   num_batches=2, seed=1)
    pruned = result.net
    assert isinstance(pruned, TwoHeads) and pruned.tasks == SELECTED
    assert set(pruned.heads) == set(SELECTED) and result.meta["method"] == method
    x = batches(1, seed=5)[0]["img"]
    with torch.no_grad():
        dense_out, cls_out = pruned.eval()(x)
    assert dense_out.shape == (4, 1, SIZE // 2, SIZE // 2) and cls_out.shape == (4, 3)
    assert torch.isfinite(dense_out).all() and torch.isfinite(cls_out).all()
    if method in STRUCTURED_METHODS:
        assert not masks_of(pruned) and result.meta["channel_sparsity"] == 0.6
        assert pruned.trunk[0].out_channels < net.trunk[0].out_channels
        assert 0 < result.sparsity < 100
    else:
        assert set(masks_of(pruned)) == set(prunable_layers(pruned))
        assert abs(sparsity_report(pruned)["deployed"]["sparsity"] - 60) <= 0.5
        assert result.sparsity == sparsity_report(pruned)["deployed"]["sparsity"]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("method", ["cut", "disparse_pt", "lth"])
def test_the_explorers_setting_is_prunes_model(net, method):
    """What the explorer shows (and exports) for a target is prune(sparsity=S)'s model: the
    same keep ratio, tie rule and masks."""
    from lib.explorer import ExplorerState

    state = ExplorerState(net, CRITERION, batches(2), num_batches=2, seed=1,
                          input_shape=(1, 3, SIZE, SIZE))
    for target in (90, 89, 60, 30):
        snap = state.snapshot(SELECTED, method, target)
        result = prune(method, net, CRITERION, batches(2), selected_tasks=SELECTED,
                       sparsity=target, num_batches=2, seed=1)
        assert snap.keep_ratio == result.meta["keep_ratio"], target
        assert snap.exact == (result.meta["ties"] == "broken"), target
        got = state.masks(snap)
        assert got.keys() == result.masks.keys()
        assert all(torch.equal(result.masks[n], got[n]) for n in got), target


def test_keep_ratio_mode_and_per_task_masks(net):
    result = prune("cut", net, CRITERION, batches(2), selected_tasks=["cls"], keep_ratio=0.3,
                   num_batches=2)
    assert list(result.task_masks) == ["cls"] and "dense" not in result.net.heads
    masks = masks_of(result.net)
    for name, mask in result.task_masks["cls"].items():   # one task: its own decision
        assert torch.equal(mask, masks[name].cpu())


def test_finetune_holds_masks_and_evaluates_with_user_metrics(net, tmp_path):
    result = prune("cut", net, CRITERION, batches(2), selected_tasks=SELECTED, sparsity=70,
                   num_batches=2)
    pruned = result.net
    masks = {n: m.weight_mask.clone() for n, m in masked_modules(pruned).items()}
    cfg = SimpleNamespace(RETRAIN_EPOCH=4, RETRAIN_LR=1e-2, RETRAIN_DECAY_LR_FREQ=2,
                          RETRAIN_DECAY_LR_RATE=0.5, WEIGHT_DECAY=0.1, VAL_FREQ=2, CKPT_FREQ=2)
    items = [{k: v[i] for k, v in b.items() if k != "name"} for b in batches(2) for i in range(4)]
    train = torch.utils.data.DataLoader(items, batch_size=4, shuffle=True)
    val = torch.utils.data.DataLoader(items, batch_size=4)
    run = finetune(pruned, CRITERION, train, cfg, tmp_path / "ft", val_loader=val,
                   eval_fn=metrics_eval_fn(metrics=METRICS), select_metric="max:val/cls/acc",
                   log=False, meta=result.meta)
    assert run.iterations == 4 and "val/dense/l1" in run.final_val
    for name, module in masked_modules(run.net).items():
        assert torch.equal(module.weight_mask, masks[name])
        assert not module.weight_orig[masks[name] == 0].any()
    reloaded, meta = load_pruned(tmp_path / "ft" / "final_model.pth")
    assert meta["method"] == "cut" and meta["finetuned"] is True
    test = torch.utils.data.DataLoader(items, batch_size=4)
    tuned = evaluate(run.net, test, metrics=METRICS, progress=False)
    assert evaluate(reloaded, test, metrics=METRICS, progress=False) == tuned
    dense = evaluate(net.select(SELECTED), test, metrics=METRICS, progress=False)
    delta = delta_mtl(tuned, dense, metric_names={"cls": ["acc"], "dense": ["l1"]},
                      lower_is_better={"acc": False, "l1": True})
    expected = 50 * ((tuned["cls"]["acc"] - dense["cls"]["acc"]) / dense["cls"]["acc"]
                     - (tuned["dense"]["l1"] - dense["dense"]["l1"]) / dense["dense"]["l1"])
    assert delta == pytest.approx(expected)


@pytest.mark.parametrize("method", ["cut", "structured_cut"])
def test_onnx_parity_and_artifact_round_trip(net, method, tmp_path):
    pruned = prune(method, net, CRITERION, batches(2), selected_tasks=SELECTED, sparsity=50,
                   num_batches=2).net.eval()
    x = batches(1, seed=3)[0]["img"][:1]
    path = export_onnx(pruned, tmp_path / "m.onnx", tuple(x.shape))
    parity = check_onnx_parity(pruned, path, x)
    assert parity["ok"], parity
    assert sorted(parity["per_output"]) == sorted(SELECTED)
    save_pruned(pruned, tmp_path / "m.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_artifact(pruned, tmp_path / "m.cutedge")
    assert bool(caught) == (method in STRUCTURED_METHODS)   # no masks: stored dense, said so
    for loaded in (load_artifact(tmp_path / "m.cutedge"), load_pruned(tmp_path / "m.pth")[0]):
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(pruned(x), loaded.eval()(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # the dense row is exported dense
        rows = size_speed_report(net.select(SELECTED), pruned, tuple(x.shape), threads=1,
                                 repeats=1, warmup=0, out_dir=tmp_path / "report")
    assert rows[1]["onnx_parity_ok"] and rows[1]["macs_effective"] < rows[0]["macs_dense"]



def test_a_task_selection_trains_and_scores_with_the_all_task_metrics_and_plain_batches(
        net, tmp_path):
    """The user's metrics dict covers every task; the compact model holds one. Fine-tuning
    takes the same list of batches as prune, without a config (documented defaults)."""
    from lib.explorer import ExplorerState
    from lib.training.finetune import FINETUNE_DEFAULTS

    result = prune("cut", net, CRITERION, batches(2), selected_tasks=["dense"], sparsity=50,
                   num_batches=2)
    masks = {n: m.weight_mask.clone() for n, m in masked_modules(result.net).items()}
    run = finetune(result.net, CRITERION, batches(2), None, tmp_path / "ft", max_iters=3,
                   val_loader=batches(1, seed=7), eval_fn=metrics_eval_fn(metrics=METRICS),
                   log=False)
    assert run.iterations == 3 and set(run.final_val) >= {"val/dense/l1", "val/loss"}
    assert not any(k.startswith("val/cls") for k in run.final_val)
    assert all(torch.equal(m.weight_mask, masks[n]) for n, m in masked_modules(run.net).items())
    assert (tmp_path / "ft" / "final_model.pth").is_file()
    scores = evaluate(run.net, batches(2, seed=3), metrics=METRICS, progress=False)
    assert set(scores) == {"dense"}
    with pytest.raises(ValueError, match=r"metrics are given for tasks \['cls'\], none of the "
                                         r"network's tasks \['dense'\]"):
        evaluate(run.net, batches(1), metrics={"cls": METRICS["cls"]}, progress=False)
    partial = finetune(result.net, CRITERION, batches(2), {"RETRAIN_LR": 1e-3},
                       tmp_path / "ft2", max_iters=2, log=False)
    assert partial.iterations == 2 and FINETUNE_DEFAULTS["RETRAIN_LR"] != 1e-3
    state = ExplorerState(net, CRITERION, batches(2), num_batches=2, metrics=METRICS,
                          test_loader=batches(2, seed=4), latency_repeats=1)
    assert set(state.evaluate(state.snapshot(["dense"], "cut", 50))["pruned"]) == {"dense"}


@register_model
class DeviceMovingHeads(TwoHeads):
    """Counts channels in numpy ints and moves itself in its constructor: neither may stop the
    artifact or the checkpoint (no meta-device build for it, no numpy ints in JSON)."""

    def __init__(self, tasks=("cls", "dense"), num_classes=3, width=8):
        import numpy as np
        super().__init__(tasks, np.int64(num_classes), np.int64(width))
        self.to(torch.device("cpu"))

    def architecture(self):
        return {**super().architecture(), "model": "DeviceMovingHeads"}


def test_numpy_channel_counts_and_a_constructor_calling_to(tmp_path):
    import json

    from lib.models import channel_spec

    torch.manual_seed(0)
    dense = DeviceMovingHeads().eval()
    assert json.dumps(channel_spec(dense))   # plain ints
    for method in ("cut", "structured_cut"):
        pruned = prune(method, dense, CRITERION, batches(2), selected_tasks=SELECTED,
                       sparsity=50, num_batches=2).net.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # structured: no masks, stored dense
            save_artifact(pruned, tmp_path / f"{method}.cutedge")
        save_pruned(pruned, tmp_path / f"{method}.pth")
        x = batches(1, seed=3)[0]["img"]
        for loaded in (load_artifact(tmp_path / f"{method}.cutedge"),
                       load_pruned(tmp_path / f"{method}.pth")[0]):
            with torch.no_grad():
                assert all(torch.equal(a, b) for a, b in zip(pruned(x), loaded.eval()(x)))
