"""One driver per study folder: an exclusive lock file, ``<folder>/.study.lock``.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local and NFS v3+ file systems) and
holds its holder's host, pid and start time; it is removed when the driver ends, however it
ends short of being killed. A lock whose holder is gone (same host, no such process) is
reported as stale with how to clear it; it is never taken over silently, as the holder may be
on another host.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

LOCK_NAME = ".study.lock"


class StudyLocked(RuntimeError):
    """Another driver holds (or held, if stale) the study folder."""


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def describe(path: Path) -> str:
    """Why the lock at ``path`` refuses a driver, with how to clear it."""
    try:
        holder = json.loads(path.read_text())
        host, pid, started = holder["host"], int(holder["pid"]), holder["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return (f"study folder {path.parent} is locked by {path}, which is unreadable; if no "
                f"driver runs on this folder, delete {path}")
    who = f"pid {pid} on host {host} since {started}"
    if host == socket.gethostname() and not _alive(pid):
        return (f"study folder {path.parent} has a stale lock ({who}; that process is gone): "
                f"delete {path} to clear it")
    return (f"study folder {path.parent} is in use by another driver ({who}); wait for it to "
            f"finish, or if that driver is dead, delete {path}")


@contextmanager
def study_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock (the folder is created if needed) for the ``with`` block; a
    one-line :class:`StudyLocked` naming the holder when another driver has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise StudyLocked(describe(path)) from None
    mine = json.dumps(_holder())
    with os.fdopen(fd, "w") as f:
        f.write(mine)
    try:
        yield path
    finally:
        try:
            if path.read_text() == mine:
                path.unlink()
        except OSError:
            pass


@contextmanager
def study_locks(folders: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Every folder's lock, or none (those taken are released when one is refused)."""
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(study_lock(folder))
        yield
