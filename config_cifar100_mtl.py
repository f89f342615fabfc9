'''
Configuration used for CIFAR-100 as 20 five-way domains (one per coarse class), the min-max
framework's multi-domain benchmark (`trainer_cifar.py` of EngravedMemories/MTL-Minmax).

VGG-16 with per-domain BatchNorm and heads; each iteration takes one batch of 32 from every
domain; SGD 0.1, momentum 0.9, weight decay 5e-4, cosine annealing over 200 epochs; equal task
weights. The training engine counts iterations: an epoch is 79 steps (2500 training images per
domain, last batch kept); the reference steps its schedule once per epoch. OPTIMIZER /
MOMENTUM / LR_SCHEDULE record the reference's choice. DATA_ROOT is the folder that holds
`cifar-100-python/`; it can be set through the CUT_DATA_ROOT environment variable or
`lib.config.load_config(..., DATA_ROOT=...)`.
'''
import math
import os

DOMAINS = 20
DOMAIN_TRAIN_SIZE = 2500


class Config:
    DATASET = "cifar100_mtl"
    DATA_ROOT = os.environ.get("CUT_DATA_ROOT", "path/to/cifar")   # holds cifar-100-python/
    MODEL = "MultiDomainVGG16"
    WIDTH_MULT = 1.0          # 1.0 is the reference network
    IMAGE_SHAPE = (32, 32)
    RESIZE_TO_IMAGE_SHAPE = False   # CIFAR images are 32x32; nothing is resized
    CROP_H = 32               # RandomCrop(32, padding=4)
    CROP_W = 32
    TASKS = [f"class_{d}" for d in range(DOMAINS)]
    TASKS_NUM_CLASS = [5] * DOMAINS
    LAMBDAS = [1] * DOMAINS

    OPTIMIZER = "sgd"
    MOMENTUM = 0.9
    LR_SCHEDULE = "cosine"
    BATCH_SIZE = 32           # per domain and step
    EVAL_BATCH_SIZE = 32      # the test loaders' batch (trainer_cifar.py)
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
    ITERS_PER_EPOCH = math.ceil(DOMAIN_TRAIN_SIZE / BATCH_SIZE)
    MAX_ITERS = EPOCHS * ITERS_PER_EPOCH
    INIT_LR = 0.1
    WEIGHT_DECAY = 5e-4
    DECAY_LR_FREQ = MAX_ITERS   # the cosine period (T_max = all of training)
    DECAY_LR_RATE = 0.0         # unused by the cosine schedule
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
