"""lib.datasets: one DatasetSpec per dataset, read by every layer; an unknown dataset is a
one-line error everywhere (never NYU's settings); the reference's values unchanged; a dataset
(examples/custom_dataset.py) and a model (examples/custom_model.py) each added in one file
reach the loaders, losses, evaluation, prune and the study without editing lib."""
import math

import pytest
import torch

import examples.custom_dataset as toy
import examples.custom_model  # noqa: F401  (registers ExampleNet)
from lib.config import CONFIG_MODULES, load_config
from lib.datasets import (DATASET_REGISTRY, DatasetSpec, dataset_names, dataset_spec,
                          register_dataset, resolve)

BUILT_IN = ("cifar100_mtl", "cityscapes", "nyuv2_3", "nyuv2_mtan", "taskonomy")
UNKNOWN = "unknown dataset 'nope'; registered datasets: "


def nope_cfg():
    cfg = load_config("nyuv2_3task", profile="tiny")
    cfg.DATASET = "nope"
    return cfg


def lookups():
    """Every lookup of a dataset's facts, each called on the unknown dataset 'nope'."""
    from lib.data import build_dataset, build_loader, has_task_datasets
    from lib.data.synthetic import prepare_synthetic
    from lib.losses import SceneNetLoss, losses_from_config
    from lib.metrics import metrics_from_config
    from lib.reports import task_panel
    from lib.sparse import DISPARSE_DYNAMIC, disparse_keep_ratio, make_sparse
    from lib.sparse.study import schedule
    from lib.tasks import check_dataset, depth_valid, raw_normals, seg_ignore_index
    from lib.training.selection import default_eval_batch_size

    gt = torch.ones(1, 1, 2, 2)
    return {
        "dataset_spec": lambda: dataset_spec("nope"),
        "check_dataset": lambda: check_dataset("nope"),
        "seg_ignore_index": lambda: seg_ignore_index("nope"),
        "raw_normals": lambda: raw_normals("nope"),
        "depth_valid": lambda: depth_valid(gt, "nope", None),
        "SceneNetLoss": lambda: SceneNetLoss("nope", ["seg"], [1.0]),
        "losses_from_config": lambda: losses_from_config(nope_cfg()),
        "metrics_from_config": lambda: metrics_from_config(nope_cfg()),
        "build_dataset": lambda: build_dataset(nope_cfg(), "train"),
        "build_loader": lambda: build_loader(nope_cfg(), "train"),
        "has_task_datasets": lambda: has_task_datasets(nope_cfg()),
        "prepare_synthetic": lambda: prepare_synthetic(nope_cfg()),
        "default_eval_batch_size": lambda: default_eval_batch_size(nope_cfg()),
        "DISPARSE_DYNAMIC[]": lambda: DISPARSE_DYNAMIC["nope"],
        "DISPARSE_DYNAMIC.get": lambda: DISPARSE_DYNAMIC.get("nope", {"interval": 1}),
        "make_sparse": lambda: make_sparse("disparse_dynamic", 90, nope_cfg()),
        "schedule": lambda: schedule("disparse_dynamic", 100, 10, "nope"),
        "disparse_keep_ratio": lambda: disparse_keep_ratio("disparse_static", "nope", 90),
        "task_panel": lambda: task_panel("seg", "nope"),
    }


@pytest.mark.parametrize("name", sorted(lookups()))
def test_an_unknown_dataset_is_one_line_naming_it_and_the_registered_ones(name):
    with pytest.raises(ValueError) as info:
        lookups()[name]()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(UNKNOWN), message
    assert all(f"'{d}'" in message for d in BUILT_IN), message


def test_a_dataset_s_name_loads_its_first_config():
    from lib.config import canonical_name

    assert canonical_name("nyuv2_3") == canonical_name("nyuv2") == "nyuv2_3task"
    assert canonical_name("nyuv2_mtan") == "nyuv2_mtan"
    assert load_config(toy.NAME).DATASET == toy.NAME


def test_an_unknown_config_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown config 'nope'; expected one of .*'taskonomy'"):
        load_config("nope")


