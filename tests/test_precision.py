"""Precision and layout of a run (lib.training.precision): bf16 autocast on CPU, channels_last,
recorded in the settings (resume refuses a change) and exactly resumable."""
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import BatchItems, make_random_batch
from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet
from lib.training import evaluate, train
from lib.training.precision import Precision


@pytest.fixture
def cfg():
    return load_config("nyuv2_3task", profile="tiny")


def data(cfg, n=6):
    return BatchItems(make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, batch_size=n, seed=0))


def net(cfg):
    torch.manual_seed(0)
    return SceneNet.from_config(cfg)


def run(cfg, path, **kwargs):
    ds = data(cfg)
    return train(net(cfg), SceneNetLoss.from_config(cfg), DataLoader(ds, batch_size=2,
                                                                     shuffle=True),
                 cfg, path, max_iters=4, seed=2, log=False, **kwargs)


def test_bf16_channels_last_trains_in_reduced_precision_and_resumes_exactly(cfg, tmp_path):
    fp32 = run(cfg, tmp_path / "fp32")
    bf16 = run(cfg, tmp_path / "bf16", amp="bf16", channels_last=True)
    weights = bf16.net.state_dict()
    # The forward ran in bfloat16 (other weights), the parameters stayed float32 and the
    # network is back in the default layout.
    assert any(not torch.equal(v, fp32.net.state_dict()[k]) for k, v in weights.items()
               if v.is_floating_point())
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    conv = next(v for v in weights.values() if v.dim() == 4)
    assert conv.is_contiguous()
    # An interrupted bf16 run resumes to the same weights; another precision is refused.
    resumed = train(net(cfg), SceneNetLoss.from_config(cfg),
                    DataLoader(data(cfg), batch_size=2, shuffle=True), cfg, tmp_path / "cut",
                    max_iters=2, seed=2, log=False, amp="bf16", channels_last=True)
    assert resumed.iterations == 2
    resumed = train(net(cfg), SceneNetLoss.from_config(cfg),
                    DataLoader(data(cfg), batch_size=2, shuffle=True), cfg, tmp_path / "cut",
                    max_iters=4, seed=2, log=False, amp="bf16", channels_last=True,
                    resume=True, allow_changed=["max_iters"])
    assert all(torch.equal(v, resumed.net.state_dict()[k]) for k, v in weights.items())
    for change, message in (({"amp": "off", "channels_last": True},
                             r"\['amp'\] \(amp: 'bf16' -> 'off'\)"),
                            ({"amp": "bf16", "channels_last": False},
                             r"channels_last: True -> False")):
        with pytest.raises(ValueError, match=message):
            train(net(cfg), SceneNetLoss.from_config(cfg),
                  DataLoader(data(cfg), batch_size=2, shuffle=True), cfg, tmp_path / "cut",
                  max_iters=4, seed=2, log=False, resume=True, **change)


def test_evaluate_in_bf16_computes_float32_metrics_close_to_float32(cfg):
    model = net(cfg)
    loader = DataLoader(data(cfg, 4), batch_size=2)
    exact = evaluate(model, loader, cfg, progress=False)
    reduced = evaluate(model, loader, cfg, progress=False, amp="bf16", channels_last=True)
    assert reduced.keys() == exact.keys()
    assert any(reduced[t][m] != exact[t][m] for t in exact for m in exact[t]
               if exact[t][m] is not None)
    for t in exact:
        for m, v in exact[t].items():
            if v is not None:
                assert reduced[t][m] == pytest.approx(v, rel=0.1, abs=0.05), (t, m)
    assert next(model.parameters()).is_contiguous()


def test_precision_comes_from_the_config_and_is_checked(cfg):
    assert Precision.resolve(cfg) == Precision("off", False)
    cfg.AMP, cfg.CHANNELS_LAST = "bf16", True
    assert Precision.resolve(cfg) == Precision("bf16", True)
    assert Precision.resolve(cfg, amp=True, channels_last=False) == Precision("fp16", False)
    with pytest.raises(ValueError, match="CHANNELS_LAST='yes': expected True or False"):
        Precision.resolve(cfg, channels_last="yes")
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        Precision("fp16").check(torch.device("cpu"))
