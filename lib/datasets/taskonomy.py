"""Tiny-Taskonomy (5 tasks) in AdaShare's layout (``cfg.DATASET == "taskonomy"``).

Two references, two keep-ratio tables at 90 %: CUT's ``create_pruning.ipynb`` (ESCM) keeps
0.1 (and 0.5 at 50 %), DiSparse's ``create_pruned_net.py`` (``create_disparse_static_taskonomy``)
keeps 0.097 (0.46 at 50 %). Neither is a typo of the other: each is its own paper's tuning for
its own rule, so each reference's method reads its own row ("cut": the configs'
``KEEP_RATIO_TABLE``; "disparse_static": :func:`lib.sparse.disparse_keep_ratio`).
"""
from .spec import DatasetSpec, register_dataset

TASKONOMY = register_dataset(DatasetSpec(
    name="taskonomy",
    summary="Tiny-Taskonomy: segmentation (17 classes), normals, depth, keypoints, edges",
    tasks=("seg", "sn", "depth", "keypoint", "edge"),
    configs={"taskonomy": "config_taskonomy"},
    reader="lib.data.taskonomy:Taskonomy",
    synthetic="lib.data.synthetic:prepare_synthetic",
    eval_batch="config",          # the reference tests Taskonomy at the training batch
    seg_ignore_index=255,
    depth_mask=True,
    seg_prior=True,
    keep_ratios={
        "cut": {90: 0.1, 70: 0.257, 50: 0.5, 30: 0.675},              # ESCM create_pruning.ipynb
        "disparse_static": {90: 0.097, 70: 0.257, 50: 0.46, 30: 0.675},
        "disparse_pt": {90: 0.2, 70: 0.3, 50: 0.5, 30: 0.7},
    },
    # DiSparse's config_taskonomy.py: INT=250, END=75000, gradients in 8 pieces.
    disparse_dynamic={"interval": 250, "end": 75000, "grad_chunks": 8},
    disparse_pt_score="gradient",
    iou_batches=200,
    calibration_keys=("depth_mask",),
))
