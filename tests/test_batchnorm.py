"""lib.training.batchnorm: BatchNorm statistics recomputed as the plain average over training
batches, weights and RNG untouched, applied by train / finetune when the config asks, exact on
resume, refused when the setting is malformed."""
import pytest
import torch
import torch.nn as nn

from lib.losses import SceneNetLoss
from lib.models import MultiTaskModel
from lib.training import finetune, mask_snapshot, read_checkpoint, train
from lib.training.batchnorm import (batchnorm_layers, recalibrate_batchnorm,
                                    recalibration_batches)
from test_training import (cfg, loader, make_data, make_net, pruned_compact,  # noqa: F401
                           state_equal)


class OneBN(MultiTaskModel):
    """A conv, one BatchNorm and a head: its statistics can be computed by hand."""

    def __init__(self):
        super().__init__()
        self.tasks = ["seg"]
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)

    def shared_modules(self):
        return {"conv": self.conv, "bn": self.bn}

    def task_modules(self, task):
        return {"head": self.head}

    def forward(self, x):
        return [self.head(self.bn(self.conv(x)))]

    def architecture(self):
        return {"model": "OneBN", "tasks": self.tasks}


def test_statistics_are_the_average_over_the_batches_and_nothing_else_moves():
    torch.manual_seed(0)
    net = OneBN().eval()
    net.bn.momentum = 0.3
    batches = [{"img": torch.randn(4, 3, 6, 6) * (i + 1)} for i in range(5)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    rng = torch.get_rng_state()
    used = recalibrate_batchnorm(net, batches, 3, torch.device("cpu"))
    assert used == 3
    with torch.no_grad():
        feats = [net.conv(b["img"]) for b in batches[:3]]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(net.bn.running_mean, means, atol=1e-5)
    assert torch.allclose(net.bn.running_var, variances, atol=1e-4)
    assert int(net.bn.num_batches_tracked) == 3
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert not net.training and net.bn.momentum == 0.3
    assert torch.equal(torch.get_rng_state(), rng)
    # Fewer batches than asked: all of them are used, and the count says so.
    assert recalibrate_batchnorm(net, batches[:2], 10, torch.device("cpu")) == 2


def test_errors_leave_the_statistics_training_left():
    net = OneBN()
    net.bn.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_batchnorm(net, [], 4, torch.device("cpu"))
    with pytest.raises(ValueError, match=">= 1"):
        recalibrate_batchnorm(net, [{"img": torch.randn(2, 3, 6, 6)}], 0, torch.device("cpu"))
    assert state_equal(net.state_dict(), before) and net.training
    assert recalibrate_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1)), [], 4,
                                 torch.device("cpu")) == 0   # no BatchNorm: nothing to do


def test_train_recalibrates_at_the_end_and_a_resumed_finished_run_matches(cfg, tmp_path):
    ds, crit = make_data(cfg, n=6), SceneNetLoss.from_config(cfg)
    plain = train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "plain", max_iters=3,
                  log=False)
    cfg.BN_RECALIBRATE_BATCHES = 2
    recal = train(make_net(cfg), crit, loader(ds), cfg, tmp_path / "recal", max_iters=3,
                  val_loader=loader(ds, shuffle=False), log=False)
    layers = zip(batchnorm_layers(plain.net), batchnorm_layers(recal.net))
    assert all(int(r.num_batches_tracked) == 2 for _, r in layers)
    # Same weights (recalibration runs after the last step); other statistics.
    weights = [k for k in plain.net.state_dict() if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(plain.net.state_dict()[k], recal.net.state_dict()[k]) for k in weights)
    assert not torch.equal(batchnorm_layers(plain.net)[0].running_mean,
                           batchnorm_layers(recal.net)[0].running_mean)
    assert set(recal.final_val) >= {"val/loss"}
    saved = torch.load(tmp_path / "recal" / "base_model.pth", weights_only=True)
    assert state_equal(saved, recal.net.state_dict())
    # The finished run resumed: the same batches, the same statistics, the same file.
    (tmp_path / "recal" / "base_model.pth").unlink()
    again = train(make_net(cfg, seed=5), crit, loader(ds), cfg, tmp_path / "recal",
                  max_iters=3, val_loader=loader(ds, shuffle=False), resume=True, log=False)
    assert state_equal(again.net.state_dict(), recal.net.state_dict())
    assert read_checkpoint(tmp_path / "recal" / "last.pth")["config"]["BN_RECALIBRATE_BATCHES"] == 2


def test_finetune_recalibrates_with_masks_held(cfg, tmp_path):
    cfg.BN_RECALIBRATE_BATCHES = 2
    net = pruned_compact(cfg)
    masks = mask_snapshot(net)
    result = finetune(net, SceneNetLoss.from_config(cfg), loader(make_data(cfg, n=4)), cfg,
                      tmp_path / "ft", max_iters=2, log=False)
    assert all(int(m.num_batches_tracked) == 2 for m in batchnorm_layers(result.net))
    assert all(torch.equal(mask_snapshot(result.net)[k], v) for k, v in masks.items())


@pytest.mark.parametrize("value", [-1, 1.5, True, "8"])
def test_malformed_setting_is_refused_before_anything_is_written(cfg, tmp_path, value):
    cfg.BN_RECALIBRATE_BATCHES = value
    with pytest.raises(ValueError, match="BN_RECALIBRATE_BATCHES must be an integer >= 0"):
        train(make_net(cfg), SceneNetLoss.from_config(cfg), loader(make_data(cfg, n=2)), cfg,
              tmp_path / "run", max_iters=1, log=False)
    assert not (tmp_path / "run").exists()
    assert recalibration_batches(object()) == 0   # a config without it: the reference's
