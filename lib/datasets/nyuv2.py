"""NYU-v2 with 3 tasks in AdaShare's layout (``cfg.DATASET == "nyuv2_3"``): CUT's and
DiSparse's main dataset."""
from .spec import DatasetSpec, register_dataset

# DiSparse's configs (config_nyuv2.py): mask updates every INT=50 iterations until END=15000,
# gradients in 2 pieces of the batch.
DISPARSE_NYU = {"interval": 50, "end": 15000, "grad_chunks": 2}

NYUV2 = register_dataset(DatasetSpec(
    name="nyuv2_3",
    summary="NYU-v2: segmentation (40 classes), surface normals, depth",
    tasks=("seg", "sn", "depth"),
    configs={"nyuv2_3task": "config_nyuv2_3task"},
    reader="lib.data.nyuv2:NYUv2",
    synthetic="lib.data.synthetic:prepare_synthetic",
    seg_ignore_index=255,
    raw_normals=True,
    keep_ratios={
        "cut": {90: 0.08, 70: 0.257, 50: 0.46, 30: 0.675},            # ESCM create_pruning.ipynb
        "disparse_static": {90: 0.08, 70: 0.257, 50: 0.46, 30: 0.675},
        "disparse_pt": {90: 0.1, 70: 0.3, 50: 0.5, 30: 0.7},
    },
    disparse_dynamic=DISPARSE_NYU,
    iou_batches=50,
    calibration_keys=("seg", "normal", "depth"),
))
