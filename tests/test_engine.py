"""The study on Ray: the same results as the serial engine, killed workers and lost nodes
survived (the cell resumes from its checkpoint), one driver per folder, a GPU per task.

Each test starts and stops its own Ray (an embedded instance, or a 2-node
``ray.cluster_utils.Cluster``), with temp folders under /tmp/cut-ray-* that are removed after,
and checks by pid that no process it started is left.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lib.experiments import EngineOptions, StudyFailed, StudySpec, run_study
from lib.experiments import engine as engine_module
from lib.experiments.lock import LOCK_NAME, StudyLocked, study_lock

FINETUNE_ITERS = 40       # long enough to kill a cell between its checkpoints (CKPT_FREQ 2)
CELLS = ("dense_ft_0_seg-depth", "cut_90_seg-depth")


def tiny_spec(out_dir, **changes):
    spec = dict(config="nyuv2_3task", profile="tiny", out_dir=str(out_dir), methods=("cut",),
                sparsities=(90,), selections=[("seg", "depth")], base_iters=2,
                finetune_iters=FINETUNE_ITERS, num_batches=1, synthetic_train=6,
                synthetic_test=2, metric_options={"miou": "present"})
    spec.update(changes)
    return StudySpec(**spec)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    saved = os.environ.get("CUT_SYNTHETIC_DIR")
    os.environ["CUT_SYNTHETIC_DIR"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("CUT_SYNTHETIC_DIR")
    else:
        os.environ["CUT_SYNTHETIC_DIR"] = saved


@pytest.fixture(scope="module")
def serial_csv(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    result = run_study(tiny_spec(out), progress=False, engine="serial")
    return result.table_csv.read_bytes()


def _pids_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[1].split()[0] != "Z":
            alive.append(pid)
    return alive


def _processes_under(path: str) -> list[int]:
    """Pids whose command line names ``path`` (Ray's processes name their session folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if path.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return _pids_alive(found)


def _done_lines(out: Path, cid: str) -> int:
    log = out / "cells" / cid / "task.log"
    return sum(line.endswith(" done") for line in log.read_text().splitlines())


@pytest.mark.slow   # a Ray instance or cluster: 20-60 s here
def test_ray_embedded_gives_the_serial_bytes_and_leaves_nothing(serial_csv, tmp_path,
                                                                 monkeypatch):
    made = []
    real = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(engine_module.tempfile, "mkdtemp", recording_mkdtemp)
    home_ray = Path.home() / ".ray"
    had_home_ray = home_ray.exists()
    token = os.environ.get("RAY_AUTH_TOKEN")
    out = tmp_path / "ray"
    result = run_study(tiny_spec(out), progress=False,
                       engine=EngineOptions(engine="ray", num_cpus=2))
    assert result.table_csv.read_bytes() == serial_csv
    assert result.cpu_seconds > 0
    assert len(made) == 1 and not Path(made[0]).exists()       # its temp folder removed
    assert _processes_under(made[0]) == []                      # and its processes gone
    assert home_ray.exists() == had_home_ray
    assert os.environ.get("RAY_AUTH_TOKEN") == token           # its token left with it
    for cid in CELLS:                                           # each task logged in its folder
        assert _done_lines(out, cid) == 1
    assert "pid" in (out / "base" / "task.log").read_text()
    assert not (out / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def cluster(data_dir):
    """Two simulated nodes of 1 CPU and 2 logical GPUs each, token authentication on."""
    from ray.cluster_utils import Cluster

    node_args = dict(num_cpus=1, num_gpus=2, include_dashboard=False)
    pids = []
    with engine_module.token_auth_environment("cut-test-" + os.urandom(16).hex()) as temp:
        (Path(temp) / "ray").mkdir()     # where the cluster writes its address (not /tmp/ray)
        cluster = None
        try:
            cluster = Cluster(initialize_head=True, head_node_args={**node_args,
                                                                    "temp_dir": temp})
            cluster.add_node(**node_args, temp_dir=temp)
            yield cluster
        finally:
            if cluster is not None:
                pids = [p.process.pid for node in cluster.list_all_nodes()
                        for procs in node.all_processes.values() for p in procs]
                cluster.shutdown()
    assert _pids_alive(pids) == []


def _in_thread(spec, options):
    box = {}

    def target():
        try:
            box["result"] = run_study(spec, progress=False, engine=options)
        except BaseException as exc:   # reported by the test
            box["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _running_cell(out: Path, accept=lambda pid: True, timeout=240.0):
    """(cid, worker pid) of a cell that has written a checkpoint and is still fine-tuning."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for cid in CELLS:
            folder = out / "cells" / cid
            if (folder / "last.pth").exists() and not (out / "cells" / f"{cid}.json").exists():
                lines = [ln for ln in (folder / "task.log").read_text().splitlines()
                         if " pid " in ln]
                pid = int(lines[-1].split(" pid ")[1].split()[0])
                if accept(pid):
                    return cid, pid
        time.sleep(0.005)
    raise AssertionError("no cell was caught mid-fine-tuning")


def _finish(thread, box):
    thread.join(timeout=600)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.slow   # a Ray instance or cluster: 20-60 s here
def test_a_gpu_per_task_and_a_failed_cell_reported_then_retried(cluster, serial_csv, tmp_path):
    out = tmp_path / "gpus"
    blocker = out / "cells" / "cut_90_seg-depth"    # a file where the cell's folder goes
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    options = EngineOptions(engine="ray", address=cluster.address, gpus_per_cell=1,
                            max_retries=1)
    with pytest.raises(StudyFailed, match="1 unit.*cut_90_seg-depth: .*Error") as failed:
        run_study(tiny_spec(out), progress=False, engine=options)
    assert "dense_ft" not in str(failed.value)
    assert (out / "cells" / "dense_ft_0_seg-depth.json").exists()      # the others went on
    assert not (out / "results.csv").exists()                            # no half table
    blocker.unlink()
    result = run_study(tiny_spec(out), progress=False, engine=options)  # the rerun retries it
    assert result.table_csv.read_bytes() == serial_csv
    for cid in CELLS:
        record = json.loads((out / "cells" / f"{cid}.json").read_text())
        assert record["visible_devices"] in ("0", "1") and record["device"] == "cpu"


@pytest.mark.slow   # a Ray instance or cluster: 20-60 s here
def test_a_killed_worker_resumes_its_cell_from_the_checkpoint(cluster, serial_csv, tmp_path):
    out = tmp_path / "killed"
    thread, box = _in_thread(tiny_spec(out), EngineOptions(engine="ray",
                                                           address=cluster.address))
    cid, pid = _running_cell(out)
    os.kill(pid, signal.SIGKILL)
    result = _finish(thread, box)
    assert result.table_csv.read_bytes() == serial_csv
    assert "resuming the fine-tuning" in (out / "cells" / cid / "task.log").read_text()
    for name in CELLS:
        assert _done_lines(out, name) == 1


@pytest.mark.slow   # a Ray instance or cluster: 20-60 s here
# The last test on the cluster: it leaves the head node alone.
def test_a_removed_node_s_cell_reruns_on_the_other_node(cluster, serial_csv, tmp_path):
    node = next(iter(cluster.worker_nodes))
    raylet = node.all_processes["raylet"][0].process.pid

    def on_node(pid):
        return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1]) == raylet
    out = tmp_path / "lost"
    thread, box = _in_thread(tiny_spec(out), EngineOptions(engine="ray",
                                                           address=cluster.address))
    cid, _ = _running_cell(out, accept=on_node)
    cluster.remove_node(node, allow_graceful=False)
    result = _finish(thread, box)
    assert result.table_csv.read_bytes() == serial_csv
    for name in CELLS:
        assert _done_lines(out, name) == 1


def test_a_second_driver_is_refused_before_it_writes(data_dir, tmp_path, capsys):
    from lib.cli import main

    out = tmp_path / "locked"
    with study_lock(out):
        with pytest.raises(StudyLocked, match=f"in use by another driver \\(pid {os.getpid()}"):
            run_study(tiny_spec(out), progress=False, engine="serial")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        code = main(["reproduce", "--profile", "tiny", "--out", str(out), "--methods", "cut",
                     "--engine", "serial"])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]   # after the data's bar
        assert err.startswith("error: study folder") and "Traceback" not in err
    assert not (out / LOCK_NAME).exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": gone.pid,
                                             "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(StudyLocked, match=f"stale lock .*delete {out / LOCK_NAME}"):
        run_study(tiny_spec(out), progress=False, engine="serial")


def test_a_cell_that_raises_is_listed_and_the_rest_goes_on(data_dir, tmp_path, monkeypatch):
    from lib.experiments import units

    real = units._compute_cell

    def failing(job, cell, base):
        if cell[1] == "cut":
            raise ValueError("boom")
        return real(job, cell, base)
    monkeypatch.setattr(units, "_compute_cell", failing)
    out = tmp_path / "failing"
    spec = tiny_spec(out, finetune_iters=2)
    with pytest.raises(StudyFailed, match="cut_90_seg-depth: ValueError: boom"):
        run_study(spec, progress=False, engine="serial")
    assert (out / "cells" / "dense_ft_0_seg-depth.json").exists()
    assert not (out / "cells" / "cut_90_seg-depth.json").exists()
    assert not (out / "results.csv").exists() and not (out / LOCK_NAME).exists()
    monkeypatch.setattr(units, "_compute_cell", real)
    result = run_study(spec, progress=False, engine="serial")
    # Records are checked as they are read: NaN / Infinity in a row, a NaN `seconds` are
    # refused before the table or a figure is rewritten.
    cell = out / "cells" / "cut_90_seg-depth.json"
    good = cell.read_text()
    table = result.table_csv.stat().st_mtime_ns
    for key, value, named in (("row", ("seg/Pixel Acc", float("nan")), "row/seg/Pixel Acc"),
                              ("row", ("seg/Pixel Acc", float("inf")), "row/seg/Pixel Acc"),
                              (None, ("seconds", float("nan")), "seconds")):
        record = json.loads(good)
        (record["row"] if key else record)[value[0]] = value[1]
        cell.write_text(json.dumps(record))
        with pytest.raises(ValueError, match=f"{cell}: {named} is not a finite number"):
            run_study(spec, progress=False, engine="serial")
        assert result.table_csv.stat().st_mtime_ns == table
    cell.write_text(good)


def test_a_refused_base_checkpoint_writes_nothing_that_blocks_the_rerun(data_dir, tmp_path,
                                                                        capsys):
    import torch

    from lib.cli import main
    from lib.experiments.study import study_config
    from lib.models import model_from_config

    given = tmp_path / "given"
    first = run_study(tiny_spec(tmp_path / "first", finetune_iters=2), progress=False,
                      engine="serial")
    pickled = tmp_path / "module.pth"
    torch.save(model_from_config(study_config(first.spec)), pickled)
    argv = ["reproduce", "--profile", "tiny", "--out", str(given), "--methods", "cut",
            "--sparsities", "90", "--tasks", "seg", "depth", "--max-iters", "2",
            "--num-batches", "1", "--synthetic-train", "6", "--synthetic-test", "2",
            "--engine", "serial"]
    assert main(argv + ["--checkpoint", str(pickled)]) == 2
    assert str(pickled) in capsys.readouterr().err
    assert not (given / "study.json").exists()
    good = tmp_path / "first" / "base" / "base_model.pth"
    assert main(argv + ["--checkpoint", str(good)]) == 0


def test_plan_prints_the_grid_and_a_cost_and_writes_nothing(data_dir, tmp_path, capsys):
    from lib.cli import main

    out = tmp_path / "planned"
    assert main(["reproduce", "--profile", "tiny", "--out", str(out), "--methods", "cut",
                 "--sparsities", "90", "--tasks", "seg", "depth", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "base: train" in printed and "cell cut_90_seg-depth: after base" in printed
    assert "ms per training iteration" in printed and "estimate:" in printed
    assert not out.exists()
