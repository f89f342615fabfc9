"""The demo's study: small enough for a laptop CPU, large enough to say something."""
from __future__ import annotations

from typing import Sequence

from .study import DEFAULT_METHODS, StudySpec

DEMO_SELECTIONS = (("seg", "sn", "depth"), ("seg", "depth"))
DEMO_SPARSITIES = (50, 70, 90)


def demo_spec(out_dir: str = "demo_output", seed: int = 0,
              methods: Sequence[str] = DEFAULT_METHODS) -> StudySpec:
    """CPU profile on synthetic NYU-v2: all three tasks and the mission's seg + depth pair.

    mIoU averages over the classes present in ground truth or prediction (``miou="present"``),
    not the reference's TP > 0 classes: with the quirk, a pruned model that stops predicting
    the hard classes *gains* mIoU, which would make the demo's comparison say the opposite of
    what happened. Tables for comparison with published numbers keep the reference default.
    """
    return StudySpec(config="nyuv2_3task", profile="cpu", out_dir=out_dir, methods=tuple(methods),
                     sparsities=DEMO_SPARSITIES, selections=DEMO_SELECTIONS, seed=seed,
                     base_iters=250, finetune_iters=12, num_batches=4,
                     synthetic_train=160, synthetic_test=16, metric_options={"miou": "present"})
