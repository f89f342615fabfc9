'''
Configuration used for NYU-v2 (3 tasks: segmentation, surface normals, depth) training & evaluation.

Values are the reference's. DATA_ROOT can be set without editing this file through the
CUT_DATA_ROOT environment variable or `lib.config.load_config(..., DATA_ROOT=...)`.
'''
import os


class Config:
    DATASET = "nyuv2_3"
    DATA_ROOT = os.environ.get("CUT_DATA_ROOT", "path/to/nyuv2/dataset")
    BACKBONE_NAME = 'ResNet34'
    WIDTH_MULT = 1.0          # 1.0 is the reference network
    CROP_H = 321
    CROP_W = 321
    TASKS = ["seg", "sn", "depth"]
    TASKS_NUM_CLASS = [40, 3, 1]

    LAMBDAS = [1, 20, 3]
    NUM_GPUS = 1
    BATCH_SIZE = 16 * NUM_GPUS
    # Data-loading worker processes (the original notebooks' num_workers=8), capped at this
    # machine's cores; results do not depend on it (docs/TRAINING.md).
    NUM_WORKERS = min(8, os.cpu_count() or 1)
    # Training steps between read-backs of the loss values (logged, NaN-checked).
    LOG_FREQ = 10
    # Mixed precision of training and evaluation (off | fp16 | bf16) and the channels_last
    # memory layout: off / False is float32 as the reference (docs/TRAINING.md).
    AMP = "off"
    CHANNELS_LAST = False
    MAX_ITERS = 20000 // NUM_GPUS
    DECAY_LR_FREQ = 4000 // NUM_GPUS
    DECAY_LR_RATE = 0.7

    INIT_LR = 1e-4
    WEIGHT_DECAY = 1e-4
    IMAGE_SHAPE = (480, 640)
    # False: frames are read at their stored size, as the reference reads them. True (the cpu
    # and tiny profiles): every frame is resized to IMAGE_SHAPE on load (docs/DATA.md).
    RESIZE_TO_IMAGE_SHAPE = False
    VAL_FREQ = 1000
    CKPT_FREQ = 1000

    PRUNE_NUM_BATCHES = 50
    # KEEP_RATIO_TABLE, the reference's keep ratio per nominal sparsity, is the dataset's
    # (lib/datasets/, keep_ratios["cut"]), set by lib.config.load_config.

    RETRAIN_EPOCH = 1000 // NUM_GPUS
    RETRAIN_LR = 1e-5
    RETRAIN_DECAY_LR_FREQ = 1000
    RETRAIN_DECAY_LR_RATE = 0.7

    # Not in the reference: > 0 recomputes BatchNorm statistics over this many training batches
    # at the end of training and fine-tuning (lib.training.batchnorm); 0 keeps the reference's.
    BN_RECALIBRATE_BATCHES = 0
