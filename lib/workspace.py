"""Where the workspace keeps its runs, so notebooks and commands agree on every path.

    runs/{CONFIG}-{PROFILE}/base/base_model.pth          the dense base model (train_baseline)
    runs/{CONFIG}-{PROFILE}/pruned/{method}_{S}_{tasks}.pth (+ .json)   a pruned model
    runs/{CONFIG}-{PROFILE}/finetune/<pruned stem>/      its fine-tuning run (train_prune)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

RUNS = Path("runs")


def pruned_filename(method: str, tasks: Sequence[str], sparsity: float | None = None,
                    keep_ratio: float | None = None) -> str:
    """``{method}_{sparsity}_{task-task}.pth`` (``{method}_keep{ratio}_...`` for a keep ratio)."""
    if sparsity is not None:
        tag = f"{sparsity:g}"
    elif keep_ratio is not None:
        tag = f"keep{keep_ratio:g}"
    else:
        raise ValueError("pruned_filename needs sparsity or keep_ratio")
    return f"{method}_{tag}_{'-'.join(tasks)}.pth"


def run_root(config: str, profile: str, runs: str | os.PathLike = RUNS) -> Path:
    """``runs/{config}-{profile}``: every run of one config and profile."""
    return Path(runs) / f"{config}-{profile}"
