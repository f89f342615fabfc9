"""NYUv2 (MTAN format) metrics, the Δ against the single-task constants, CIFAR-100 accuracy:
each against numbers worked out by hand in the comments."""
import math

import pytest
import torch

from lib.metrics_minmax import (NYUV2_SINGLE_TASK, DomainAccuracy, NYUv2MTANEval,
                                delta_vs_single_task, mean_accuracy)


def seg_logits(labels, num_class=3):
    """Logits whose argmax is ``labels`` (N x H x W)."""
    return torch.nn.functional.one_hot(torch.tensor(labels), num_class).permute(0, 3, 1, 2).float()


def test_seg_miou_and_pixel_accuracy_by_hand():
    ev = NYUv2MTANEval(["seg"], num_class=3)
    # target  0 0 1 | -1 2 2      prediction 0 1 1 | 2 2 0   (class 2 = index 2)
    target = torch.tensor([[[0, 0, 1], [-1, 2, 2]]])
    ev.update([seg_logits([[[0, 1, 1], [2, 2, 0]]])], {"seg": target[:, None]})
    # valid pixels: 5 (the -1 is ignored). Confusion (gt row, pred col):
    # class 0: gt {0,0} pred {0,1} -> TP 1; class 1: gt {1}, pred 1 twice -> TP 1;
    # class 2: gt {2,2}, pred {2,0} -> TP 1.
    # IoU0 = 1 / (2 + 2 - 1) = 1/3 (pred 0 at (0,0) and (1,2)); IoU1 = 1 / (1 + 2 - 1) = 1/2;
    # IoU2 = 1 / (2 + 1 - 1) = 1/2 (the pred 2 at the ignored pixel does not count).
    out = ev.compute()["seg"]
    assert out["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert out["Pixel Acc"] == pytest.approx(3 / 5)


def test_seg_miou_averages_only_classes_that_occur():
    ev = NYUv2MTANEval(["seg"], num_class=3)
    ev.update([seg_logits([[[0, 0]]])], {"seg": torch.tensor([[[0, 1]]])})   # (N, H, W) target
    # class 0: TP 1, union 2 -> 1/2; class 1: TP 0, union 1 -> 0; class 2 never occurs.
    assert ev.compute()["seg"]["mIoU"] == pytest.approx(0.25)


def depth_batch(pred, target):
    return [torch.tensor(pred)[:, None]], {"depth": torch.tensor(target)[:, None]}


def test_depth_errors_pool_pixels_or_average_batches():
    pixel, batch = NYUv2MTANEval(["depth"]), NYUv2MTANEval(["depth"], averaging="batch")
    first = depth_batch([[[1.0, 2.0, 9.0]]], [[[2.0, 2.0, 0.0]]])        # 0 = invalid
    second = depth_batch([[[4.0, 4.0, 4.0, 4.0]]], [[[1.0, 2.0, 4.0, 8.0]]])
    for ev in (pixel, batch):
        ev.update(*first)
        ev.update(*second)
    # |p - g|: batch 1 -> 1, 0 (2 valid); batch 2 -> 3, 2, 0, 4.  rel: 0.5, 0; 3, 1, 0, 0.5.
    assert pixel.compute()["depth"] == pytest.approx({"abs_err": 10 / 6, "rel_err": 5 / 6})
    # reference: mean of the per-batch means: abs (0.5 + 9/4) / 2, rel (0.25 + 4.5/4) / 2
    assert batch.compute()["depth"] == pytest.approx({"abs_err": (0.5 + 2.25) / 2,
                                                      "rel_err": (0.25 + 1.125) / 2})


def unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def normal_batch(preds, targets):
    """N=1, H=1, W=len: vectors laid out along the width."""
    p = torch.stack(preds, dim=1)[None, :, None]      # 1 x 3 x 1 x W
    g = torch.stack(targets, dim=1)[None, :, None]
    return [p], {"normal": g}


def test_normal_angles_by_hand():
    z = unit(0, 0, 1)
    # angles 0, 10, 20, 45 and 90 degrees between prediction and target; one invalid target.
    preds = [z, unit(0, math.sin(math.radians(10)), math.cos(math.radians(10))),
             unit(math.sin(math.radians(20)), 0, math.cos(math.radians(20))),
             unit(1, 0, 1), unit(1, 0, 0), z]
    targets = [z, z, z, z, z, torch.zeros(3)]
    ev = NYUv2MTANEval(["normal"])
    ev.update(*normal_batch(preds, targets))
    out = ev.compute()["normal"]
    assert out["Angle Mean"] == pytest.approx((0 + 10 + 20 + 45 + 90) / 5, abs=1e-3)
    assert out["Angle Median"] == pytest.approx(20, abs=1e-3)
    assert out["Angle 11.25"] == pytest.approx(40)      # 0, 10 of 5
    assert out["Angle 22.5"] == pytest.approx(60)       # 0, 10, 20
    assert out["Angle 30"] == pytest.approx(60)


def test_normal_mask_sum_is_the_references():
    """A valid target whose components sum to 0 counts by default, not in the reference."""
    tilted = unit(1, -1, 0)
    targets = [unit(0, 0, 1), tilted]
    corrected, reference = NYUv2MTANEval(["normal"]), NYUv2MTANEval(["normal"],
                                                                    normal_mask="sum")
    for ev in (corrected, reference):
        ev.update(*normal_batch([unit(0, 1, 1), tilted], targets))
    # default: angles 45 (first) and 0 (second) -> mean 22.5; reference drops the second: 45.
    # (float32 unit vectors: their self-angle is up to ~0.02 degree, hence the tolerance)
    assert corrected.compute()["normal"]["Angle Mean"] == pytest.approx(22.5, abs=0.02)
    assert reference.compute()["normal"]["Angle Mean"] == pytest.approx(45, abs=1e-3)


def test_batch_averaged_median_is_the_mean_of_batch_medians():
    z = unit(0, 0, 1)
    at = [unit(math.sin(math.radians(a)), 0, math.cos(math.radians(a))) for a in (10, 20, 60)]
    ev = NYUv2MTANEval(["normal"], averaging="batch")
    pooled = NYUv2MTANEval(["normal"])
    for e in (ev, pooled):
        e.update(*normal_batch([at[0]], [z]))               # median 10
        e.update(*normal_batch([at[1], at[2]], [z, z]))     # median 40
    assert ev.compute()["normal"]["Angle Median"] == pytest.approx(25, abs=1e-3)
    assert pooled.compute()["normal"]["Angle Median"] == pytest.approx(20, abs=1e-3)
    assert ev.compute()["normal"]["Angle Mean"] == pytest.approx((10 + 40) / 2, abs=1e-3)
    assert pooled.compute()["normal"]["Angle Mean"] == pytest.approx(30, abs=1e-3)


def test_delta_against_the_reference_single_task_constants():
    metrics = {"seg": {"mIoU": 0.5}, "depth": {"abs_err": 0.5}, "normal": {"Angle Mean": 24.0}}
    # seg +(0.5 - 0.4337)/0.4337, depth -(0.5 - 0.5224)/0.5224, normal -(24 - 22.4)/22.4
    expected = 100 / 3 * ((0.5 - 0.4337) / 0.4337 + (0.5224 - 0.5) / 0.5224
                          - (24.0 - 22.4) / 22.4)
    assert delta_vs_single_task(metrics) == pytest.approx(expected)
    assert NYUV2_SINGLE_TASK == {"seg": 0.4337, "depth": 0.5224, "normal": 22.40}
    assert delta_vs_single_task({"seg": {"mIoU": 0.4337}}) == pytest.approx(0)
    with pytest.raises(ValueError, match="no single-task baseline for task 'sn'"):
        delta_vs_single_task({"sn": {"Angle Mean": 1.0}})


def test_domain_accuracy_and_mean():
    acc = DomainAccuracy(["class_0", "class_1"])
    acc.update("class_0", torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]))  # 1/2
    acc.update("class_0", torch.tensor([[0.0, 1.0]]), torch.tensor([1]))                 # 2/3
    acc.update("class_1", torch.tensor([[0.0, 1.0]]), torch.tensor([1]))                 # 1/1
    out = acc.compute()
    assert out == {"class_0": {"Acc": pytest.approx(2 / 3)}, "class_1": {"Acc": 1.0}}
    assert mean_accuracy(out) == pytest.approx((2 / 3 + 1) / 2)


def test_errors_are_one_line_and_nothing_non_finite_is_returned():
    ev = NYUv2MTANEval(["depth", "normal"])
    with pytest.raises(ValueError, match="no valid depth pixel"):
        ev.compute()
    with pytest.warns(RuntimeWarning, match="no valid depth pixel"):
        ev.update([torch.ones(1, 1, 1, 2), torch.ones(1, 3, 1, 2)],
                  {"depth": torch.zeros(1, 1, 1, 2), "normal": torch.ones(1, 3, 1, 2)})
    with pytest.raises(ValueError, match="depth target has shape"):
        ev.update([torch.ones(1, 1, 2, 2), torch.ones(1, 3, 2, 2)],
                  {"depth": torch.ones(1, 1, 1, 2), "normal": torch.ones(1, 3, 2, 2)})
    with pytest.raises(ValueError, match="averaging='mean' is not a metric option"):
        NYUv2MTANEval(averaging="mean")
    with pytest.raises(ValueError, match="no image was evaluated for task"):
        DomainAccuracy(["class_3"]).compute()
