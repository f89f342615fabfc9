"""NYU-v2 in MTAN's pre-processed layout (``cfg.DATASET == "nyuv2_mtan"``): the min-max data,
read by the ``nyuv2_mtan`` (SegNet-MTAN) and ``nyuv2_deeplab`` configs."""
from .nyuv2 import DISPARSE_NYU
from .spec import DatasetSpec, register_dataset

NYUV2_MTAN = register_dataset(DatasetSpec(
    name="nyuv2_mtan",
    summary="NYU-v2 in MTAN's format: segmentation (13 classes), depth, normals",
    tasks=("seg", "depth", "normal"),
    configs={"nyuv2_mtan": "config_nyuv2_mtan", "nyuv2_deeplab": "config_nyuv2_mtan:DeepLabConfig"},
    reader="lib.data.nyuv2_mtan:NYUv2MTAN",
    synthetic="lib.data.synthetic:prepare_synthetic",
    losses="lib.losses:mtan_losses",
    evaluator="lib.metrics_minmax:NYUv2MTANEval",
    metric_options="lib.metrics_minmax:OPTIONS",
    panels={"seg": "labels", "depth": "depth", "normal": "normals"},
    image_to_rgb="lib.data.nyuv2_mtan:image_to_rgb",
    # The min-max code prunes exactly the nominal ratio (0.975 = 40x, 0.983 = 60x): no table.
    keep_ratios={"cut": {}},
    # DiSparse has no setting for this benchmark: its NYU-v2 one (the same images), stated here.
    disparse_dynamic=DISPARSE_NYU,
))
