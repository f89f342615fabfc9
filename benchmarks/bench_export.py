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

- int8 (lib.export.quantize): every network above quantized statically (onnxruntime QDQ,
  per-channel int8 weights, uint8 activations calibrated on ``--calibration-batches`` images of
  the synthetic NYU train split at the input size), stored as the sparse int8 artifact; its
  onnxruntime latency timed round-robin with the float rows; with ``--pt2e`` (default) also
  the same network through PyTorch's PT2E x86 quantizer + ``torch.compile`` (PyTorch column).

Prints side by side: file-size ratio artifact / dense state_dict (target <= 0.06), latency
ratio compact / dense (target <= 0.55), structured latency ratio vs dense (target <= 0.2), in
PyTorch and onnxruntime, median of ``--repeats`` CPU runs at ``--threads`` threads; and the
int8 targets: structured 50 % + int8 ORT latency <= 0.06 and size <= 0.03, unstructured 90 % +
int8 artifact <= 0.02 of the dense fp32 network.

int8 Δ (task metrics of int8 vs its float model, target within 1 % per metric) needs a
*trained* network: random reference-width weights give near-constant outputs whose metrics say
nothing. The second part therefore trains the cpu-profile network (``--delta-iters`` on the
synthetic NYU train split, or loads ``--delta-checkpoint``), prunes it the same three ways
(CUT on real scores), quantizes each and evaluates float and int8 on the synthetic test split.

    python benchmarks/bench_export.py               # 1x3x224x288, 2 threads
    python benchmarks/bench_export.py --no-pt2e --no-delta   # size/latency only, faster
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
from lib.export.report_int8 import Int8Options, TaskMetrics  # noqa: E402
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
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--pt2e", action=argparse.BooleanOptionalAction, default=True,
                        help="also time PT2E x86 int8 + torch.compile (PyTorch column)")
    parser.add_argument("--delta", action=argparse.BooleanOptionalAction, default=True,
                        help="measure int8 task metrics on a trained cpu-profile network")
    parser.add_argument("--delta-iters", type=int, default=300, help="training iterations")
    parser.add_argument("--delta-finetune-iters", type=int, default=60,
                        help="fine-tuning of each pruned network before quantizing it")
    parser.add_argument("--delta-checkpoint", type=Path, default=None,
                        help="a trained cpu-profile nyuv2_3task base model instead of training")
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

    calibration = synthetic_calibration(cfg, shape, args.calibration_batches, args.seed)
    int8 = Int8Options(calibration, args.calibration_batches, cfg.DATASET, pt2e=args.pt2e)
    rows = size_speed_report(dense, compact, shape, threads=args.threads, repeats=args.repeats,
                             warmup=1, out_dir=args.out, extra={"structured": structured},
                             int8=int8)
    print(report_markdown(rows))
    d, c, s, dq, cq, sq = rows
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
    torch_ratio = (lambda r: f"{r['torch_latency_ratio']:9.3f}" if "torch_latency_ratio" in r
                   else f"{'-':>9s}")
    print(f"{'latency: structured 50% + int8 / dense fp32':58s} {torch_ratio(sq)} "
          f"{sq['onnx_latency_ratio']:9.3f} {'<= 0.06':>8s}")
    print(f"{'file size: structured 50% + int8 artifact / dense sd':58s} "
          f"{sq['size_ratio_int8']:9.4f} {'':>9s} {'<= 0.03':>8s}")
    print(f"{'file size: unstructured 90% + int8 artifact / dense sd':58s} "
          f"{cq['size_ratio_int8']:9.4f} {'':>9s} {'<= 0.02':>8s}")
    print(f"{'latency: unstructured 90% + int8 / dense fp32':58s} {torch_ratio(cq)} "
          f"{cq['onnx_latency_ratio']:9.3f}")
    print(f"{'latency: dense + int8 / dense fp32':58s} {torch_ratio(dq)} "
          f"{dq['onnx_latency_ratio']:9.3f}")
    print(f"(PyTorch column of int8 rows: PT2E x86 quantizer + torch.compile; unstructured int8 "
          f"artifact: {cq['artifact_int8_values_stored']} int8 values in "
          f"{cq['artifact_int8_value_bytes']} bytes, masks {cq['artifact_int8_mask_bytes']} "
          f"bytes; pruned weights non-zero after int8: {cq['pruned_nonzero_after_int8']})")
    if args.delta:
        delta_rows = int8_delta_part(args)
        rows += [dict(r, model=f"cpu {r['model']}") for r in delta_rows]
    if args.plot is not None:
        plot_report(rows[:6], args.plot)
        if args.delta:
            plot_report(delta_rows, args.plot.with_name(f"{args.plot.stem}_delta.png"))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def synthetic_calibration(cfg, shape, num_batches: int, seed: int):
    """Batches of the synthetic NYU train split rendered at the benchmark's input size."""
    from lib.data import build_loader
    from lib.data.synthetic import prepare_synthetic

    sized = load_config(cfg.CONFIG_NAME, IMAGE_SHAPE=tuple(shape[2:]))
    sized.DATA_ROOT = prepare_synthetic(sized, num_train=num_batches * shape[0], num_test=1,
                                        seed=seed, progress=False)
    return build_loader(sized, "train", batch_size=shape[0], augment=False, shuffle=False)


