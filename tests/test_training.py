"""lib.training: loss goes down, exact resume, NaN guard, masked fine-tuning, selection split,
checkpoint safety and bad-input errors. Tiny network, 48x64 images, a few iterations each."""
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from torch.utils.data import DataLoader

from conftest import BatchItems, make_random_batch
from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet, prunable_modules
from lib.training import (evaluate, finetune, load_checkpoint, make_loaders, mask_snapshot,
                          masked_modules, metrics_path_for, net_from_checkpoint, read_checkpoint,
                          save_checkpoint, split_record, split_train_val, train)


@pytest.fixture
def cfg():
    return load_config("nyuv2_3task", profile="tiny")


def make_net(cfg, seed=0):
    torch.manual_seed(seed)
    return SceneNet.from_config(cfg)


def make_data(cfg, n=5, seed=0):
    return BatchItems(make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, batch_size=n,
                                        height=48, width=64, seed=seed))


def loader(ds, shuffle=True, batch_size=2):
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle)


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class FailingLoss(SceneNetLoss):
    """SceneNetLoss that, on the ``at``-th training call, interrupts or returns NaN for ``task``."""

    def __init__(self, cfg, at, mode, task="sn"):
        base = SceneNetLoss.from_config(cfg)
        super().__init__(base.dataset, base.tasks, base.lambdas)
        self.at, self.mode, self.task, self.calls = at, mode, task, 0

    def per_task(self, preds, batch):
        losses = super().per_task(preds, batch)
        if torch.is_grad_enabled():  # training step, not validation
            self.calls += 1
            if self.calls == self.at:
                if self.mode == "interrupt":
                    raise KeyboardInterrupt
                losses[self.task] = losses[self.task] * float("nan")
        return losses


def test_loss_decreases_and_outputs(cfg, tmp_path):
    ds = make_data(cfg, n=4)
    cfg.VAL_FREQ = 6
    result = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "run",
                   val_loader=loader(ds, shuffle=False), max_iters=12, log=True)
    total = [v for _, v in result.history["loss/total"]]
    assert len(total) == 12
    assert sum(total[-3:]) / 3 < 0.7 * sum(total[:3]) / 3
    for task in cfg.TASKS:
        assert len(result.history[f"loss/{task}"]) == 12
    lrs = [v for _, v in result.history["lr"]]
    assert lrs[0] == pytest.approx(cfg.INIT_LR) and lrs[-1] < lrs[0]  # StepLR per iteration
    run = tmp_path / "run"
    assert {"last.pth", "best.pth", "base_model.pth", "history.json", "tb"} <= set(os.listdir(run))
    assert any(Path(run, "tb").iterdir())
    # base_model.pth is a plain state dict with the reference's keys: loads strictly.
    fresh = make_net(cfg, seed=1)
    fresh.load_state_dict(torch.load(run / "base_model.pth", weights_only=True), strict=True)
    assert state_equal(fresh.state_dict(), result.net.state_dict())
    assert set(result.final_val) >= {"val/loss", "val/loss/seg"}
    best = read_checkpoint(result.best_checkpoint)
    assert best["iteration"] in (6, 12) and best["optimizer"] is None
    assert json.loads((run / "history.json").read_text())["loss/total"][0][0] == 1


