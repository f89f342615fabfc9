"""benchmarks/bench_gpu.py: says there is no GPU and exits 0 without CUDA; its --device cpu
--tiny smoke mode runs every section (train, loaders, fine-tuning, prune, study)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module   # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys):
    bench = _script()
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    assert "no CUDA GPU on this machine, nothing measured" in capsys.readouterr().out
    assert bench.main(["--device", "cpu"]) == 2   # the CPU is for the --tiny smoke test only


@pytest.mark.slow
def test_cpu_smoke_mode_runs_every_section(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device",
                           "cpu", "--tiny", "--rounds", "1", "--steps", "2"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("fp32:", "bf16:", "bf16+channels_last:", "bf16 / fp32 throughput",
                 "first two batches identical for 0 and 2 workers: True",
                 "GPU busy fraction", "masked step:", "masks identical: True",
                 "exit 0, results.csv written: True"):
        assert line in out, (line, out)
