"""``python -m lib evaluate``: metrics of any checkpoint on the test split, saved beside it.

    python -m lib evaluate --config nyuv2_3task --profile cpu --data-root D \
        --checkpoint runs/nyu/base/best.pth          # -> runs/nyu/base/best.metrics.json

Reads training checkpoints, pruned/fine-tuned models (JSON sidecar) and reference state dicts
(architecture from the config); the config and profile a sidecar records are used unless
``--config`` / ``--profile`` say otherwise (a contradicting one is refused).
"""
from __future__ import annotations

import argparse
import json

from lib.cli_args import add_out_argument

from .cli_common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, reads="--checkpoint")
    parser.add_argument("--checkpoint", required=True, help="the model to evaluate")
    add_out_argument(parser, "metrics JSON (default: <checkpoint stem>.metrics.json beside it)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="test batch size (default: the reference's, 1 for the AdaShare "
                             "configs but Taskonomy, the config's EVAL_BATCH_SIZE otherwise)")


def run(args: argparse.Namespace) -> int:
    from lib.checkpoints import load_network
    from lib.data import build_loader, check_files
    from lib.utils import check_output_file

    from .evaluate import evaluate, metrics_path_for
    from .selection import default_eval_batch_size

    cfg = config_from_args(args)
    out = check_output_file(args.out or metrics_path_for(args.checkpoint), "metrics file")
    net = load_network(args.checkpoint, cfg)
    batch_size = args.batch_size or default_eval_batch_size(cfg)
    loader = build_loader(cfg, "test", batch_size=batch_size, shuffle=False, seed=args.seed)
    check_files(loader)
    metrics = evaluate(net, loader, cfg, device=args.device, out_path=out,
                       progress=not args.quiet)
    print(json.dumps(metrics, indent=2))
    print(f"saved {out}")
    return 0