def test_interrupted_then_resumed_run_equals_uninterrupted(cfg, tmp_path):
    ds = make_data(cfg, n=5)  # 3 batches per epoch: the interruption falls mid-epoch
    common = dict(val_loader=loader(ds, shuffle=False), max_iters=5, seed=3, log=False)
    full = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "a",
                 **common)
    with pytest.raises(KeyboardInterrupt):  # dies during iteration 4; last.pth is at 2
        train(make_net(cfg), FailingLoss(cfg, at=4, mode="interrupt"), loader(ds), cfg,
              tmp_path / "b", **common)
    assert read_checkpoint(tmp_path / "b" / "last.pth")["iteration"] == 2
    resumed = train(make_net(cfg, seed=9), SceneNetLoss.from_config(cfg), loader(ds), cfg,
                    tmp_path / "b", resume=True, **common)
    assert resumed.iterations == 5
    assert state_equal(full.net.state_dict(), resumed.net.state_dict())
    assert full.history["loss/total"] == resumed.history["loss/total"]
    a = read_checkpoint(tmp_path / "a" / "last.pth")
    b = read_checkpoint(tmp_path / "b" / "last.pth")
    assert a["data"] == b["data"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_nan_loss_stops_with_task_and_iteration_and_keeps_last_checkpoint(cfg, tmp_path):
    ds = make_data(cfg, n=4)
    with pytest.raises(FloatingPointError, match=r"task 'sn'.* iteration 3;.*intact"):
        train(make_net(cfg), FailingLoss(cfg, at=3, mode="nan"), loader(ds), cfg,
              tmp_path / "nan", max_iters=6, log=False)
    good = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg,
                 tmp_path / "good", max_iters=2, log=False)
    kept = read_checkpoint(tmp_path / "nan" / "last.pth")
    assert kept["iteration"] == 2
    assert state_equal(kept["model"], good.net.state_dict())
    assert not list((tmp_path / "nan").glob(".*.tmp")) and not (tmp_path / "nan" / "base_model.pth").exists()


def test_loss_values_are_read_back_once_per_interval(cfg, tmp_path, monkeypatch):
    """LOG_FREQ=5, no validation or checkpoint before the end: the 12 steps' loss values come
    to the host in three transfers (after steps 5, 10 and 12), every step still logged."""
    from lib.training import engine

    reads = []
    original = engine._PendingValues.read

    def counted(self, iteration, kept):
        reads.append((iteration, len(self.pending)))
        return original(self, iteration, kept)

    monkeypatch.setattr(engine._PendingValues, "read", counted)
    cfg.LOG_FREQ, cfg.VAL_FREQ, cfg.CKPT_FREQ = 5, 100, 100
    result = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(make_data(cfg)), cfg,
                   tmp_path / "r", max_iters=12, log=False)
    assert reads == [(5, 5), (10, 5), (12, 2)]
    assert [i for i, _ in result.history["loss/total"]] == list(range(1, 13))


def test_non_finite_parameters_are_never_checkpointed(cfg, tmp_path):
    """Finite losses but a parameter turned NaN by a step: caught by the state check before
    the next checkpoint; the one before it stays as written (finite)."""
    from lib.training.engine import Schedule, run_loop

    def poison(model, calls=[]):
        calls.append(1)
        if len(calls) == 4:   # after the 4th step: the checkpoint of iteration 4 is next
            with torch.no_grad():
                next(model.parameters())[0].view(-1)[0] = float("inf")

    ds = make_data(cfg, n=4)
    with pytest.raises(FloatingPointError, match=r"non-finite values in \S+ after iteration 4; "
                                                 r"stopped before writing a checkpoint; the last "
                                                 r"good checkpoint \S+ \(iteration 2\) is intact"):
        run_loop(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "r",
                 schedule=Schedule.from_config(cfg, retrain=False, max_iters=6), phase="train",
                 final_name="base_model.pth", val_loader=None, seed=0, device="cpu",
                 resume=False, overwrite=False, amp=None, eval_fn=None, select_metric=None,
                 log=False, split=None, after_step=poison)
    kept = read_checkpoint(tmp_path / "r" / "last.pth")
    assert kept["iteration"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values()
               if v.is_floating_point())


def pruned_compact(cfg, amount=0.5):
    """A compact (seg, sn) SceneNet with l1_unstructured masks on every conv weight."""
    torch.manual_seed(0)
    net = SceneNet(cfg.TASKS_NUM_CLASS[:2], cfg.BACKBONE_NAME, cfg.WIDTH_MULT, task_ids=[1, 2],
                   tasks=cfg.TASKS[:2])
    for module in prunable_modules(net).values():
        prune.l1_unstructured(module, "weight", amount=amount)
    return net


def with_identity_masks(net):
    for module in prunable_modules(net).values():
        prune.identity(module, "weight")
    return net


def assert_pruned_zero(net, masks):
    for name, module in masked_modules(net).items():
        assert torch.equal(module.weight_mask, masks[name]), name
        assert bool((module.weight[masks[name] == 0] == 0).all()), name
        assert bool((module.weight_orig[masks[name] == 0] == 0).all()), name


