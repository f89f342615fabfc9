"""Engines that run a study's units (:mod:`lib.experiments.units`): Ray (default) or serial.

    outcome = run_units(jobs, todo, EngineOptions(engine="ray"), progress=True)

One queue over every job (a study: one config and seed): each job's base first, then its
cells; a cell depends on its base only (on Ray it takes the base task's object ref, so it
starts when that base is done, and the bases of several seeds train in parallel). Ray without
an address starts an embedded local instance for the run (no dashboard, token
authentication on, its files in a fresh short temp folder removed afterwards, nothing under
``~/.ray``) and stops it in a ``finally``; with ``address`` (``auto``, ``HOST:PORT``, or
``RAY_ADDRESS``) it connects to that cluster, whose nodes must see the study folder and the
project at the same paths (docs/CLUSTER.md).

Faults: a worker or node that dies mid-unit has its task retried up to ``max_retries`` times
(the unit resumes from its last checkpoint); a Python exception in a unit is not retried: it
is reported in :attr:`UnitsOutcome.failures` (one line each) and the other units go on. Each
Ray task's output goes to a log in its unit's folder (``base/task.log``,
``cells/<cid>/task.log``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .units import Cell, StudyJob, base_unit, cell_unit

ENGINES = ("ray", "serial")
ENGINE_ENV = "CUT_ENGINE"   # the default engine where none is given (the test suite: serial)


def default_engine() -> str:
    return os.environ.get(ENGINE_ENV, "ray")


@dataclass
class EngineOptions:
    """How units run. ``gpus_per_cell`` None: 1 when this machine has CUDA and the study does
    not ask for the CPU, else 0 (fractions share a GPU). ``cpus_per_cell``: the threads of each
    unit (``torch.set_num_threads``; the serial engine uses as many, so both engines compute
    the same numbers). ``num_cpus``: the embedded instance's CPUs (None: every core)."""
    engine: str = field(default_factory=default_engine)
    address: str | None = None
    gpus_per_cell: float | None = None
    cpus_per_cell: int = 1
    max_retries: int = 3
    num_cpus: int | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not one of {list(ENGINES)}"
                             + (f" (from {ENGINE_ENV})" if os.environ.get(ENGINE_ENV) ==
                                self.engine else ""))
        _check_number("cpus_per_cell", self.cpus_per_cell, integer=True, minimum=1)
        _check_number("max_retries", self.max_retries, integer=True, minimum=0)
        if self.num_cpus is not None:
            _check_number("num_cpus", self.num_cpus, integer=True, minimum=1)
        if self.gpus_per_cell is not None:
            _check_number("gpus_per_cell", self.gpus_per_cell, integer=False, minimum=0)
        if self.address is not None and self.engine != "ray":
            raise ValueError(f"address {self.address!r} is for the ray engine, not "
                             f"{self.engine!r}")

    @classmethod
    def of(cls, engine: "EngineOptions | str | None") -> "EngineOptions":
        if isinstance(engine, EngineOptions):
            return engine
        return cls() if engine is None else cls(engine=engine)

    def ray_address(self) -> str | None:
        """The cluster to connect to: ``address``, else ``RAY_ADDRESS``; None: embedded."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def gpus(self, jobs: Sequence[StudyJob]) -> float:
        if self.gpus_per_cell is not None:
            return float(self.gpus_per_cell)
        wants_cpu = all(job.spec.device == "cpu" for job in jobs)
        return 1.0 if torch.cuda.is_available() and not wants_cpu else 0.0


def _check_number(name: str, value, integer: bool, minimum: float) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} "
                         f">= {minimum}, got {value!r}")


@dataclass
class UnitsOutcome:
    """What the engine brought back: each job's base path, each computed cell's record (by
    job index and cell), the failed units (job index, unit, one-line error), and the CPU time
    the units reported (their own processes, summed)."""
    bases: dict[int, str] = field(default_factory=dict)
    records: dict[tuple[int, Cell], dict] = field(default_factory=dict)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    cpu_seconds: float = 0.0


def run_units(jobs: Sequence[StudyJob], todo: Sequence[Sequence[Cell]], options: EngineOptions,
              progress: bool = True, done: int = 0) -> UnitsOutcome:
    """Run every job's base and the cells ``todo[i]`` of job ``i``; one bar over all of them
    (``done``: cells already finished, read back by the driver)."""
    total = len(jobs) + sum(len(t) for t in todo) + done
    bar = tqdm(total=total, initial=done, desc=f"study ({options.engine})",
               disable=not progress, dynamic_ncols=True)
    try:
        run = _run_ray if options.engine == "ray" else _run_serial
        return run(jobs, todo, options, bar)
    finally:
        bar.close()


def _label(job: StudyJob, cell: Cell | None) -> str:
    from .spec import cell_id
    where = job.spec.out_dir
    return f"{where}: base" if cell is None else f"{where}: {cell_id(cell[1], cell[2], cell[0])}"


def unit_task(job: StudyJob, cell: Cell | None, base: dict | None, threads: int,
              log: bool) -> dict:
    """One unit (``cell`` None: the base) on ``threads`` threads; its value and the CPU time
    its process spent on it. ``log``: output to the unit's folder (``task.log``)."""
    torch.set_num_threads(threads)
    cpu, wall = time.process_time(), time.time()
    if log:
        from .spec import cell_id
        folder = job.out / ("base" if cell is None else
                            Path("cells") / cell_id(cell[1], cell[2], cell[0]))
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "task.log", "a") as f, redirect_stdout(f), redirect_stderr(f):
            print(f"{_stamp(wall)} host {socket.gethostname()} pid {os.getpid()} "
                  f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}"
                  f" threads {threads}", flush=True)
            value = _unit(job, cell, base)
            print(f"{_stamp(time.time())} {time.time() - wall:.2f} s, CPU "
                  f"{time.process_time() - cpu:.2f} s: done", flush=True)
    else:
        value = _unit(job, cell, base)
    return {"value": value, "cpu_seconds": time.process_time() - cpu}


