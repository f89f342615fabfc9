"""Edge export benchmark: is the compact model really smaller and faster than the dense one?

Baseline: the reference-width 3-task NYU SceneNet (ResNet-34, width 1.0, tasks seg/sn/depth),
measured in the same run. Compared:

- compact: keep 1 of 3 tasks (``--keep``) at 90 % unstructured sparsity, stored as the
  lib.export artifact; masks are a one-shot global |w| magnitude mask over that task model
  (backbone + its head) of *randomly initialised* weights (seeded). File sizes depend only on the
  shapes and the number of kept weights, so random weights give the same size figures as trained
  ones; latency does not depend on the values at all (dense kernels).
- structured: the same task, structured CUT (lib.pruning.structured) at 50 % channel sparsity of
  the kept network, channels physically removed; scores from one random batch (random targets).

Prints side by side: file-size ratio artifact / dense state_dict (target <= 0.06), latency
ratio compact / dense (target <= 0.55), structured latency ratio vs dense (target <= 0.2), in
PyTorch and onnxruntime, median of ``--repeats`` CPU runs at ``--threads`` threads.

    python benchmarks/bench_export.py               # 1x3x224x288, 2 threads
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other processes, spinning
# threads at PyTorch's many barriers cost several times the compute (must precede the torch import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_config  # noqa: E402
from lib.export import plot_report, report_markdown, size_speed_report  # noqa: E402
from lib.losses import SceneNetLoss  # noqa: E402
from lib.models import SceneNet  # noqa: E402
from lib.pruning import global_magnitude_masks, install_masks, select_tasks  # noqa: E402
from lib.pruning.structured import count_channels, structured_cut_prune  # noqa: E402
from lib.utils import seed_everything  # noqa: E402


def random_batch(cfg, shape, seed: int) -> dict[str, torch.Tensor]:
    """A batch with the NYU loaders' keys and value ranges (random targets)."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = shape
    normal = nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
    return {"img": torch.randn(shape, generator=g) * 50,
            "seg": torch.randint(0, cfg.TASKS_NUM_CLASS[0], (n, 1, h, w), generator=g),
            "normal": (normal + 1) * 127.5,
            "depth": torch.rand(n, 1, h, w, generator=g) * 5 + 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", default="seg", help="the one task kept")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--channel-sparsity", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None, help="keep the files written here")
    parser.add_argument("--plot", type=Path, default=None, help="write the report plot (PNG)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shape = (1, 3, args.height, args.width)

    cfg = load_config("nyuv2_3task")  # reference: ResNet34, width 1.0, seg/sn/depth
    dense = SceneNet.from_config(cfg).eval()

    compact = select_tasks(dense, [args.keep]).eval()
    # One-shot global |w| over the compact task model (lib.pruning's LTH one-shot masks).
    install_masks(compact, global_magnitude_masks(compact, 1.0 - args.sparsity))

    criterion = SceneNetLoss.from_config(cfg)
    loader = [random_batch(cfg, shape, seed=args.seed)]
    structured = structured_cut_prune(dense, criterion, loader, [args.keep],
                                      channel_sparsity=args.channel_sparsity,
                                      num_batches=1).eval()
    print(f"built networks in {time.perf_counter() - start:.0f} s; channels dense "
          f"{count_channels(dense)} -> structured {count_channels(structured)}", flush=True)

    rows = size_speed_report(dense, compact, shape, threads=args.threads, repeats=args.repeats,
                             warmup=1, out_dir=args.out, extra={"structured": structured})
    print(report_markdown(rows))
    d, c, s = rows
    sd_ratio = c["state_dict_bytes"] / d["state_dict_bytes"]
    print(f"\ncompact artifact fp32: {c['artifact_values_stored']} kept values in "
          f"{c['artifact_value_bytes']} bytes (raw {4 * c['artifact_values_stored']}), masks "
          f"{c['artifact_mask_bytes']} bytes; with uncompressed values the ratio would be "
          f"{(c['artifact_bytes'] - c['artifact_value_bytes'] + 4 * c['artifact_values_stored']) / d['state_dict_bytes']:.4f}")
    print(f"baseline: dense 3-task {cfg.BACKBONE_NAME} width {dense.width_mult} "
          f"state_dict {d['state_dict_bytes'] / 2**20:.1f} MiB; input {shape}; "
          f"{args.threads} CPU threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
          f"median of {args.repeats} runs, timed round-robin")
    print(f"{'measure':58s} {'PyTorch':>9s} {'ORT':>9s} {'target':>8s}")
    print(f"{'file size: compact artifact fp32 / dense state_dict':58s} "
          f"{c['size_ratio']:9.4f} {'':>9s} {'<= 0.06':>8s}")
    print(f"{'file size: compact artifact fp16 / dense state_dict':58s} "
          f"{c['size_ratio_fp16']:9.4f} {'':>9s} {'':>8s}")
    print(f"{'file size: compact masked state_dict / dense state_dict':58s} "
          f"{sd_ratio:9.4f} {'':>9s} {'':>8s}")
    print(f"{'latency: compact (1 of 3 tasks, 90% unstructured) / dense':58s} "
          f"{c['torch_latency_ratio']:9.3f} {c['onnx_latency_ratio']:9.3f} {'<= 0.55':>8s}")
    print(f"{'latency: structured (50% channels) / dense':58s} "
          f"{s['torch_latency_ratio']:9.3f} {s['onnx_latency_ratio']:9.3f} {'<= 0.2':>8s}")
    print(f"{'MACs: structured / dense':58s} {s['macs_ratio']:9.3f}")
    if args.plot is not None:
        plot_report(rows, args.plot)
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
