'''
Configurations used for NYU-v2 in MTAN's format (13-class segmentation, depth, surface normals at
288x384), the min-max framework's dense benchmark (EngravedMemories/MTL-Minmax).

`Config` ("nyuv2_mtan") is the SegNet-MTAN setup of `prune_apgda/trainer_apgda.py`: Adam 1e-4,
StepLR(100 epochs, 0.5), batch 2, 200 epochs, losses weighted 1 / 1.5 / 3 (the trainer's
fixed depth and normal multipliers under equal task weighting). `DeepLabConfig`
("nyuv2_deeplab") is the DeepLabv3 setup of `trainer_nyuv2.py`: SGD 0.1, momentum 0.9,
weight decay 5e-4, cosine annealing over 200 epochs, batch 4, equal weights, an L1 loss on the
normals (NORMAL_LOSS; SegNet-MTAN's trainer uses 1 - cosine); MODEL is the MTAN variant (its
default `--network mtan`), "SplitDeepLabv3" is the split one.

The training engine counts iterations: epochs are converted with the reference's iterations
per epoch (795 training images, last batch kept). The reference steps its schedules once per
epoch. OPTIMIZER / MOMENTUM / LR_SCHEDULE record the reference's choice. DATA_ROOT can be set
through the CUT_DATA_ROOT environment variable or `lib.config.load_config(..., DATA_ROOT=...)`.
'''
import math
import os

NYUV2_MTAN_TRAIN_SIZE = 795


class Config:
    DATASET = "nyuv2_mtan"
    DATA_ROOT = os.environ.get("CUT_DATA_ROOT", "path/to/nyuv2")   # holds train/ and val/
    MODEL = "SegNetMTAN"
    WIDTH_MULT = 1.0          # 1.0 is the reference network
    IMAGE_SHAPE = (288, 384)
    RESIZE_TO_IMAGE_SHAPE = False   # frames are read as stored (the cpu/tiny profiles resize)
    CROP_H = 288              # create_dataset.py crops the scaled sample back to 288x384
    CROP_W = 384
    AUG_SCALES = (1.0, 1.2, 1.5)
    TASKS = ["seg", "depth", "normal"]
    TASKS_NUM_CLASS = [13, 1, 3]
    LAMBDAS = [1, 1.5, 3]
    NORMAL_LOSS = "cosine"    # prune_apgda's model_fit: 1 - cosine
    # Which normal targets are valid, in the loss and the metrics: "nonzero" (not (0, 0, 0)) or
    # "sum" (the reference's: components summing to non-zero; drops valid normals).
    NORMAL_MASK = "nonzero"

    OPTIMIZER = "adam"
    MOMENTUM = 0.0
    LR_SCHEDULE = "step"
    BATCH_SIZE = 2
    EVAL_BATCH_SIZE = 2       # the test loader's batch: the metrics average per batch
    # Data-loading worker processes (the original notebooks' num_workers=8), capped at this
    # machine's cores; results do not depend on it (docs/TRAINING.md).
    NUM_WORKERS = min(8, os.cpu_count() or 1)
    # Training steps between read-backs of the loss values (logged, NaN-checked).
    LOG_FREQ = 10
    # Mixed precision of training and evaluation (off | fp16 | bf16) and the channels_last
    # memory layout: off / False is float32 as the reference (docs/TRAINING.md).
    AMP = "off"
    CHANNELS_LAST = False
    EPOCHS = 200
    ITERS_PER_EPOCH = math.ceil(NYUV2_MTAN_TRAIN_SIZE / BATCH_SIZE)
    MAX_ITERS = EPOCHS * ITERS_PER_EPOCH
    INIT_LR = 1e-4
    WEIGHT_DECAY = 0.0
    DECAY_LR_FREQ = 100 * ITERS_PER_EPOCH
    DECAY_LR_RATE = 0.5
    VAL_FREQ = ITERS_PER_EPOCH
    CKPT_FREQ = ITERS_PER_EPOCH

    PRUNE_NUM_BATCHES = 50
    # KEEP_RATIO_TABLE, the reference's keep ratio per nominal sparsity, is the dataset's
    # (lib/datasets/, keep_ratios["cut"]), set by lib.config.load_config.

    # Its retrain stage trains the pruned network again with the base-training settings.
    RETRAIN_EPOCH = MAX_ITERS
    RETRAIN_LR = INIT_LR
    RETRAIN_DECAY_LR_FREQ = DECAY_LR_FREQ
    RETRAIN_DECAY_LR_RATE = DECAY_LR_RATE

    # Not in the reference: > 0 recomputes BatchNorm statistics over this many training batches
    # at the end of training and fine-tuning (lib.training.batchnorm); 0 keeps the reference's.
    BN_RECALIBRATE_BATCHES = 0


class DeepLabConfig(Config):
    MODEL = "MTANDeepLabv3"   # or "SplitDeepLabv3"
    LAMBDAS = [1, 1, 1]
    NORMAL_LOSS = "l1"        # utils.compute_loss: L1 on the normal components

    OPTIMIZER = "sgd"
    MOMENTUM = 0.9
    LR_SCHEDULE = "cosine"
    BATCH_SIZE = 4
    EVAL_BATCH_SIZE = 4
    EPOCHS = 200
    ITERS_PER_EPOCH = math.ceil(NYUV2_MTAN_TRAIN_SIZE / BATCH_SIZE)
    MAX_ITERS = EPOCHS * ITERS_PER_EPOCH
    INIT_LR = 0.1
    WEIGHT_DECAY = 5e-4
    DECAY_LR_FREQ = MAX_ITERS   # the cosine period (T_max = all of training)
    DECAY_LR_RATE = 0.0         # unused by the cosine schedule
    VAL_FREQ = ITERS_PER_EPOCH
    CKPT_FREQ = ITERS_PER_EPOCH

    RETRAIN_EPOCH = MAX_ITERS
    RETRAIN_LR = INIT_LR
    RETRAIN_DECAY_LR_FREQ = DECAY_LR_FREQ
    RETRAIN_DECAY_LR_RATE = DECAY_LR_RATE
