"""lib.metrics against values computed by hand on tiny hand-made examples (quirks included)."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from conftest import make_random_batch
from lib.config import load_config
from lib.metrics import (DELTA_METRICS, LOWER_IS_BETTER, METRIC_NAMES, SceneNetEval, delta_mtl,
                         evaluate, per_task_delta)
from lib.models import SceneNet


def row(values):
    """A 1 x 1 x 1 x W tensor (one image, one channel, one row)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def seg_logits(classes, num_class, scale=10.0):
    """Logits 1 x C x 1 x W whose argmax is ``classes`` (margin ``scale``)."""
    onehot = torch.nn.functional.one_hot(torch.tensor(classes), num_class).float() * scale
    return onehot.t().reshape(1, num_class, 1, -1)


def ce_of_onehot(correct, num_class, scale=10.0):
    """Cross-entropy of one pixel whose logits are ``scale`` on one class, 0 elsewhere."""
    if correct:
        return math.log(1 + (num_class - 1) * math.exp(-scale))
    return math.log(math.exp(scale) + num_class - 1)


# ---------------------------------------------------------------- segmentation

def test_miou_drops_zero_tp_class_and_upsamples_nearest():
    ev = SceneNetEval("nyuv2_3", ["seg"], [3], (1, 4))
    # prediction at half width: nearest upsampling gives [0, 0, 1, 1]
    ev.update([seg_logits([0, 1], 3)], {"seg": row([0, 0, 1, 2]).long()})
    m = ev.compute()["seg"]
    # IoU_0 = 2/(2+2-2) = 1, IoU_1 = 1/(1+2-1) = 1/2, class 2 has TP 0 -> dropped
    assert m["mIoU"] == pytest.approx((1 + 0.5) / 2)
    assert m["Pixel Acc"] == pytest.approx(3 / 4)
    expected_err = (3 * ce_of_onehot(True, 3) + ce_of_onehot(False, 3)) / 4
    assert m["err"] == pytest.approx(expected_err, rel=1e-5)

    present = SceneNetEval("nyuv2_3", ["seg"], [3], (1, 4), miou="present")
    present.update([seg_logits([0, 1], 3)], {"seg": row([0, 0, 1, 2]).long()})
    assert present.compute()["seg"]["mIoU"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_cityscapes_void_counts_as_wrong_in_reference_pixel_acc():
    gt = row([-1, 0, 1, 1]).long()
    logits = seg_logits([0, 0, 1, 0], 2)
    ref = SceneNetEval("cityscapes", ["seg"], [2], (1, 4))
    ref.update([logits], {"seg": gt})
    m = ref.compute()["seg"]
    assert m["Pixel Acc"] == pytest.approx(2 / 4)          # void pixel counted as a miss
    # confusion matrix ignores void: IoU_0 = 1/(1+2-1), IoU_1 = 1/(2+1-1)
    assert m["mIoU"] == pytest.approx(0.5)
    # CE ignores -1: 3 pixels, pixel 3 wrong
    assert m["err"] == pytest.approx((2 * ce_of_onehot(True, 2) + ce_of_onehot(False, 2)) / 3,
                                     rel=1e-5)

    valid = SceneNetEval("cityscapes", ["seg"], [2], (1, 4), pixel_acc="valid")
    valid.update([logits], {"seg": gt})
    assert valid.compute()["seg"]["Pixel Acc"] == pytest.approx(2 / 3)


def test_nyu_ignore_255_is_excluded_from_pixel_acc():
    ev = SceneNetEval("nyuv2_3", ["seg"], [2], (1, 4))
    ev.update([seg_logits([0, 0, 1, 0], 2)], {"seg": row([255, 0, 1, 1]).to(torch.uint8)})
    assert ev.compute()["seg"]["Pixel Acc"] == pytest.approx(2 / 3)


def test_pixel_acc_is_batch_size_weighted_across_unequal_batches():
    ref = SceneNetEval("nyuv2_3", ["seg"], [2], (1, 2))
    valid = SceneNetEval("nyuv2_3", ["seg"], [2], (1, 2), pixel_acc="valid")
    # batch A: 1 image, 1 labelled pixel, correct -> accuracy 1
    batch_a = {"seg": torch.tensor([[[[0, 255]]]])}
    pred_a = seg_logits([0, 1], 2)
    # batch B: 3 images, 2 labelled pixels, one correct -> accuracy 1/2
    batch_b = {"seg": torch.tensor([[[[0, 255]]], [[[255, 255]]], [[[1, 255]]]])}
    pred_b = torch.cat([seg_logits([0, 0], 2), seg_logits([0, 0], 2), seg_logits([0, 0], 2)])
    for ev in (ref, valid):
        ev.update([pred_a], batch_a)
        ev.update([pred_b], batch_b)
    assert ref.compute()["seg"]["Pixel Acc"] == pytest.approx((1 * 1 + 3 * 0.5) / 4)
    assert valid.compute()["seg"]["Pixel Acc"] == pytest.approx((1 + 1) / (1 + 2))


def test_weighted_seg_err_uses_class_weights():
    ev = SceneNetEval("taskonomy", ["seg"], [2], (1, 2), seg_class_weight=[2.0, 1.0])
    ev.update([seg_logits([0, 0], 2)], {"seg": row([0, 1]).long()})
    expected = (2 * ce_of_onehot(True, 2) + 1 * ce_of_onehot(False, 2)) / (2 + 1)
    assert ev.compute()["seg"]["err"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- surface normals

def normals_case(gt_vectors, pred_vectors):
    gt = torch.tensor(gt_vectors, dtype=torch.float32).t().reshape(1, 3, 1, -1)
    pred = torch.tensor(pred_vectors, dtype=torch.float32).t().reshape(1, 3, 1, -1)
    return pred, {"normal": gt}


def test_normal_angles_thresholds_mean_and_median():
    angles = [0, 10, 20, 25, 40, 60]
    preds = [[math.sin(math.radians(a)), 0.0, math.cos(math.radians(a))] for a in angles]
    gts = [[0.0, 0.0, 200.0]] * len(angles)
    preds.append([1.0, 0.0, 0.0])          # invalid target pixel: would be 90 degrees
    gts.append([255.0, 255.0, 255.0])
    pred, batch = normals_case(gts, preds)
    for median in ("exact", "histogram"):
        ev = SceneNetEval("nyuv2_3", ["sn"], [3], (1, 7), angle_median=median)
        ev.update([pred], batch)
        m = ev.compute()["sn"]
        assert m["Angle Mean"] == pytest.approx(155 / 6, abs=1e-3)
        assert m["Angle Median"] == pytest.approx((20 + 25) / 2, abs=1e-3)
        assert m["Angle 11.25"] == pytest.approx(100 * 2 / 6)
        assert m["Angle 22.5"] == pytest.approx(100 * 3 / 6)
        assert m["Angle 30"] == pytest.approx(100 * 4 / 6)
        assert m["Angle 45"] == pytest.approx(100 * 5 / 6)


def test_normals_raw_encoding_quirk_and_decoded_variant():
    # target ~(0, 0, 1) as stored in the PNG, (n + 1) * 127.5; prediction exactly (0, 0, 1)
    pred, batch = normals_case([[127.5, 127.5, 254.0]], [[0.0, 0.0, 1.0]])
    ref = SceneNetEval("nyuv2_3", ["sn"], [3], (1, 1))
    ref.update([pred], batch)
    # the raw vector (127.5, 127.5, 254) is ~35 degrees away from (0, 0, 1)
    expected = math.degrees(math.acos(254 / math.sqrt(2 * 127.5**2 + 254**2)))
    assert ref.compute()["sn"]["Angle Mean"] == pytest.approx(expected, abs=1e-3)
    decoded = SceneNetEval("nyuv2_3", ["sn"], [3], (1, 1), normals="decoded")
    decoded.update([pred], batch)
    assert decoded.compute()["sn"]["Angle Mean"] == pytest.approx(0.0, abs=0.05)


def test_any_channel_255_is_invalid_in_reference_only_all_three_when_decoded():
    # (0, 0, 1) encodes to (127.5, 127.5, 255): the reference drops it (max channel == 255)
    gts = [[127.5, 127.5, 255.0], [255.0, 255.0, 255.0], [255.0, 127.5, 127.5]]
    preds = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    pred, batch = normals_case(gts, preds)
    ref = SceneNetEval("nyuv2_3", ["sn"], [3], (1, 3))
    with pytest.warns(RuntimeWarning, match="no valid target pixel"):
        ref.update([pred], batch)
    decoded = SceneNetEval("nyuv2_3", ["sn"], [3], (1, 3), normals="decoded")
    decoded.update([pred], batch)
    # decoded keeps pixels 0 (0 degrees) and 2 ((1, 0, 0) vs (0, 1, 0): 90 degrees)
    assert decoded.compute()["sn"]["Angle Mean"] == pytest.approx(45.0, abs=0.05)
    assert decoded.compute()["sn"]["Angle 45"] == pytest.approx(50.0)


def test_angle_median_pools_pixels_across_batches():
    ev = SceneNetEval("taskonomy", ["sn"], [3], (1, 2))
    hist = SceneNetEval("taskonomy", ["sn"], [3], (1, 2), angle_median="histogram")
    # batch 1: angles 5 and 50; batch 2: angle 30 and an invalid (255) target pixel
    for angles, gts in (([5, 50], [[0.0, 0.0, 1.0]] * 2),
                        ([30, 0], [[0.0, 0.0, 1.0], [255.0, 255.0, 255.0]])):
        preds = [[math.sin(math.radians(a)), 0.0, math.cos(math.radians(a))] for a in angles]
        pred, batch = normals_case(gts, preds)
        ev.update([pred], batch)
        hist.update([pred], batch)
    # pooled angles 5, 50, 30 -> median 30 (not the mean of per-batch medians, 28.75)
    assert ev.compute()["sn"]["Angle Median"] == pytest.approx(30, abs=1e-3)
    assert hist.compute()["sn"]["Angle Median"] == pytest.approx(30, abs=1e-3)
    assert ev.compute()["sn"]["Angle Mean"] == pytest.approx(85 / 3, abs=1e-3)


# ---------------------------------------------------------------- depth, keypoint, edge

def test_depth_errors_and_threshold_accuracies():
    gt = row([2.0, 2.0, 2.0, 2.0, 0.0])              # last pixel invalid (0)
    pred = row([2.2, 3.0, 3.8, 5.0, 9.0])            # ratios 1.1, 1.5, 1.9, 2.5
    for dataset in ("nyuv2_3", "cityscapes"):
        ev = SceneNetEval(dataset, ["depth"], [1], (1, 5))
        ev.update([pred], {"depth": gt})
        m = ev.compute()["depth"]
        assert m["abs_err"] == pytest.approx((0.2 + 1.0 + 1.8 + 3.0) / 4, rel=1e-5)
        assert m["rel_err"] == pytest.approx((0.1 + 0.5 + 0.9 + 1.5) / 4, rel=1e-5)
        assert m["sigma_1.25"] == pytest.approx(25.0)
        assert m["sigma_1.25^2"] == pytest.approx(50.0)
        assert m["sigma_1.25^3"] == pytest.approx(75.0)


def test_negative_depth_prediction_quirk_and_positive_variant():
    batch = {"depth": row([2.0, 2.0])}
    pred = row([2.0, -1.0])                 # max(-1/2, 2/-1) = -0.5 <= 1.25 in the reference
    ref = SceneNetEval("nyuv2_3", ["depth"], [1], (1, 2))
    ref.update([pred], batch)
    assert ref.compute()["depth"]["sigma_1.25"] == pytest.approx(100.0)
    fixed = SceneNetEval("nyuv2_3", ["depth"], [1], (1, 2), depth_sigma="positive")
    fixed.update([pred], batch)
    assert fixed.compute()["depth"]["sigma_1.25"] == pytest.approx(50.0)


def test_taskonomy_depth_uses_depth_mask_and_255():
    batch = {"depth": row([0.5, 255.0, 0.2, 0.4]), "depth_mask": row([1, 1, 0, 1])}
    ev = SceneNetEval("taskonomy", ["depth"], [1], (1, 4))
    ev.update([row([0.6, 0.0, 0.0, 0.2])], batch)
    m = ev.compute()["depth"]
    assert m["abs_err"] == pytest.approx((0.1 + 0.2) / 2, rel=1e-5)
    assert m["rel_err"] == pytest.approx((0.1 / 0.5 + 0.2 / 0.4) / 2, rel=1e-5)
    assert (m["sigma_1.25"], m["sigma_1.25^2"], m["sigma_1.25^3"]) == pytest.approx((50, 50, 50))
    with pytest.raises(KeyError, match="depth_mask"):
        ev.update([row([0.6, 0.0, 0.0, 0.2])], {"depth": batch["depth"]})


def test_depth_abs_err_is_batch_weighted_not_pixel_pooled():
    ev = SceneNetEval("nyuv2_3", ["depth"], [1], (1, 2))
    # batch A: 1 image, 2 valid pixels, abs err 1
    ev.update([row([2.0, 4.0])], {"depth": row([1.0, 3.0])})
    # batch B: 2 images, 1 valid pixel in total, abs err 4
    ev.update([torch.cat([row([5.0, 0.0]), row([0.0, 0.0])])],
              {"depth": torch.cat([row([1.0, 0.0]), row([0.0, 0.0])])})
    assert ev.compute()["depth"]["abs_err"] == pytest.approx((1 * 1 + 2 * 4) / 3)


@pytest.mark.parametrize("task", ["keypoint", "edge"])
def test_keypoint_edge_l1_ignores_255(task):
    ev = SceneNetEval("taskonomy", [task], [1], (1, 4))
    ev.update([row([0.0, 9.0, 0.0, 0.25])], {task: row([0.5, 255.0, -1.0, 0.0])})
    ev.update([row([1.0, 1.0, 1.0, 1.0]).repeat(3, 1, 1, 1)], {task: row([0.0] * 4).repeat(3, 1, 1, 1)})
    # batch errors 1.75/3 (1 image) and 1.0 (3 images)
    assert ev.compute()[task]["err"] == pytest.approx((1 * 1.75 / 3 + 3 * 1.0) / 4)


# ---------------------------------------------------------------- cross-check, API, errors

def reference_by_hand(batches, num_class):
    """An independent numpy transcription of REFERENCE.md section 4 for seg/sn/depth."""
    cm = np.zeros((num_class, num_class))
    accs, sizes, abs_errs, angles, ratios = [], [], [], [], []
    for preds, batch in batches:
        seg_pred, sn_pred, depth_pred = [p.numpy() for p in preds]
        gt = batch["seg"].numpy().reshape(-1)
        kept = gt < num_class
        labels = seg_pred.argmax(1).reshape(-1)[kept]
        accs.append(np.mean(labels == gt[kept]))
        cm += confusion_matrix(gt[kept], labels, labels=np.arange(num_class))
        g = batch["normal"].numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
        p = sn_pred.transpose(0, 2, 3, 1).reshape(-1, 3)
        valid = g.max(1) != 255
        g = g[valid] / np.linalg.norm(g[valid], axis=1, keepdims=True)
        p = p[valid] / np.linalg.norm(p[valid], axis=1, keepdims=True)
        angles.append(np.degrees(np.arccos(np.clip((g * p).sum(1), -1, 1))))
        d, dp = batch["depth"].numpy(), depth_pred
        m = d > 3e-5
        abs_errs.append(np.abs(dp[m] - d[m]).sum() / m.sum())
        ratios.append(np.maximum(dp[m] / d[m], d[m] / dp[m]))
        sizes.append(len(gt) // np.prod(batch["seg"].shape[-2:]))
    tp = np.diag(cm)
    ious = [tp[i] / (cm[i].sum() + cm[:, i].sum() - tp[i]) for i in range(num_class) if tp[i] > 0]
    angles, ratios, sizes = np.concatenate(angles), np.concatenate(ratios), np.array(sizes)
    return {"mIoU": np.mean(ious), "Pixel Acc": (np.array(accs) * sizes).sum() / sizes.sum(),
            "Angle Mean": angles.mean(), "Angle Median": np.median(angles),
            "Angle 30": 100 * np.mean(angles <= 30),
            "abs_err": (np.array(abs_errs) * sizes).sum() / sizes.sum(),
            "sigma_1.25": 100 * np.mean(ratios <= 1.25)}


def test_random_batches_agree_with_an_independent_transcription():
    tasks, num_class, shape = ["seg", "sn", "depth"], [5, 3, 1], (12, 16)
    g = torch.Generator().manual_seed(0)
    batches = []
    for i, size in enumerate([1, 3, 2]):
        batch = make_random_batch(tasks, num_class, batch_size=size, height=12, width=16, seed=i)
        batch["seg"][:, :, :2] = 255
        batch["depth"][:, :, :, :3] = 0
        batch["normal"][:, :, -1] = 255
        preds = [torch.randn(size, c, 6, 8, generator=g) for c in num_class]
        preds[2] = preds[2].abs() * 3 + 0.5
        batches.append((preds, batch))
    ev = SceneNetEval("nyuv2_3", tasks, num_class, shape)
    up = [([torch.nn.functional.interpolate(p, size=shape) for p in preds], batch)
          for preds, batch in batches]
    for preds, batch in batches:
        ev.update(preds, batch)
    got = ev.compute()
    expected = reference_by_hand(up, 5)
    flat = {**got["seg"], **got["sn"], **got["depth"]}
    for name, value in expected.items():
        assert flat[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


def test_metric_names_dict_preds_reset_and_lower_is_better():
    tasks, num_class = ["seg", "sn", "depth", "keypoint", "edge"], [4, 3, 1, 1, 1]
    batch = make_random_batch(tasks, num_class, batch_size=2, height=8, width=8,
                              dataset="taskonomy")
    preds = {t: torch.randn(2, c, 4, 4) for t, c in zip(tasks, num_class)}
    ev = SceneNetEval("taskonomy", tasks, num_class, (8, 8))
    ev.update(preds, batch)
    first = ev.compute()
    assert {t: tuple(m) for t, m in first.items()} == {t: METRIC_NAMES[t] for t in tasks}
    assert all(math.isfinite(v) for m in first.values() for v in m.values())
    assert all(name in LOWER_IS_BETTER for names in METRIC_NAMES.values() for name in names)
    ev.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        ev.compute()
    ev.update([preds[t] for t in tasks], batch)
    assert ev.compute() == first


def test_evaluate_runs_a_tiny_compact_network_and_restores_mode():
    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.manual_seed(0)
    # a compact network holding only heads 1 (seg) and 3 (depth)
    net = SceneNet([cfg.TASKS_NUM_CLASS[0], cfg.TASKS_NUM_CLASS[2]], cfg.BACKBONE_NAME,
                   cfg.WIDTH_MULT, task_ids=[1, 3], tasks=["seg", "depth"]).train()
    h, w = cfg.IMAGE_SHAPE
    loader = [make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, batch_size=b, height=h,
                                width=w, seed=b) for b in (1, 2)]
    ev = SceneNetEval.from_config(cfg, tasks=["seg", "depth"])
    metrics = evaluate(net, loader, ev, progress=False)
    assert net.training
    assert {t: tuple(m) for t, m in metrics.items()} == {"seg": METRIC_NAMES["seg"],
                                                         "depth": METRIC_NAMES["depth"]}
    assert ev.num_images == 3
    assert evaluate(net, loader, ev, max_batches=1, progress=False) != metrics
    assert ev.num_images == 1
    # outputs are matched by task name: an evaluator over a subset of the network's tasks
    only_depth = evaluate(net, loader, SceneNetEval.from_config(cfg, tasks=["depth"]),
                          progress=False)
    assert only_depth == {"depth": metrics["depth"]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    batch = {"depth": row([2.0, 2.0]), "seg": row([0, 1]).long()}
    ev = SceneNetEval("nyuv2_3", ["seg", "depth"], [2, 1], (1, 2))
    ev.update([seg_logits([0, 0], 2).to("cuda"), row([2.0, 3.0]).to("cuda")], batch)
    m = ev.compute()
    assert m["seg"]["Pixel Acc"] == pytest.approx(0.5) and m["depth"]["abs_err"] == pytest.approx(0.5)


def test_clear_errors():
    with pytest.raises(ValueError, match="miou='bogus'"):
        SceneNetEval("nyuv2_3", ["seg"], [2], (1, 2), miou="bogus")
    with pytest.raises(ValueError, match="unknown dataset"):
        SceneNetEval("nyu", ["seg"], [2], (1, 2))
    with pytest.raises(ValueError, match="unknown task"):
        SceneNetEval("nyuv2_3", ["segm"], [2], (1, 2))
    with pytest.raises(ValueError, match="one weight per seg class"):
        SceneNetEval("taskonomy", ["seg"], [3], (1, 2), seg_class_weight=[1.0, 2.0])
    ev = SceneNetEval("nyuv2_3", ["seg", "depth"], [2, 1], (1, 2))
    good = {"seg": row([0, 1]).long(), "depth": row([1.0, 1.0])}
    with pytest.raises(ValueError, match="full-size"):
        ev.update([seg_logits([0, 1], 2), row([1.0, 1.0])], {**good, "depth": row([1.0] * 3)})
    with pytest.raises(KeyError, match="'depth'"):
        ev.update([seg_logits([0, 1], 2), row([1.0, 1.0])], {"seg": good["seg"]})
    with pytest.raises(ValueError, match="expected B x 2"):
        ev.update([row([0.0, 1.0]), row([1.0, 1.0])], good)
    with pytest.raises(ValueError, match="2 predictions|got 1 predictions"):
        ev.update([row([1.0, 1.0])], good)
    with pytest.raises(KeyError, match="no task 'depth'"):
        ev.update({"seg": seg_logits([0, 1], 2)}, good)
    with pytest.warns(RuntimeWarning, match="no valid target pixel"):
        ev.update([seg_logits([0, 1], 2), row([1.0, 1.0])], {**good, "depth": row([0.0, 0.0])})


# ---------------------------------------------------------------- delta

DENSE = {"seg": {"mIoU": 0.40, "Pixel Acc": 0.60}, "depth": {"abs_err": 0.5, "rel_err": 0.2},
         "sn": {"Angle Mean": 20.0, "Angle Median": 15.0, "Angle 11.25": 30.0,
                "Angle 22.5": 60.0, "Angle 30": 80.0}}


def test_delta_signs_follow_lower_is_better():
    pruned = {"seg": {"mIoU": 0.44, "Pixel Acc": 0.54},        # +10 %, -10 %  -> 0
              "depth": {"abs_err": 0.4, "rel_err": 0.25}}      # better by 20 %, worse by 25 %
    assert per_task_delta(pruned, DENSE) == pytest.approx({"seg": 0.0, "depth": -2.5})
    assert delta_mtl(pruned, DENSE) == pytest.approx(-1.25)
    better_normals = {"sn": {"Angle Mean": 18.0, "Angle Median": 15.0, "Angle 11.25": 30.0,
                             "Angle 22.5": 60.0, "Angle 30": 80.0}}
    assert delta_mtl(better_normals, DENSE) == pytest.approx(100 * 0.1 / 5)
    assert delta_mtl(pruned, DENSE, tasks=["depth"]) == pytest.approx(-2.5)
    assert delta_mtl(pruned, DENSE, metric_names={"seg": ["mIoU"], "depth": ["abs_err"]}) \
        == pytest.approx((10 + 20) / 2)
    assert DELTA_METRICS["seg"] == ("mIoU", "Pixel Acc")


def test_delta_errors():
    with pytest.raises(KeyError, match="'keypoint' missing from dense_metrics"):
        delta_mtl({"keypoint": {"err": 1.0}}, DENSE)
    with pytest.raises(KeyError, match="no metric 'rel_err'"):
        delta_mtl({"depth": {"abs_err": 1.0}}, DENSE)
    with pytest.raises(ZeroDivisionError, match="dense depth abs_err is 0"):
        delta_mtl({"depth": {"abs_err": 1.0, "rel_err": 1.0}},
                  {"depth": {"abs_err": 0.0, "rel_err": 1.0}})
