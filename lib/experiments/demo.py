"""The demo's study: small enough for a laptop CPU, large enough to say something."""
from __future__ import annotations

from typing import Sequence

from .study import DEFAULT_METHODS, StudySpec

DEMO_CONFIG = "nyuv2_3task"   # the selections below are its tasks
DEMO_SELECTIONS = (("seg", "sn", "depth"), ("seg", "depth"))
# 70 % (where one-shot LTH and DiSparse-static start to fail) and 90 % (where only the
# data-driven methods hold); at 50 % every method but random lost nothing, so the demo spends
# its 10 minutes on the fine-tuning the control needs instead.
DEMO_SPARSITIES = (70, 90)
# The base model's schedule: the cpu profile's network and images, its learning rate decayed
# four times over the 300 iterations (2e-3 down to 5e-5), so that the 30 fine-tuning iterations
# of the control (dense model, fine-tuned like the pruned ones, at the profile's 1e-4) move it
# by a few percent only; with one decay, 12 fine-tuning iterations improved it by +18 % Δ and
# the comparison measured mostly that.
DEMO_BASE_SCHEDULE = {"INIT_LR": 2e-3, "DECAY_LR_FREQ": 75, "DECAY_LR_RATE": 0.4}
DEMO_BASE_ITERS = 300
DEMO_FINETUNE_ITERS = 30


def demo_spec(out_dir: str = "demo_output", seed: int = 0,
              methods: Sequence[str] = DEFAULT_METHODS, profile: str = "cpu") -> StudySpec:
    """CPU profile (``profile``) on synthetic NYU-v2: all three tasks and the mission's
    seg + depth pair.

    mIoU averages over the classes present in ground truth or prediction (``miou="present"``),
    not the reference's TP > 0 classes: with the quirk, a pruned model that stops predicting
    the hard classes *gains* mIoU, which would make the demo's comparison say the opposite of
    what happened. Tables for comparison with published numbers keep the reference default.
    """
    return StudySpec(config=DEMO_CONFIG, profile=profile, out_dir=out_dir, methods=tuple(methods),
                     sparsities=DEMO_SPARSITIES, selections=DEMO_SELECTIONS, seed=seed,
                     base_iters=DEMO_BASE_ITERS, finetune_iters=DEMO_FINETUNE_ITERS,
                     num_batches=4, synthetic_train=160, synthetic_test=16,
                     metric_options={"miou": "present"}, overrides=dict(DEMO_BASE_SCHEDULE))
