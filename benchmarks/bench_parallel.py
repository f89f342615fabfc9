"""Seeds in parallel processes vs one process on every core: bench-profile training throughput.

    python benchmarks/bench_parallel.py              # 60 iterations per measurement
    python benchmarks/bench_parallel.py --iters 200

Trains the ``bench`` profile's base network (what dominates ``bench_methods.py``: each seed
trains one for 2000 iterations) on the synthetic NYU-v2 data for ``--iters`` iterations,
three ways, each in a fresh process:

  A. one process, one thread per core (the baseline: how bench_methods ran before ``--jobs``);
  B. one process, one thread;
  C. one process per core, one thread each, all at once (``bench_methods.py``'s default);
  D. two processes per core, one thread each, all at once (more seeds than cores at a time).

Prints each process's seconds per iteration and the machine's iterations per second, with the
ratio to A.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_methods.py runs


def bench_config(data_dir: str):
    from lib.experiments.study import StudySpec, prepare_data, study_config

    spec = StudySpec(profile="bench", synthetic_train=320, synthetic_test=64)
    cfg = study_config(spec)
    os.environ["CUT_SYNTHETIC_DIR"] = data_dir
    prepare_data(spec, cfg)
    return cfg


def worker(threads: int, iters: int, data_dir: str) -> dict:
    """Train for ``iters`` iterations on ``threads`` threads; the seconds it took."""
    import torch

    from lib.losses import losses_from_config
    from lib.models import model_from_config
    from lib.training import make_loaders, train
    from lib.utils import seed_everything

    torch.set_num_threads(threads)
    cfg = bench_config(data_dir)
    cfg.VAL_FREQ = cfg.CKPT_FREQ = 10 ** 9       # the loop only (validation is not timed)
    seed_everything(0)
    net, criterion = model_from_config(cfg), losses_from_config(cfg)
    loaders = make_loaders(cfg, val_fraction=0.1, seed=0)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        train(net, criterion, loaders.train, cfg, run_dir, max_iters=iters, seed=0,
              overwrite=True, log=False)
        seconds = time.perf_counter() - started
    return {"threads": threads, "iters": iters, "seconds": seconds}


def launch(threads: int, iters: int, data_dir: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", str(threads),
                             "--iters", str(iters), "--data", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def collect(procs: list[subprocess.Popen]) -> list[dict]:
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--data", default=None, help="synthetic data folder (default: a temp)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iters < 1:
        print(f"bench_parallel: --iters must be >= 1, got {args.iters}", file=sys.stderr)
        return 2
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.iters, args.data)))
        return 0
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or tmp
        bench_config(data_dir)                       # generate the data once, untimed
        rows = []
        for name, threads, count in (("A. 1 process x %d threads (baseline)" % cores, cores, 1),
                                     ("B. 1 process x 1 thread", 1, 1),
                                     ("C. %d processes x 1 thread, at once" % cores, 1, cores),
                                     ("D. %d processes x 1 thread, at once" % (2 * cores), 1,
                                      2 * cores)):
            results = collect([launch(threads, args.iters, data_dir) for _ in range(count)])
            per_iter = [r["seconds"] / r["iters"] for r in results]
            rate = sum(1 / p for p in per_iter)      # iterations per second, machine-wide
            rows.append((name, max(per_iter), rate))
    base = rows[0][2]
    print(f"bench profile base training, {args.iters} iterations, {cores} cores")
    print(f"{'':42} {'s/iter per process':>19} {'iters/s (machine)':>18} {'vs A':>6}")
    for name, per_iter, rate in rows:
        print(f"{name:42} {per_iter:19.3f} {rate:18.2f} {rate / base:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
