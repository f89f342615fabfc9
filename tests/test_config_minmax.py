"""The min-max configs: the reference hyper-parameters, profiles, and the networks they build."""
import pytest
import torch

from lib.config import CONFIG_MODULES, PROFILES, load_config
from lib.models import MODEL_REGISTRY


def test_segnet_mtan_reference_values():
    cfg = load_config("nyuv2_mtan")
    assert cfg.MODEL == "SegNetMTAN" and cfg.DATASET == "nyuv2_mtan"
    assert cfg.TASKS == ["seg", "depth", "normal"] and cfg.TASKS_NUM_CLASS == [13, 1, 3]
    assert (cfg.IMAGE_SHAPE, cfg.CROP_H, cfg.CROP_W) == ((288, 384), 288, 384)
    assert cfg.AUG_SCALES == (1.0, 1.2, 1.5) and cfg.LAMBDAS == [1, 1.5, 3]
    # Adam 1e-4, StepLR(step_size=100 epochs, gamma=0.5), batch 2, 200 epochs of 795 images
    assert (cfg.OPTIMIZER, cfg.INIT_LR, cfg.WEIGHT_DECAY) == ("adam", 1e-4, 0.0)
    assert (cfg.LR_SCHEDULE, cfg.DECAY_LR_RATE) == ("step", 0.5)
    assert cfg.BATCH_SIZE == 2 and cfg.EPOCHS == 200 and cfg.ITERS_PER_EPOCH == 398
    assert cfg.MAX_ITERS == 200 * 398 and cfg.DECAY_LR_FREQ == 100 * 398


def test_deeplab_and_cifar_reference_values():
    deeplab, cifar = load_config("nyuv2_deeplab"), load_config("cifar100_mtl")
    for cfg in (deeplab, cifar):
        assert (cfg.OPTIMIZER, cfg.INIT_LR, cfg.MOMENTUM, cfg.WEIGHT_DECAY) == \
            ("sgd", 0.1, 0.9, 5e-4)
        assert cfg.LR_SCHEDULE == "cosine" and cfg.EPOCHS == 200
        assert cfg.DECAY_LR_FREQ == cfg.MAX_ITERS == 200 * cfg.ITERS_PER_EPOCH
    assert deeplab.MODEL == "MTANDeepLabv3" and deeplab.BATCH_SIZE == 4
    assert deeplab.ITERS_PER_EPOCH == 199 and deeplab.LAMBDAS == [1, 1, 1]
    assert deeplab.DATASET == "nyuv2_mtan" and deeplab.CONFIG_NAME == "nyuv2_deeplab"
    assert cifar.MODEL == "MultiDomainVGG16" and cifar.BATCH_SIZE == 32
    assert cifar.TASKS == [f"class_{d}" for d in range(20)] and cifar.TASKS_NUM_CLASS == [5] * 20
    assert cifar.ITERS_PER_EPOCH == 79                     # ceil(2500 / 32)


@pytest.mark.parametrize("name", ["nyuv2_mtan", "nyuv2_deeplab", "cifar100_mtl"])
@pytest.mark.parametrize("profile", ["cpu", "tiny"])
def test_profiles_shrink_the_run_and_add_no_attribute(name, profile):
    reference = load_config(name)
    cfg = load_config(name, profile=profile)
    assert not hasattr(cfg, "BACKBONE_NAME")              # '*' only sets what a config has
    assert cfg.WIDTH_MULT < 1 and cfg.MAX_ITERS < reference.MAX_ITERS
    assert cfg.OPTIMIZER == reference.OPTIMIZER
    if cfg.LR_SCHEDULE == "cosine":
        assert cfg.DECAY_LR_FREQ == cfg.MAX_ITERS and cfg.RETRAIN_DECAY_LR_FREQ == cfg.RETRAIN_EPOCH
    with torch.device("meta"):
        net = MODEL_REGISTRY[cfg.MODEL].from_config(cfg)
    assert net.tasks == cfg.TASKS and net.tasks_num_class == cfg.TASKS_NUM_CLASS


def test_tiny_networks_run_at_the_tiny_image_size():
    for name in ("nyuv2_mtan", "nyuv2_deeplab"):
        cfg = load_config(name, profile="tiny")
        net = MODEL_REGISTRY[cfg.MODEL].from_config(cfg).eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 3, *cfg.IMAGE_SHAPE))
        assert [o.shape[1] for o in out] == cfg.TASKS_NUM_CLASS


def test_registered_and_profiled():
    assert {"nyuv2_mtan", "nyuv2_deeplab", "cifar100_mtl"} <= set(CONFIG_MODULES)
    for profile in ("cpu", "tiny"):
        assert {"nyuv2_mtan", "nyuv2_deeplab", "cifar100_mtl"} <= set(PROFILES[profile])
    with pytest.raises(AttributeError, match="no attribute 'BACKBONE_NAME'"):
        load_config("cifar100_mtl", BACKBONE_NAME="ResNet18")


def test_scene_net_refuses_a_config_of_another_model():
    from lib.models import SceneNet
    with pytest.raises(ValueError, match="describes a MultiDomainVGG16, not a SceneNet"):
        SceneNet.from_config(load_config("cifar100_mtl", profile="tiny"))
