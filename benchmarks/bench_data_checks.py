"""Cost of the readers' file checks: ``read_arrays`` with the checks vs with them switched off.

Per layout, at the real stored size (synthetic frames: NYU 480x640, Cityscapes 256x512,
Taskonomy 512x512), in the same run and on the same files:
  * baseline  ``Reader.read_arrays`` with every ``lib.data.checks`` function replaced by a no-op
              (decode and the reference's processing only);
  * checked   ``Reader.read_arrays`` as shipped (plus dtype, channel, finiteness, range and
              label checks).
Then ``lib.data.check_content`` over the split (what ``train`` / ``finetune`` run on their
validation and test splits before writing anything): its first pass (every entry read) vs a
second one answered from its cache of passed files (one ``stat`` per file).

    python benchmarks/bench_data_checks.py [--num 4] [--repeats 10]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data import CityScapes, NYUv2, Taskonomy, check_content, checks  # noqa: E402
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


def content_check(ds, cache: Path) -> tuple[float, float]:
    """ms per sample of ``check_content``'s first pass and of a cached one."""
    os.environ["CUT_CACHE_DIR"] = str(cache)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        check_content(ds, progress=False)
        times.append((time.perf_counter() - start) / len(ds) * 1e3)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=4, help="samples per layout")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{'layout':<11} {'size':>8} | {'baseline':>9} {'checked':>9} {'ratio':>6}   "
          f"(ms per sample)")
    content = []
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
            content.append((layout, h, w, *content_check(ds, Path(tmp) / f"cache-{layout}")))
    print(f"\n{'layout':<11} {'size':>8} | {'first':>9} {'cached':>9} {'ratio':>6}   "
          f"(check_content, ms per sample)")
    for layout, h, w, first, cached in content:
        print(f"{layout:<11} {f'{h}x{w}':>8} | {first:9.2f} {cached:9.3f} "
              f"{cached / first:6.3f}")


if __name__ == "__main__":
    main()
