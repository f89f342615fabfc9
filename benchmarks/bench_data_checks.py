"""Cost of the readers' file checks: ``read_arrays`` with the checks vs with them switched off.

Per layout, at the real stored size (synthetic frames: NYU 480x640, Cityscapes 256x512,
Taskonomy 512x512), in the same run and on the same files:
  * baseline  ``Reader.read_arrays`` with every ``lib.data.checks`` function replaced by a no-op
              (decode and the reference's processing only);
  * checked   ``Reader.read_arrays`` as shipped (plus dtype, channel, finiteness, range and
              label checks).

    python benchmarks/bench_data_checks.py [--num 4] [--repeats 10]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data import CityScapes, NYUv2, Taskonomy, checks  # noqa: E402
from lib.data import cityscapes, nyuv2, taskonomy  # noqa: E402
from lib.data.synthetic import write_dataset  # noqa: E402

SIZES = {"nyuv2_3": (NYUv2, 480, 640), "cityscapes": (CityScapes, 256, 512),
         "taskonomy": (Taskonomy, 512, 512)}
CHECKS = [name for name in dir(checks) if name.startswith("check_")]


@contextlib.contextmanager
def checks_off():
    """Every reader module's check functions replaced by no-ops for the duration."""
    saved = []
    for module in (nyuv2, cityscapes, taskonomy):
        for name in CHECKS:
            if hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def per_sample(ds, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(len(ds)):
            ds.read_arrays(i)
    return (time.perf_counter() - start) / (repeats * len(ds)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=4, help="samples per layout")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{'layout':<11} {'size':>8} | {'baseline':>9} {'checked':>9} {'ratio':>6}   "
          f"(ms per sample)")
    with tempfile.TemporaryDirectory() as tmp:
        for layout, (cls, h, w) in SIZES.items():
            root = write_dataset(Path(tmp) / layout, layout, 0, args.num, h, w, seed=0)
            ds = cls(root, "test", size=None) if cls is Taskonomy else cls(root, "test")
            per_sample(ds, 1)                                   # warm the page cache
            with checks_off():
                baseline = per_sample(ds, args.repeats)
            checked = per_sample(ds, args.repeats)
            print(f"{layout:<11} {f'{h}x{w}':>8} | {baseline:9.2f} {checked:9.2f} "
                  f"{checked / baseline:6.2f}")


if __name__ == "__main__":
    main()