def test_disparse_dynamic_without_a_config_needs_its_schedule():
    from lib.sparse import make_sparse

    with pytest.raises(ValueError, match="needs the options interval and end"):
        make_sparse("disparse_dynamic", 90)
    assert make_sparse("disparse_dynamic", 90, interval=5, end=50).interval == 5


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_specs_resolve_and_agree_with_their_configs_and_readers(name):
    spec = dataset_spec(name)
    for what in ("reader", "task_datasets", "synthetic", "losses", "evaluator",
                 "metric_options", "image_to_rgb"):
        if getattr(spec, what) is not None:
            assert spec.get(what) is not None
    if spec.reader is not None:
        assert spec.get("reader").LAYOUT == name
    assert spec.configs
    for config, ref in spec.configs.items():
        assert not hasattr(resolve(ref), "KEEP_RATIO_TABLE"), config    # one home: the spec
        cfg = load_config(config)
        assert cfg.DATASET == name
        assert list(cfg.TASKS) == [t for t in spec.tasks if t in cfg.TASKS]
        # load_config sets KEEP_RATIO_TABLE from the spec's CUT table
        assert cfg.KEEP_RATIO_TABLE == dict(spec.keep_table("cut")), config
    assert set(CONFIG_MODULES) >= set(spec.configs)


def test_reference_values_are_the_references():
    """The tables the specs replaced, value for value (DiSparse's create_pruned_net.py,
    config_*.py and iou_analysis.py; CUT's create_pruning.ipynb; the AdaShare layouts)."""
    from lib.export.quantize import batch_layout
    from lib.pruning import reference_keep_ratio
    from lib.sparse import DISPARSE_DYNAMIC, DISPARSE_KEEP_TABLES, disparse_keep_ratio
    from lib.tasks import raw_normals, seg_ignore_index, table_datasets

    assert table_datasets() == ["cityscapes", "nyuv2_3", "taskonomy"]
    assert {d: seg_ignore_index(d) for d in table_datasets()} == \
        {"nyuv2_3": 255, "cityscapes": -1, "taskonomy": 255}
    assert [d for d in dataset_names() if raw_normals(d)] == ["nyuv2_3"]
    assert [d for d in dataset_names() if dataset_spec(d).depth_mask] == ["taskonomy"]
    assert [d for d in dataset_names() if dataset_spec(d).seg_prior] == ["taskonomy"]
    assert [d for d in dataset_names() if dataset_spec(d).eval_batch == "config"] == ["taskonomy"]
    nyu = {"interval": 50, "end": 15000, "grad_chunks": 2}
    taskonomy = {"interval": 250, "end": 75000, "grad_chunks": 8}
    assert {d: DISPARSE_DYNAMIC[d] for d in BUILT_IN} == {
        "nyuv2_3": nyu, "cityscapes": nyu, "taskonomy": taskonomy, "nyuv2_mtan": nyu,
        "cifar100_mtl": nyu}
    assert dict(DISPARSE_KEEP_TABLES) == {
        "disparse_static": {"nyuv2_3": {90: 0.08, 70: 0.257, 50: 0.46, 30: 0.675},
                            "cityscapes": {90: 0.095, 70: 0.3, 50: 0.51, 30: 0.71},
                            "taskonomy": {90: 0.097, 70: 0.257, 50: 0.46, 30: 0.675}},
        "disparse_pt": {"nyuv2_3": {90: 0.1, 70: 0.3, 50: 0.5, 30: 0.7},
                        "cityscapes": {90: 0.13, 70: 0.37, 50: 0.6, 30: 0.644},
                        "taskonomy": {90: 0.2, 70: 0.3, 50: 0.5, 30: 0.7}}}
    # Taskonomy at 90 %: CUT's notebook keeps 0.1, DiSparse's static table 0.097.
    assert reference_keep_ratio(load_config("taskonomy"), 90) == 0.1
    assert disparse_keep_ratio("disparse_static", "taskonomy", 90) == 0.097
    assert disparse_keep_ratio("disparse_static", "taskonomy", 80) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="'nyuv2_mtan' has no 'disparse_static' keep-ratio"):
        disparse_keep_ratio("disparse_static", "nyuv2_mtan", 90)
    assert {d: dataset_spec(d).iou_batches for d in table_datasets()} == \
        {"nyuv2_3": 50, "cityscapes": 50, "taskonomy": 200}
    x = torch.zeros(1)
    assert batch_layout({"img": x, "seg": x, "normal": x, "depth": x}) == "nyuv2_3"
    assert batch_layout({"img": x, "seg": x, "normal": x, "depth": x, "keypoint": x,
                         "edge": x, "depth_mask": x}) == "taskonomy"
    assert batch_layout({"img": x, "seg": x, "depth": x, "label19": x}) == "cityscapes"
    assert batch_layout({"img": x, "seg": x, "depth": x}) is None


