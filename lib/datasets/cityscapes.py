"""Cityscapes (segmentation + depth) in AdaShare's layout (``cfg.DATASET == "cityscapes"``)."""
from .spec import DatasetSpec, register_dataset

CITYSCAPES = register_dataset(DatasetSpec(
    name="cityscapes",
    summary="Cityscapes: segmentation (7 or 19 classes), depth",
    tasks=("seg", "depth"),
    configs={"cityscapes": "config_cityscapes"},
    reader="lib.data.cityscapes:CityScapes",
    synthetic="lib.data.synthetic:prepare_synthetic",
    seg_ignore_index=-1,
    keep_ratios={
        "cut": {90: 0.095, 70: 0.3, 50: 0.51, 30: 0.71},              # ESCM create_pruning.ipynb
        "disparse_static": {90: 0.095, 70: 0.3, 50: 0.51, 30: 0.71},
        "disparse_pt": {90: 0.13, 70: 0.37, 50: 0.6, 30: 0.644},
    },
    # DiSparse's config_cityscapes.py: INT=50, END=15000, gradients in 2 pieces.
    disparse_dynamic={"interval": 50, "end": 15000, "grad_chunks": 2},
    iou_batches=50,
    calibration_keys=("label19",),
))
