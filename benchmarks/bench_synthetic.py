"""Synthetic scene generation speed: samples/s per layout, written to disk as the loaders read it.

Compares, in the same run:
  * baseline  rendering without bounding-sphere culling (every ray tested against every
              primitive, for primary and shadow rays), one process;
  * culled    the default renderer, one process;
  * culled xN the default renderer in N worker processes (``write_dataset(workers=N)``;
              includes starting the processes, so it pays off for larger datasets).

    python benchmarks/bench_synthetic.py [--num 64] [--workers 2] [--layouts nyuv2_3 ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.synthetic import write_dataset  # noqa: E402
from lib.data.synthetic.layouts import sample_frame  # noqa: E402

SIZES = {"nyuv2_3": (128, 160), "cityscapes": (128, 256), "taskonomy": (128, 128)}


def render_rate(layout: str, num: int, cull: bool) -> float:
    h, w = SIZES[layout]
    start = time.perf_counter()
    for i in range(num):
        sample_frame(layout, 0, "train", i, h, w, cull=cull)
    return num / (time.perf_counter() - start)


def write_rate(layout: str, num: int, workers: int) -> float:
    h, w = SIZES[layout]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(Path(tmp) / "ds", layout, num, 0, h, w, seed=0, workers=workers)
        return num / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=64, help="samples per measurement")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layouts", nargs="+", default=list(SIZES))
    args = parser.parse_args()
    # write_dataset imports lib.utils (and torch) on first use: do it before timing. Not at
    # module level, since worker processes re-import this script.
    import lib.utils  # noqa: F401
    print(f"{'layout':<11} {'size':>8} | {'baseline':>9} {'culled':>8} {'ratio':>6} | "
          f"{'write x1':>9} {f'write x{args.workers}':>9} {'ratio':>6}   (samples/s)")
    for layout in args.layouts:
        h, w = SIZES[layout]
        base = render_rate(layout, max(8, args.num // 4), cull=False)
        culled = render_rate(layout, args.num, cull=True)
        one = write_rate(layout, args.num, 1)
        many = write_rate(layout, args.num, args.workers)
        print(f"{layout:<11} {h:>3}x{w:<4} | {base:9.1f} {culled:8.1f} {culled / base:5.1f}x | "
              f"{one:9.1f} {many:9.1f} {many / one:5.1f}x")


if __name__ == "__main__":
    main()
