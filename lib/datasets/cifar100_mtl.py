"""CIFAR-100 as 20 five-way classification domains (``cfg.DATASET == "cifar100_mtl"``): one
dataset per task (domain), the min-max framework's multi-domain benchmark."""
from .nyuv2 import DISPARSE_NYU
from .spec import DatasetSpec, register_dataset

CIFAR100_MTL = register_dataset(DatasetSpec(
    name="cifar100_mtl",
    summary="CIFAR-100: 20 coarse-class domains, each a 5-way classification",
    tasks=tuple(f"class_{d}" for d in range(20)),
    configs={"cifar100_mtl": "config_cifar100_mtl"},
    task_datasets="lib.data.cifar_mtl:build_task_datasets",
    synthetic="lib.data.synthetic:prepare_synthetic",
    losses="lib.losses:domain_losses",
    evaluator="lib.metrics_minmax:DomainAccuracy",
    metric_options={},
    image_to_rgb="lib.data.cifar_mtl:image_to_rgb",
    # The min-max code prunes exactly the nominal ratio (0.983 = 60x, 0.99 = 100x): no table.
    keep_ratios={"cut": {}},
    # DiSparse has no setting for this benchmark: its NYU-v2 one, stated here.
    disparse_dynamic=DISPARSE_NYU,
))