@pytest.mark.parametrize("amp,channels_last", [("off", False), ("bf16", True)])
def test_finetune_keeps_pruned_weights_zero_and_masks_fixed(cfg, tmp_path, amp, channels_last):
    """Under float32 and under bfloat16 autocast with the channels_last layout alike."""
    net = pruned_compact(cfg)
    masks = mask_snapshot(net)
    before = {n: m.weight_orig.detach().clone() for n, m in masked_modules(net).items()}
    ds = make_data(cfg, n=4)
    # Large weight decay and lr so that any leak into pruned weights would show.
    result = finetune(net, SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "ft",
                      val_loader=loader(ds, shuffle=False), max_iters=3, lr=1e-2,
                      weight_decay=0.5, log=False, amp=amp, channels_last=channels_last)
    assert read_checkpoint(tmp_path / "ft" / "last.pth")["config"]["AMP"] == "off"
    for mask in masks.values():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert set(k for k in result.history if k.startswith("loss/")) == {
        "loss/seg", "loss/sn", "loss/total"}  # depth's loss dropped
    assert_pruned_zero(result.net, masks)
    kept_changed = any(bool((m.weight_orig[masks[n] == 1] != before[n][masks[n] == 1]).any())
                       for n, m in masked_modules(result.net).items())
    assert kept_changed
    # Reload the saved final model and the resumable checkpoint into fresh masked nets.
    for path in (tmp_path / "ft" / "final_model.pth", tmp_path / "ft" / "last.pth"):
        fresh = with_identity_masks(SceneNet(cfg.TASKS_NUM_CLASS[:2], cfg.BACKBONE_NAME,
                                             cfg.WIDTH_MULT, task_ids=[1, 2], tasks=cfg.TASKS[:2]))
        load_checkpoint(path, fresh)
        assert_pruned_zero(fresh, masks)
    sidecar = json.loads((tmp_path / "ft" / "final_model.json").read_text())
    assert sidecar["architecture"]["task_ids"] == [1, 2]
    from lib.pruning import load_pruned

    reloaded, meta = load_pruned(tmp_path / "ft" / "final_model.pth")
    assert meta["finetuned"] is True
    for name, module in masked_modules(reloaded).items():
        assert torch.equal(module.weight_mask, masks[name])
        assert not module.weight_orig[masks[name] == 0].any()
        assert not module.weight[masks[name] == 0].any()   # .weight is fresh before any forward
    rebuilt = net_from_checkpoint(tmp_path / "ft" / "final_model.pth")  # no config needed
    assert rebuilt.tasks == ["seg", "sn"]
    assert_pruned_zero(rebuilt, masks)
    assert state_equal(rebuilt.state_dict(), result.net.state_dict())


def test_validation_split_is_seeded_and_disjoint(cfg, tmp_path):
    train_idx, val_idx = split_train_val(50, 0.2, seed=1)
    assert len(val_idx) == 10 and not set(train_idx) & set(val_idx)
    assert sorted(train_idx + val_idx) == list(range(50))
    assert split_train_val(50, 0.2, seed=1) == (train_idx, val_idx)
    assert split_train_val(50, 0.2, seed=2)[1] != val_idx
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(50, 1.0)
    with pytest.raises(ValueError, match="1 training items"):
        split_train_val(1, 0.5)
    # The split is recorded in the run directory.
    ds = make_data(cfg, n=6)
    tr, va = split_train_val(len(ds), 0.34, seed=0)
    record = split_record("val", len(ds), tr, va, 0.34, 0)
    train(make_net(cfg), SceneNetLoss.from_config(cfg),
          loader(torch.utils.data.Subset(ds, tr)), cfg, tmp_path / "run",
          val_loader=loader(torch.utils.data.Subset(ds, va), shuffle=False), max_iters=1,
          log=False, split=record)
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["selection"] == "val" and saved["val_indices"] == va
    assert "TEST" in split_record("test", 6, None, None, None, 0)["note"]