def test_figures_undo_each_reader_s_input_encoding():
    from lib.data.cifar_mtl import MEAN, STD
    from lib.reports import _image_rgb
    from lib.tasks import IMG_MEAN_BGR

    x = torch.linspace(-1.5, 1.5, 3 * 4 * 5).reshape(3, 4, 5)
    expected = {"nyuv2_mtan": (x + 1) / 2,
                "cifar100_mtl": x * torch.tensor(STD)[:, None, None] +
                torch.tensor(MEAN)[:, None, None],
                "nyuv2_3": (x + torch.tensor(IMG_MEAN_BGR)[:, None, None]).flip(0) / 255}
    for dataset, rgb in expected.items():
        got = _image_rgb(x, IMG_MEAN_BGR, dataset)
        assert got.shape == (4, 5, 3)
        assert torch.allclose(torch.from_numpy(got.copy()),
                              rgb.clamp(0, 1).permute(1, 2, 0).float(), atol=1e-6), dataset


def test_register_dataset_refuses_clashes_and_incomplete_specs():
    spec = dataset_spec("nyuv2_3")
    register_dataset(spec)                       # the same spec again: nothing changes
    with pytest.raises(ValueError, match="'nyuv2_3' is already registered"):
        register_dataset(DatasetSpec(name="nyuv2_3", tasks=("seg",), reader=toy.ToyScenes))
    with pytest.raises(ValueError, match=r"config name\(s\) \['taskonomy'\] already belong"):
        register_dataset(DatasetSpec(name="other", tasks=("seg",), reader=toy.ToyScenes,
                                     configs={"taskonomy": toy.ToyConfig}))
    with pytest.raises(ValueError, match="exactly one of reader"):
        DatasetSpec(name="x", tasks=("a",))
    with pytest.raises(ValueError, match="eval_batch 'two'"):
        DatasetSpec(name="x", tasks=("a",), reader=toy.ToyScenes, eval_batch="two")
    with pytest.raises(ValueError, match="has no DiSparse dynamic defaults"):
        DatasetSpec(name="x", tasks=("a",), reader=toy.ToyScenes).disparse_defaults()
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        resolve("no_such_module:X", "x")
    assert "other" not in DATASET_REGISTRY


# ----------------------------------------------------------------------------- a new dataset
@pytest.fixture(scope="module")
def toy_cfg(tmp_path_factory):
    from lib.data.synthetic import prepare_synthetic

    cfg = load_config(toy.NAME, profile="tiny")
    cfg.DATA_ROOT = prepare_synthetic(cfg, root=tmp_path_factory.mktemp("toy"), num_train=8,
                                      num_test=4)
    return cfg


