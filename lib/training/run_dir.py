"""The run directory: what a run writes, and the checks made before anything is written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from lib.utils import atomic_temporary_target, remove_stale_temporaries

LAST = "last.pth"           # full checkpoint (resumable), rewritten every CKPT_FREQ and at the end
BEST = "best.pth"           # model of the best validation score so far
SPLIT = "split.json"        # model-selection split (which items validate)
HISTORY = "history.json"    # {name: [[iteration, value], ...]}
TENSORBOARD = "tb"          # tensorboardX event files
# Everything a run may write; overwrite=True removes only these, never other files.
OWN_OUTPUTS = (LAST, BEST, SPLIT, HISTORY, TENSORBOARD, "base_model.pth", "base_model.json",
               "final_model.pth", "final_model.json", "best.metrics.json",
               "final_model.metrics.json")
# What a run writes before its first checkpoint: a folder holding only these is a run that
# stopped before saving anything (e.g. at a bad data file), and a rerun may start over in it.
SETUP_OUTPUTS = (SPLIT, HISTORY, TENSORBOARD)


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool | str | os.PathLike,
                    overwrite: bool) -> Path:
    """Check (and create) ``run_dir``; raise a one-line error before touching anything.

    - resuming: the directory must hold the checkpoint to resume from;
    - otherwise an existing non-empty directory needs ``overwrite=True``, which removes this
      package's own outputs (:data:`OWN_OUTPUTS`) and leaves every other file alone; a
      directory holding only what a run writes before its first checkpoint
      (:data:`SETUP_OUTPUTS`: a run stopped by bad data before it saved anything, which cannot
      be resumed) is started over without it, so the corrected rerun is not refused;
    - the directory must be writable (checked with a probe file);
    - temporaries a killed process left beside this package's outputs (``.last.pth.*.tmp``,
      :func:`lib.utils.remove_stale_temporaries`) are deleted, resuming or overwriting.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run directory {run_dir} exists and is not a directory")
    if resume:
        ckpt = resume_path(run_dir, resume)
        if not ckpt.is_file():
            raise FileNotFoundError(f"cannot resume: checkpoint {ckpt} does not exist")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite and not _only_setup_outputs(run_dir):
            raise FileExistsError(f"run directory {run_dir} exists and is not empty; pass "
                                  f"overwrite=True (--overwrite) to replace its run, or "
                                  f"resume=True (--resume) to continue it")
        _check_writable(run_dir)
        for name in OWN_OUTPUTS:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None
    _check_writable(run_dir)
    remove_stale_temporaries(run_dir, OWN_OUTPUTS)
    return run_dir


def _only_setup_outputs(run_dir: Path) -> bool:
    """``run_dir`` holds nothing but :data:`SETUP_OUTPUTS` (and stale temporaries)."""
    return all(p.name in SETUP_OUTPUTS or p.name == _PROBE or
               atomic_temporary_target(p.name) in OWN_OUTPUTS for p in run_dir.iterdir())


def resume_path(run_dir: str | os.PathLike, resume: bool | str | os.PathLike) -> Path:
    """``resume=True`` -> ``run_dir/last.pth``; a path -> that file."""
    return Path(run_dir) / LAST if resume is True else Path(resume)


_PROBE = ".write_probe"


def _check_writable(run_dir: Path) -> None:
    probe = run_dir / _PROBE
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"run directory {run_dir} is not writable: {exc.strerror}") from None