def test_destination_errors_leave_existing_files_alone(cfg, tmp_path):
    ds, crit = make_data(cfg, n=2), SceneNetLoss.from_config(cfg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        train(make_net(cfg), crit, loader(ds), cfg, run, max_iters=1, log=False)
    assert os.listdir(run) == ["notes.txt"]
    train(make_net(cfg), crit, loader(ds), cfg, run, max_iters=1, log=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "keep me" and (run / "last.pth").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create run directory"):
        train(make_net(cfg), crit, loader(ds), cfg, blocker / "run", max_iters=1, log=False)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "none", resume=True, log=False)


def test_bad_inputs_fail_with_one_line_errors(cfg, tmp_path):
    crit = SceneNetLoss.from_config(cfg)
    with pytest.raises(ValueError, match="dataset is empty"):
        train(make_net(cfg), crit, loader(make_data(cfg, n=0), shuffle=False), cfg,
              tmp_path / "e", log=False)
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        train(make_net(cfg), crit, loader(make_data(cfg, 2)), cfg, tmp_path / "a", amp=True,
              device="cpu", log=False)
    with pytest.raises(ValueError, match=r"AMP='fp8': expected one of \['off', 'fp16', 'bf16'\]"):
        train(make_net(cfg), crit, loader(make_data(cfg, 2)), cfg, tmp_path / "a", amp="fp8",
              device="cpu", log=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"criterion's tasks \['seg'\] differ"):
        train(make_net(cfg), crit.restricted_to(["seg"]), loader(make_data(cfg, 2)), cfg,
              tmp_path / "t", log=False)
    assert not (tmp_path / "e" / "last.pth").exists()


def test_checkpoint_compatibility_and_safety(cfg, tmp_path):
    net = make_net(cfg)
    path = save_checkpoint(tmp_path / "ckpt.pth", net, iteration=7, config={"X": 1})
    other = make_net(cfg, seed=5)
    assert load_checkpoint(path, other)["iteration"] == 7
    assert state_equal(other.state_dict(), net.state_dict())
    # A different task list is named as such.
    two = SceneNet(cfg.TASKS_NUM_CLASS[:2], cfg.BACKBONE_NAME, cfg.WIDTH_MULT,
                   tasks=cfg.TASKS[:2])
    with pytest.raises(ValueError, match=r"tasks \['seg', 'sn', 'depth'\] but the network has "
                                         r"tasks \['seg', 'sn'\]"):
        load_checkpoint(path, two)
    # A different architecture (width) names the differing keys; the net is left untouched.
    wide = SceneNet(cfg.TASKS_NUM_CLASS, cfg.BACKBONE_NAME, 0.25, tasks=cfg.TASKS)
    snapshot = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatch .*backbone\.conv1\.weight") as err:
        load_checkpoint(path, wide)
    assert "\n" not in str(err.value) and state_equal(snapshot, wide.state_dict())
    # A reference-style state dict with DataParallel's 'module.' prefix loads.
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ref.pth")
    load_checkpoint(tmp_path / "ref.pth", make_net(cfg, seed=2))
    # Truncated file: one clear error.
    data = Path(path).read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupt"):
        load_checkpoint(tmp_path / "trunc.pth", make_net(cfg))
    # A file that needs arbitrary unpickling is refused, and its payload never runs.
    marker = tmp_path / "executed"
    torch.save({"model": Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="arbitrary unpickling"):
        load_checkpoint(tmp_path / "evil.pth", make_net(cfg))
    assert not marker.exists()


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_resume_from_truncated_checkpoint_is_refused_and_kept(cfg, tmp_path):
    ds, crit = make_data(cfg, n=2), SceneNetLoss.from_config(cfg)
    train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "r", max_iters=2, log=False)
    last = tmp_path / "r" / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*last\.pth"):
        train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "r", max_iters=4, resume=True,
              log=False)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest


