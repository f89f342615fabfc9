"""lib.losses against values computed by hand on tiny tensors (REFERENCE.md section 3)."""
import math

import numpy as np
import pytest
import torch

from lib.config import load_config
from lib.losses import SceneNetLoss, load_seg_prior


def row(values):
    """A 1 x 1 x 1 x W tensor (one image, one channel, one row)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def vectors(vs):
    """A 1 x 3 x 1 x W tensor from a list of 3-vectors."""
    return torch.tensor(vs, dtype=torch.float32).t().reshape(1, 3, 1, -1)


# Two-class logits for three pixels: [0, 0] (p = 1/2), [ln 3, 0] (p(0) = 3/4), [9, -9].
SEG_LOGITS = torch.tensor([[0.0, math.log(3.0), 9.0], [0.0, 0.0, -9.0]]).reshape(1, 2, 1, 3)
CE_HALF, CE_THREE_QUARTERS = math.log(2.0), -math.log(0.75)


@pytest.mark.parametrize("dataset,ignore", [("nyuv2_3", 255), ("cityscapes", -1),
                                            ("taskonomy", 255)])
def test_seg_cross_entropy_skips_the_ignore_value(dataset, ignore):
    loss = SceneNetLoss(dataset, ["seg"], [1.0])
    # third pixel would cost ~18 if it were not ignored
    value = loss.task_loss([SEG_LOGITS], {"seg": row([1, 0, ignore]).long()}, "seg")
    assert value.item() == pytest.approx((CE_HALF + CE_THREE_QUARTERS) / 2, rel=1e-6)


def test_seg_class_weights_give_a_weighted_mean():
    loss = SceneNetLoss("taskonomy", ["seg"], [1.0], seg_class_weight=np.array([3.0, 1.0]))
    value = loss.task_loss([SEG_LOGITS[..., :2]], {"seg": row([1, 0]).long()}, "seg")
    # pixel 0 has class 1 (weight 1), pixel 1 class 0 (weight 3)
    assert value.item() == pytest.approx((1 * CE_HALF + 3 * CE_THREE_QUARTERS) / 4, rel=1e-6)


def test_targets_are_resized_nearest_to_the_prediction():
    loss = SceneNetLoss("nyuv2_3", ["seg"], [1.0])
    pred = SEG_LOGITS[..., 1:2]                       # 1 x 2 x 1 x 1: p(0) = 3/4
    # 2 x 2 target: nearest down-sampling to 1 x 1 keeps the top-left value (class 1)
    gt = torch.tensor([[[[1, 0], [0, 0]]]])
    assert loss.task_loss([pred], {"seg": gt}, "seg").item() == pytest.approx(-math.log(0.25))


def test_normal_loss_on_raw_vectors_skips_invalid_pixels():
    loss = SceneNetLoss("nyuv2_3", ["sn"], [1.0])
    pred = vectors([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    gt = vectors([[254.0, 127.0, 127.0],                  # cos = 254 / |(254, 127, 127)|
                  [0.0, 10.0, 0.0],                       # cos = 1
                  [255.0, 255.0, 255.0]])                 # invalid: any channel == 255
    cos0 = 254 / math.sqrt(254**2 + 2 * 127**2)
    assert loss.task_loss([pred], {"normal": gt}, "sn").item() == \
        pytest.approx(1 - (cos0 + 1) / 2, rel=1e-6)


def test_depth_l1_masks_nyu_and_cityscapes_zeros():
    pred, gt = row([5.0, 3.0, 1.0]), row([0.0, 2.0, 4.0])
    for dataset in ("nyuv2_3", "cityscapes"):
        loss = SceneNetLoss(dataset, ["depth"], [1.0])
        assert loss.task_loss([pred], {"depth": gt}, "depth").item() == pytest.approx((1 + 3) / 2)


def test_taskonomy_depth_uses_depth_mask_and_255():
    loss = SceneNetLoss("taskonomy", ["depth"], [1.0])
    batch = {"depth": row([0.0, 255.0, 0.2, 0.4]), "depth_mask": row([1, 1, 0, 1])}
    # valid: pixel 0 (gt 0 is valid here) and pixel 3
    value = loss.task_loss([row([0.5, 0.0, 9.0, 0.1])], batch, "depth")
    assert value.item() == pytest.approx((0.5 + 0.3) / 2, rel=1e-6)
    with pytest.raises(KeyError, match="depth_mask"):
        loss.task_loss([row([0.5, 0.0, 9.0, 0.1])], {"depth": batch["depth"]}, "depth")


@pytest.mark.parametrize("task", ["keypoint", "edge"])
def test_keypoint_and_edge_l1_skip_255(task):
    loss = SceneNetLoss("taskonomy", [task], [1.0])
    value = loss.task_loss([row([0.0, 7.0, 0.0])], {task: row([0.5, 255.0, -1.0])}, task)
    assert value.item() == pytest.approx((0.5 + 1.0) / 2)


def three_task_case():
    preds = [SEG_LOGITS[..., :2], vectors([[0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]),
             row([3.0, 1.0])]
    batch = {"seg": row([1, 0]).long(),
             "normal": vectors([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),   # cos 1 and 0
             "depth": row([2.0, 0.0])}
    per_task = {"seg": (CE_HALF + CE_THREE_QUARTERS) / 2, "sn": 1 - (1 + 0) / 2, "depth": 1.0}
    return preds, batch, per_task


def test_weighted_total_unweighted_task_loss_and_per_task():
    preds, batch, expected = three_task_case()
    loss = SceneNetLoss("nyuv2_3", ["seg", "sn", "depth"], [1.0, 20.0, 3.0])
    total = 1 * expected["seg"] + 20 * expected["sn"] + 3 * expected["depth"]
    assert loss(preds, batch).item() == pytest.approx(total, rel=1e-6)
    assert loss.task_loss(preds, batch, "sn").item() == pytest.approx(expected["sn"], rel=1e-6)
    assert {t: v.item() for t, v in loss.per_task(preds, batch).items()} == \
        pytest.approx(expected, rel=1e-6)
    # dict predictions are equivalent to the aligned list
    as_dict = dict(zip(loss.tasks, preds))
    assert loss(as_dict, batch).item() == pytest.approx(total, rel=1e-6)


def test_restricted_to_keeps_each_tasks_lambda():
    preds, batch, expected = three_task_case()
    loss = SceneNetLoss("nyuv2_3", ["seg", "sn", "depth"], [1.0, 20.0, 3.0])
    sub = loss.restricted_to(["depth", "seg"])
    assert sub.tasks == ["depth", "seg"] and sub.lambdas == [3.0, 1.0]
    value = sub([preds[2], preds[0]], batch).item()
    assert value == pytest.approx(3 * expected["depth"] + 1 * expected["seg"], rel=1e-6)
    with pytest.raises(ValueError, match="not in this loss's tasks"):
        sub.restricted_to(["sn"])


def test_restricted_to_keeps_the_seg_class_weight():
    loss = SceneNetLoss("taskonomy", ["seg", "depth"], [1.0, 1.0], seg_class_weight=[3.0, 1.0])
    sub = loss.restricted_to(["seg"])
    value = sub.task_loss([SEG_LOGITS[..., :2]], {"seg": row([1, 0]).long()}, "seg")
    assert value.item() == pytest.approx((CE_HALF + 3 * CE_THREE_QUARTERS) / 4, rel=1e-6)


def test_gradient_flows_only_through_the_chosen_task():
    preds, batch, _ = three_task_case()
    preds = [p.clone().requires_grad_() for p in preds]
    loss = SceneNetLoss("nyuv2_3", ["seg", "sn", "depth"], [1.0, 20.0, 3.0])
    loss.task_loss(preds, batch, "depth").backward()
    assert preds[0].grad is None and preds[1].grad is None
    # d/dp mean |p - g| over the one valid pixel: sign(3 - 2) = 1; the invalid pixel gets 0
    assert preds[2].grad.reshape(-1).tolist() == [1.0, 0.0]


def test_from_config_reads_taskonomy_prior(tmp_path):
    np.save(tmp_path / "semseg_prior_factor.npy", np.linspace(0.5, 2.0, 17))
    cfg = load_config("taskonomy", profile="tiny", DATA_ROOT=str(tmp_path))
    loss = SceneNetLoss.from_config(cfg)
    assert loss.tasks == cfg.TASKS and loss.lambdas == [float(x) for x in cfg.LAMBDAS]
    assert loss.seg_class_weight.tolist() == pytest.approx(np.linspace(0.5, 2.0, 17).tolist())
    assert SceneNetLoss.from_config(cfg, tasks=["edge"]).tasks == ["edge"]
    nyu = SceneNetLoss.from_config(load_config("nyuv2_3task", profile="tiny"))
    assert nyu.seg_class_weight is None and nyu.dataset == "nyuv2_3"


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nyu'"):
        SceneNetLoss("nyu", ["seg"], [1.0])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['normal'\]"):
        SceneNetLoss("nyuv2_3", ["normal"], [1.0])
    with pytest.raises(ValueError, match="one weight per task"):
        SceneNetLoss("nyuv2_3", ["seg", "sn"], [1.0])
    loss = SceneNetLoss("nyuv2_3", ["seg", "depth"], [1.0, 1.0])
    with pytest.raises(ValueError, match="not one of this loss's tasks"):
        loss.task_loss([SEG_LOGITS, row([1.0])], {}, "sn")
    with pytest.raises(KeyError, match="batch has no key 'depth'"):
        loss.task_loss([SEG_LOGITS, row([1.0])], {"seg": row([0])}, "depth")
    with pytest.raises(ValueError, match="got 1 predictions"):
        loss([SEG_LOGITS], {"seg": row([0, 0, 0])})
    with pytest.raises(FileNotFoundError, match="semseg_prior_factor.npy"):
        load_seg_prior(tmp_path)


def test_restricted_to_after_moving_the_loss_to_another_device():
    loss = SceneNetLoss("taskonomy", ["seg", "depth"], [1.0, 1.0], seg_class_weight=[3.0, 1.0])
    sub = loss.to("meta").restricted_to(["seg"])        # "meta" stands in for a CUDA device
    assert sub.seg_class_weight.shape == (2,)


# ---------------------------------------------------------------------- the min-max benchmarks
def test_min_max_nyuv2_losses_by_hand():
    from lib.config import load_config
    from lib.losses import losses_from_config

    def columns(*pixels):   # 1 x C x 1 x W from per-pixel vectors
        return torch.tensor(pixels, dtype=torch.float32).T[None, :, None, :]

    seg_logits = columns((2.0, 0.0), (0.0, 1.0))
    depth_pred = columns((1.0,), (3.0,), (9.0,))
    # normals: a unit target, a tilted one whose components sum to 0 (valid), (0, 0, 0) invalid
    normal_target = columns((0.0, 0.0, 1.0), (0.6, -0.8, 0.0), (0.0, 0.0, 0.0))
    normal_pred = columns((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    batch = {"seg": torch.tensor([[[[1, -1]]]]),            # the -1 pixel is ignored
             "depth": columns((2.0,), (3.0,), (0.0,)),      # 0 = invalid
             "normal": normal_target}
    loss = losses_from_config(load_config("nyuv2_mtan"))
    per = loss.per_task([seg_logits, depth_pred, normal_pred], batch)
    assert per["seg"] == pytest.approx(float(-torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[1]))
    assert per["depth"] == pytest.approx((1 + 0) / 2)
    assert per["normal"] == pytest.approx(1 - (1.0 + 0.6) / 2)     # 1 - mean cosine
    assert loss.lambdas == [1, 1.5, 3]
    deeplab = losses_from_config(load_config("nyuv2_deeplab"))     # L1 on the components
    assert deeplab.task_loss([seg_logits, depth_pred, normal_pred], batch, "normal") == \
        pytest.approx((0 + (0.4 + 0.8 + 0)) / 2)


def test_min_max_cifar_losses_and_bad_configs():
    from lib.config import load_config
    from lib.losses import losses_from_config
    cfg = load_config("cifar100_mtl")
    loss = losses_from_config(cfg, tasks=["class_2", "class_9"])
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    expected = float(torch.nn.functional.cross_entropy(logits, torch.tensor([3])))
    assert loss.tasks == ["class_2", "class_9"]
    assert loss.task_loss({"class_2": logits}, {"label": torch.tensor([3])}, "class_2") == \
        pytest.approx(expected)
    bad = load_config("nyuv2_mtan", NORMAL_LOSS="dot")
    with pytest.raises(ValueError, match="NORMAL_LOSS 'dot' is not one of"):
        losses_from_config(bad)
    with pytest.raises(ValueError, match=r"task\(s\) \['sn'\] have no loss"):
        losses_from_config(load_config("nyuv2_mtan", TASKS=["seg", "sn"], LAMBDAS=[1, 1]))
