"""The datasets the workspace knows, one :class:`DatasetSpec` per file, and their registry.

    spec = dataset_spec(cfg.DATASET)        # or dataset_spec("taskonomy"); unknown: ValueError
    register_dataset(DatasetSpec(...))      # a new dataset, from any file (docs/ARCHITECTURE.md)

Built in: ``nyuv2_3`` (:mod:`.nyuv2`), ``cityscapes``, ``taskonomy``, ``nyuv2_mtan``,
``cifar100_mtl``. See :mod:`.spec` for what a spec holds.
"""
from .spec import (DATASET_REGISTRY, EVAL_BATCH_RULES, DatasetSpec, config_refs, dataset_names,
                   dataset_spec, register_dataset, resolve)
from . import nyuv2, cityscapes, taskonomy, nyuv2_mtan, cifar100_mtl  # noqa: F401,E402  (register)

__all__ = ["DATASET_REGISTRY", "EVAL_BATCH_RULES", "DatasetSpec", "config_refs", "dataset_names",
           "dataset_spec", "register_dataset", "resolve"]