def test_a_dataset_in_one_file_reaches_loaders_losses_evaluation_and_prune(toy_cfg):
    from lib.data import build_loader
    from lib.losses import losses_from_config
    from lib.metrics import evaluate, metrics_from_config
    from lib.models import model_from_config
    from lib.pruning import prune
    from lib.sparse import make_sparse
    from lib.training.selection import default_eval_batch_size

    cfg = toy_cfg
    assert (cfg.BATCH_SIZE, cfg.MAX_ITERS) == (2, 4)          # the tiny profile applied
    loader = build_loader(cfg, "train")
    batch = next(iter(loader))
    assert batch["img"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.long
    torch.manual_seed(0)
    net = model_from_config(cfg)
    assert type(net).__name__ == "ExampleNet"
    criterion = losses_from_config(cfg)
    assert criterion.tasks == ["mask", "height"]
    assert torch.isfinite(criterion(net(batch["img"]), batch))
    evaluator = metrics_from_config(cfg)
    assert isinstance(evaluator, toy.ToyEval)
    metrics = evaluate(net, build_loader(cfg, "test", batch_size=default_eval_batch_size(cfg)),
                       evaluator, progress=False)
    assert set(metrics) == {"mask", "height"} and 0 <= metrics["mask"]["pixel_acc"] <= 1
    result = prune("cut", net, criterion, loader, selected_tasks=["height"], sparsity=50,
                   num_batches=1)
    assert result.net.tasks == ["height"]
    assert abs(result.sparsity - 50) < 1
    hook = make_sparse("disparse_dynamic", 90, cfg)
    assert (hook.interval, hook.end) == (10, 150)             # the spec's DiSparse defaults
    with pytest.raises(ValueError, match="'toy_scenes' has no 'disparse_static' keep-ratio"):
        from lib.sparse import disparse_keep_ratio
        disparse_keep_ratio("disparse_static", cfg.DATASET, 90)


def run_tiny_study(tmp_path, config, methods, selection, **extra):
    from lib.experiments import StudySpec, run_study
    from lib.experiments.engine import EngineOptions

    spec = StudySpec(config=config, profile="tiny", out_dir=str(tmp_path / "study"),
                     methods=methods, sparsities=(50,), selections=[selection], base_iters=3,
                     finetune_iters=2, num_batches=1, dense_control=False, **extra)
    rows = run_study(spec, progress=False, engine=EngineOptions(engine="serial")).rows
    return {row["method"]: row for row in rows}


def test_a_dataset_in_one_file_reaches_the_study(tmp_path, monkeypatch):
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "data"))    # its synthetic writer
    rows = run_tiny_study(tmp_path, toy.NAME, ("cut", "disparse_dynamic"), ("mask", "height"),
                          synthetic_train=8, synthetic_test=4)
    assert set(rows) == {"dense", "cut", "disparse_dynamic"}
    for method in ("cut", "disparse_dynamic"):
        assert abs(rows[method]["measured_sparsity"] - 50) < 1, rows[method]
        assert math.isfinite(rows[method]["mask/pixel_acc"])
        assert math.isfinite(rows[method]["height/abs_err"])
    assert (tmp_path / "data").is_dir()
    assert (tmp_path / "study" / "predictions_cut_50.png").is_file()


# ----------------------------------------------------------------------------- a new model
def test_a_model_in_one_file_reaches_prune_and_a_built_in_dataset_s_study(tmp_path,
                                                                         monkeypatch):
    """ExampleNet (examples/custom_model.py) on NYU-v2 in MTAN's format: every config naming
    a ``MODEL`` can run it (``--set MODEL=ExampleNet``)."""
    monkeypatch.setenv("CUT_SYNTHETIC_DIR", str(tmp_path / "data"))
    rows = run_tiny_study(tmp_path, "nyuv2_mtan", ("cut", "snip"), ("seg", "depth"),
                          synthetic_train=6, synthetic_test=2,
                          overrides={"MODEL": "ExampleNet"})
    assert set(rows) == {"dense", "cut", "snip"}
    for method in ("cut", "snip"):
        assert abs(rows[method]["measured_sparsity"] - 50) < 1, rows[method]
        assert math.isfinite(rows[method]["seg/mIoU"])
        assert math.isfinite(rows[method]["depth/abs_err"])
    from lib.checkpoints import load_network
    net = load_network(tmp_path / "study" / "base" / "base_model.pth",
                       load_config("nyuv2_mtan", profile="tiny", MODEL="ExampleNet"))
    assert type(net).__name__ == "ExampleNet"                  # the study built and saved it
