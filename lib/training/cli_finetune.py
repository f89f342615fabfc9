"""``python -m lib finetune``: fine-tune a pruned compact model with its masks held.

    python -m lib finetune --data-root D \
        --checkpoint runs/nyu/cut/pruned.pth --out runs/nyu/cut/finetune

``--checkpoint`` (formerly ``--pruned``) is a file written by ``lib.pruning.save_pruned``
(state dict with weight_orig/weight_mask + JSON sidecar with the architecture) or a
fine-tuning checkpoint; the config and profile its sidecar records are used unless
``--config`` / ``--profile`` say otherwise (a contradicting one is refused).
Works under ``torchrun`` like ``python -m lib train``.
"""
from __future__ import annotations

import argparse

from lib.cli_args import add_renamed

from .cli_common import add_config_arguments, add_run_arguments, run_and_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, reads="--checkpoint")
    add_renamed(parser, "--checkpoint", "--pruned", required=True,
                help="pruned compact model to fine-tune")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import functools

    from lib.checkpoints import find_sidecar, load_network, read_sidecar

    from .finetune import finetune

    side = find_sidecar(args.checkpoint)   # the pruning record goes on into final_model.json
    meta = read_sidecar(side).get("meta", {}) if side is not None else {}
    return run_and_report(args, lambda cfg: load_network(args.checkpoint, cfg),
                          functools.partial(finetune, meta=meta), "fine-tuned")