def _stamp(seconds: float) -> str:
    """Local time to the millisecond (where a task waited shows between two tasks' logs)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + \
        f".{int(seconds % 1 * 1000):03d}"


def _unit(job: StudyJob, cell: Cell | None, base: dict | None):
    return base_unit(job) if cell is None else cell_unit(job, cell, base["value"])


def _run_serial(jobs, todo, options: EngineOptions, bar) -> UnitsOutcome:
    """Every unit in this process, in queue order (debugging; notebooks that want it)."""
    outcome = UnitsOutcome()
    threads = torch.get_num_threads()
    try:
        for i, job in enumerate(jobs):
            bar.set_postfix_str(_label(job, None))
            try:
                base = unit_task(job, None, None, options.cpus_per_cell, log=False)
                outcome.bases[i] = base["value"]
                outcome.cpu_seconds += base["cpu_seconds"]
            except Exception as exc:   # reported with the others; its cells cannot run
                outcome.failures.append((i, _label(job, None), one_line(exc)))
                outcome.failures += [(i, _label(job, c), "its base failed") for c in todo[i]]
                bar.update(1 + len(todo[i]))
                continue
            bar.update(1)
            for cell in todo[i]:
                bar.set_postfix_str(_label(job, cell))
                try:
                    result = unit_task(job, cell, base, options.cpus_per_cell, log=False)
                    outcome.records[(i, cell)] = result["value"]
                    outcome.cpu_seconds += result["cpu_seconds"]
                except Exception as exc:
                    outcome.failures.append((i, _label(job, cell), one_line(exc)))
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
    return outcome


def _run_ray(jobs, todo, options: EngineOptions, bar) -> UnitsOutcome:
    """Every unit as a Ray task: bases first in the queue, each cell after its base."""
    import ray

    outcome = UnitsOutcome()
    threads = options.cpus_per_cell
    jobs = [dataclasses.replace(job, max_loader_workers=threads - 1) for job in jobs]
    resources = dict(num_cpus=options.cpus_per_cell, num_gpus=options.gpus(jobs),
                     max_retries=options.max_retries, retry_exceptions=False)
    with ray_instance(options):
        task = ray.remote(unit_task).options(**resources)
        units: dict = {}
        base_refs = {}
        for i, job in enumerate(jobs):
            finished = finished_base(job)
            if finished is not None:    # nothing to run: its cells need not wait for a worker
                outcome.bases[i] = finished
                base_refs[i] = {"value": finished}
                bar.update(1)
                continue
            base_refs[i] = task.remote(job, None, None, threads, True)
            units[base_refs[i]] = (i, None)
        for i, job in enumerate(jobs):
            for cell in todo[i]:
                units[task.remote(job, cell, base_refs[i], threads, True)] = (i, cell)
        failed_bases: set[int] = set()
        pending = list(units)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i, cell = units[ref]
                bar.set_postfix_str(_label(jobs[i], cell))
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if cell is None:
                        failed_bases.add(i)
                    message = "its base failed" if cell is not None and i in failed_bases \
                        else one_line(exc)
                    outcome.failures.append((i, _label(jobs[i], cell), message))
                else:
                    outcome.cpu_seconds += result["cpu_seconds"]
                    if cell is None:
                        outcome.bases[i] = result["value"]
                    else:
                        outcome.records[(i, cell)] = result["value"]
                bar.update(1)
    return outcome


def finished_base(job: StudyJob) -> str | None:
    """The base model's path when :func:`~lib.experiments.units.base_unit` has nothing left to
    do (the model and its dense metrics are there), else None."""
    spec = job.spec
    path = Path(spec.base_checkpoint) if spec.base_checkpoint is not None else \
        job.out / "base" / "base_model.pth"
    done = path.exists() and (job.out / "base" / "dense_metrics.json").exists()
    return str(path) if done else None


def one_line(exc: BaseException) -> str:
    """An error as one line: a Ray task's original exception (type and message) when there
    is one, else the first line of the error's text."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def ray_instance(options: EngineOptions) -> Iterator[None]:
    """Ray for one run: connected to ``options.ray_address()``, or an embedded local instance
    (token authentication on with a fresh token kept in this process's environment, no
    dashboard, usage stats off, temp files in a fresh ``/tmp/cut-ray-*`` folder; all of it
    stopped and removed on exit). A Ray this process had already started is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = options.ray_address()
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            yield
        finally:
            ray.shutdown()
        return
    with token_auth_environment() as temp:
        try:   # a failed start may have left processes: shut them down too
            ray.init(address="local", num_cpus=options.num_cpus or os.cpu_count() or 1,
                     include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                     configure_logging=False)
            yield
        finally:
            ray.shutdown()


@contextmanager
def token_auth_environment(token: str | None = None) -> Iterator[str]:
    """The environment of a private Ray instance: token authentication on (``token``, default a
    fresh random one), usage stats off, a fresh temp folder (yielded); on exit the environment
    is restored, Ray's cached token forgotten and the folder removed."""
    import secrets
    # Short: Ray's socket paths under it must stay within the 107-byte limit of AF_UNIX.
    temp = tempfile.mkdtemp(prefix="cut-ray-", dir="/tmp")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": temp}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_token_cache()
    try:
        yield temp
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_token_cache()
        shutil.rmtree(temp, ignore_errors=True)


def _reset_token_cache() -> None:
    """Ray caches the token it read; the next instance of this process has another."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
        AuthenticationTokenLoader.instance().reset_cache()
        Config.initialize("")
    except (ImportError, AttributeError):
        pass