def test_best_checkpoint_follows_select_metric_and_direction(cfg, tmp_path):
    scores = iter([1.0, 3.0, 2.0])

    def eval_fn(net, val_loader, device):
        assert not net.training
        return {"seg": {"score": next(scores)}}

    ds = make_data(cfg, n=2)
    result = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "r",
                   val_loader=loader(ds, shuffle=False), max_iters=6, eval_fn=eval_fn,
                   select_metric="max:val/seg/score", log=False)
    assert result.history["val/seg/score"] == [(2, 1.0), (4, 3.0), (6, 2.0)]
    assert read_checkpoint(result.best_checkpoint)["iteration"] == 4
    from lib.training.engine import Selection
    assert Selection.parse("val/seg/mIoU").mode == "max"
    assert Selection.parse("val/depth/abs_err").mode == "min"
    assert Selection.parse("val/loss/sn").mode == "min"
    with pytest.raises(ValueError, match="prefix it with 'max:' or 'min:'"):
        train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "s",
              val_loader=loader(ds), select_metric="val/seg/score", log=False)


# ----------------------------------------------------------------- with lib.data's real layout
def test_make_loaders_split_is_disjoint_from_train_and_test(synthetic_cfg, tmp_path):
    cfg = synthetic_cfg
    loaders = make_loaders(cfg, selection="val", val_fraction=0.25, seed=0)
    split = loaders.split
    assert not set(split["train_indices"]) & set(split["val_indices"])
    assert sorted(split["train_indices"] + split["val_indices"]) == list(range(
        split["num_train_list"]))
    train_names = {b for batch in loaders.train for b in batch["name"]}
    val_names = {b for batch in loaders.val for b in batch["name"]}
    test_names = {b for batch in loaders.test for b in batch["name"]}
    assert val_names and train_names and test_names
    assert not val_names & train_names and not val_names & test_names
    # The selection loader reads full-size images without augmentation (what metrics need).
    assert next(iter(loaders.val))["img"].shape[-2:] == tuple(cfg.IMAGE_SHAPE)
    assert make_loaders(cfg, selection="val", val_fraction=0.25, seed=0).split == split
    ref = make_loaders(cfg, selection="test", seed=0)
    assert ref.split["selection"] == "test" and ref.val is ref.test


# A run of test_sigkilled_run_resumes_exactly_with_shuffled_augmenting_loader, killed by
# SIGKILL (no handler, no finally) inside the loss of its ``at``-th training step.
KILLED_RUN = """
import os, signal, sys
import torch
from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet
from lib.training import make_loaders, train

root, run_dir, at, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = load_config("nyuv2_3task", profile="tiny", DATA_ROOT=root)

class KilledLoss(SceneNetLoss):
    calls = 0
    def per_task(self, preds, batch):
        if torch.is_grad_enabled():
            KilledLoss.calls += 1
            if KilledLoss.calls == at:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().per_task(preds, batch)

base = SceneNetLoss.from_config(cfg)
loaders = make_loaders(cfg, val_fraction=0.25, seed=1, num_workers=workers)
torch.manual_seed(0)
train(SceneNet.from_config(cfg), KilledLoss(base.dataset, base.tasks, base.lambdas),
      loaders.train, cfg, run_dir, val_loader=loaders.val, max_iters=8, seed=1, log=False)
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkilled_run_resumes_exactly_with_shuffled_augmenting_loader(synthetic_cfg, tmp_path,
                                                                       workers):
    """The training order is shuffled per epoch (lib.data's loaders) and augmentation random;
    a run killed by SIGKILL in its 7th step (last checkpoint: iteration 6, in the second
    epoch) and resumed, both reading with ``workers`` processes, ends with weights equal to an
    uninterrupted run's that read in one process."""
    import signal
    import subprocess
    import sys

    cfg = synthetic_cfg
    loaders = make_loaders(cfg, val_fraction=0.25, seed=1)
    common = dict(val_loader=loaders.val, max_iters=8, seed=1, log=False)
    full = train(make_net(cfg), SceneNetLoss.from_config(cfg), loaders.train, cfg,
                 tmp_path / "a", **common)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(cfg.DATA_ROOT),
                             str(tmp_path / "b"), "7", str(workers)], capture_output=True,
                            text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
                                 "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = read_checkpoint(tmp_path / "b" / "last.pth")
    assert saved["iteration"] == 6 and saved["data"]["epoch"] >= 1
    with_workers = make_loaders(cfg, val_fraction=0.25, seed=1, num_workers=workers)
    resumed = train(make_net(cfg), SceneNetLoss.from_config(cfg), with_workers.train, cfg,
                    tmp_path / "b", resume=True, **{**common, "val_loader": with_workers.val})
    assert state_equal(full.net.state_dict(), resumed.net.state_dict())
    assert full.history["loss/total"] == resumed.history["loss/total"]


