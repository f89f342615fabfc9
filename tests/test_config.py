import pytest

from lib.config import config_to_dict, load_config


def test_reference_values_are_the_originals():
    cfg = load_config("nyuv2_3task")
    assert cfg.TASKS == ["seg", "sn", "depth"] and cfg.TASKS_NUM_CLASS == [40, 3, 1]
    assert cfg.LAMBDAS == [1, 20, 3] and cfg.BATCH_SIZE == 16 and cfg.MAX_ITERS == 20000
    assert load_config("cityscapes").TASKS_NUM_CLASS == [19, 1]
    assert load_config("taskonomy").IMAGE_SHAPE == (256, 256)
    assert load_config("nyuv2_3").CONFIG_NAME == "nyuv2_3task"  # reference dataset name accepted


def test_profiles_and_overrides_do_not_leak_into_the_class():
    cpu = load_config("nyuv2_3task", profile="cpu", DATA_ROOT="/tmp/x")
    cpu.TASKS.append("oops")
    ref = load_config("nyuv2_3task")
    assert ref.TASKS == ["seg", "sn", "depth"] and ref.WIDTH_MULT == 1.0
    assert cpu.DATA_ROOT == "/tmp/x" and cpu.WIDTH_MULT < 1.0
    assert config_to_dict(ref)["IMAGE_SHAPE"] == [480, 640]


def test_data_root_from_environment(monkeypatch):
    import importlib

    import config_cityscapes
    monkeypatch.setenv("CUT_DATA_ROOT", "/data/cityscapes")
    importlib.reload(config_cityscapes)
    try:
        assert load_config("cityscapes").DATA_ROOT == "/data/cityscapes"
    finally:
        monkeypatch.delenv("CUT_DATA_ROOT")
        importlib.reload(config_cityscapes)


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown config 'nyu'"):
        load_config("nyu")
    with pytest.raises(ValueError, match="unknown profile"):
        load_config("cityscapes", profile="gpu")
    with pytest.raises(AttributeError, match="no attribute 'MAX_ITER'"):
        load_config("cityscapes", MAX_ITER=3)


def test_bench_profile_trains_the_cpu_network_longer():
    cpu, bench = (load_config("nyuv2_3task", profile=p) for p in ("cpu", "bench"))
    for attr in ("BACKBONE_NAME", "WIDTH_MULT", "IMAGE_SHAPE", "CROP_H", "CROP_W", "BATCH_SIZE"):
        assert getattr(bench, attr) == getattr(cpu, attr), attr
    assert bench.MAX_ITERS > cpu.MAX_ITERS
    assert bench.MAX_ITERS // bench.DECAY_LR_FREQ >= 2      # several learning-rate decays