def int8_delta_part(args) -> list[dict]:
    """int8 vs float task metrics of a trained cpu-profile network, pruned three ways."""
    from lib.data import build_loader
    from lib.data.synthetic import prepare_synthetic
    from lib.metrics import SceneNetEval
    from lib.pruning import cut_prune, load_base_model
    from lib.training import train

    cfg = load_config("nyuv2_3task", profile="cpu")
    cfg.DATA_ROOT = prepare_synthetic(cfg, num_train=160, num_test=32, seed=args.seed,
                                      progress=False)
    criterion = SceneNetLoss.from_config(cfg)
    train_loader = build_loader(cfg, "train", seed=args.seed)
    started = time.perf_counter()
    if args.delta_checkpoint is not None:
        base = load_base_model(args.delta_checkpoint, cfg).eval()
        origin = f"loaded {args.delta_checkpoint}"
    else:
        import tempfile
        seed_everything(args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            result = train(SceneNet.from_config(cfg), criterion, train_loader, cfg, tmp,
                           max_iters=args.delta_iters, seed=args.seed, log=False)
            base = load_base_model(result.final_model, cfg).eval()
        origin = f"trained {args.delta_iters} iterations in {time.perf_counter() - started:.0f} s"
    compact = cut_prune(base, criterion, train_loader, cfg.PRUNE_NUM_BATCHES, None, [args.keep],
                        cfg.TASKS, sparsity=100 * args.sparsity).eval()
    structured = structured_cut_prune(base, criterion, train_loader, [args.keep],
                                      args.channel_sparsity, cfg.PRUNE_NUM_BATCHES).eval()
    if args.delta_finetune_iters:  # deployment order: prune, fine-tune (masks held), quantize
        import tempfile
        from lib.training import finetune
        tuned = []
        for net in (compact, structured):
            with tempfile.TemporaryDirectory() as tmp:
                tuned.append(finetune(net, criterion, train_loader, cfg, tmp,
                                      max_iters=args.delta_finetune_iters, seed=args.seed,
                                      log=False).net.cpu().eval())
        compact, structured = tuned
        origin += f"; pruned networks fine-tuned {args.delta_finetune_iters} iterations"
    shape = (1, 3, *cfg.IMAGE_SHAPE)
    calibration = build_loader(cfg, "train", batch_size=1, augment=False, shuffle=False)
    test = build_loader(cfg, "test", batch_size=1, shuffle=False)
    rows = size_speed_report(
        base, compact, shape, threads=args.threads, repeats=args.repeats, warmup=1,
        extra={"structured": structured},
        int8=Int8Options(calibration, args.calibration_batches, cfg.DATASET),
        metrics=TaskMetrics(test, lambda tasks: SceneNetEval.from_config(cfg, tasks=tasks)))
    print(f"\nint8 task metrics: cpu-profile network ({cfg.BACKBONE_NAME} width "
          f"{cfg.WIDTH_MULT}, {cfg.IMAGE_SHAPE}), {origin}; synthetic NYU test split "
          f"({len(test)} images); calibration {args.calibration_batches} train images")
    print(report_markdown(rows))
    print(f"{'int8 vs float, per task (Δ %, lib.metrics.per_task_delta)':58s} "
          f"{'max |metric change| %':>22s} {'target':>8s}")
    for row in rows:
        if "float_model" in row:
            deltas = ", ".join(f"{k.split(':')[1]} {v:+.3f}" for k, v in row.items()
                               if k.startswith("delta_vs_float:") and v is not None)
            change = row["max_abs_metric_change_pct"]
            print(f"{row['model'] + ': ' + deltas:58s} "
                  f"{'-' if change is None else f'{change:.3f}':>22s} {'<= 1':>8s}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