def test_evaluate_writes_metrics_json_for_dense_and_compact(synthetic_cfg, tmp_path):
    cfg = synthetic_cfg
    test = make_loaders(cfg, seed=0).test
    metrics = evaluate(make_net(cfg), test, cfg, out_path=tmp_path / "m.json", progress=False)
    assert set(metrics) == set(cfg.TASKS)
    assert json.loads((tmp_path / "m.json").read_text()).keys() == metrics.keys()
    compact = pruned_compact(cfg)
    assert set(evaluate(compact, test, cfg, progress=False)) == {"seg", "sn"}
    assert metrics_path_for(tmp_path / "best.pth") == tmp_path / "best.metrics.json"


def test_resume_of_a_finished_run_rewrites_final_files_only(cfg, tmp_path):
    ds, crit = make_data(cfg, n=2), SceneNetLoss.from_config(cfg)
    done = train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "r", max_iters=2, log=False)
    (tmp_path / "r" / "base_model.pth").unlink()  # as if killed right after the last checkpoint
    again = train(make_net(cfg, seed=4), crit, loader(ds), cfg, tmp_path / "r", max_iters=2,
                  resume=True, log=False)
    assert again.iterations == 2 and state_equal(again.net.state_dict(), done.net.state_dict())
    assert (tmp_path / "r" / "base_model.pth").is_file()
    with pytest.raises(ValueError, match="beyond max_iters=1"):
        train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "r", max_iters=1, resume=True,
              log=False)


def test_sgd_cosine_from_the_config_resumes_exactly_and_is_recorded(cfg, tmp_path):
    import math
    cfg.OPTIMIZER, cfg.MOMENTUM, cfg.LR_SCHEDULE = "sgd", 0.9, "cosine"
    cfg.INIT_LR, cfg.DECAY_LR_FREQ = 0.01, 4
    ds = make_data(cfg, n=5)
    common = dict(max_iters=4, seed=1, log=False)
    full = train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "a",
                 **common)
    # lr after iteration i (1-based) is the cosine from INIT_LR to 0 over DECAY_LR_FREQ steps.
    expected = [0.01 * (1 + math.cos(math.pi * i / 4)) / 2 for i in range(1, 5)]
    assert [v for _, v in full.history["lr"]] == pytest.approx(expected)
    last = read_checkpoint(tmp_path / "a" / "last.pth")
    assert last["schedule"]["optimizer"] == "sgd" and last["schedule"]["lr_schedule"] == "cosine"
    assert last["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert any("momentum_buffer" in s for s in last["optimizer"]["state"].values())
    with pytest.raises(KeyboardInterrupt):
        train(make_net(cfg), FailingLoss(cfg, at=3, mode="interrupt"), loader(ds), cfg,
              tmp_path / "b", **{**common, "max_iters": 4})
    resumed = train(make_net(cfg, seed=4), SceneNetLoss.from_config(cfg), loader(ds), cfg,
                    tmp_path / "b", resume=True, **common)
    assert state_equal(full.net.state_dict(), resumed.net.state_dict())
    # Another optimiser or schedule would misread the saved states: refused before loading.
    cfg.OPTIMIZER, cfg.MOMENTUM = "adam", 0.0
    with pytest.raises(ValueError, match=r"cannot resume .*differs in .*'optimizer'.*optimizer: 'sgd' -> 'adam'"):
        train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "b",
              resume=True, **{**common, "max_iters": 6})
    cfg.MOMENTUM = 0.5
    with pytest.raises(ValueError, match="MOMENTUM 0.5 is an SGD setting"):
        train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(ds), cfg, tmp_path / "c",
              **common)
    assert not (tmp_path / "c").exists()
