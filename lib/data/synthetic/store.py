"""Where synthetic datasets live and how they are written: complete or not at all.

A dataset is written into a temporary sibling folder (:func:`atomic_folder`) and renamed into
place with ``synthetic.json`` (its parameters) written last, so a crash never leaves a folder
that looks complete; :func:`prepare` writes one only where no complete copy with the same
parameters exists, under a name of all parameters by default (:func:`default_root`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

MARKER = "synthetic.json"
REPO_ROOT = Path(__file__).resolve().parents[3]


def dataset_params(layout: str, num_train: int, num_test: int, height: int, width: int,
                   seed: int, generator_version: int) -> dict[str, Any]:
    """What a synthetic dataset is written with (its marker's content)."""
    return {"layout": layout, "num_train": int(num_train), "num_test": int(num_test),
            "height": int(height), "width": int(width), "seed": int(seed),
            "generator_version": int(generator_version)}


def check_counts(num_train: int, num_test: int) -> None:
    if num_train < 0 or num_test < 0 or num_train + num_test == 0:
        raise ValueError(f"sample counts must be >= 0 and not both 0 (an empty dataset), got "
                         f"train={num_train} test={num_test}")


def read_marker(root: str | os.PathLike) -> dict[str, Any] | None:
    """The parameters a complete synthetic dataset at ``root`` was written with, else None."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def default_root(params: dict[str, Any], version_tag: str) -> Path:
    """``$CUT_SYNTHETIC_DIR`` (default ``<repo>/data/synthetic``) / a name of all ``params``
    (``version_tag``: the generator's, e.g. ``v3``)."""
    base = Path(os.environ.get("CUT_SYNTHETIC_DIR", REPO_ROOT / "data" / "synthetic"))
    p = params
    return base / (f"{p['layout']}_{p['height']}x{p['width']}_train{p['num_train']}"
                   f"_test{p['num_test']}_seed{p['seed']}_{version_tag}")


@contextlib.contextmanager
def atomic_folder(root: Path, params: dict[str, Any]) -> Iterator[Path]:
    """Yield a temporary sibling of ``root`` to fill; on success write the marker (``params``)
    and rename it to ``root``; on any failure remove it. ``root`` must not exist or be empty."""
    from ...utils import atomic_write_json   # imported here: it pulls in torch

    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"synthetic dataset target {root} already exists and is not an "
                              f"empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        atomic_write_json(params, tmp / MARKER)
        if root.exists():
            root.rmdir()
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare(root: Path, params: dict[str, Any], is_complete: Callable[[Path], bool],
            write: Callable[[Path], Any]) -> str:
    """``root`` once it holds a complete dataset: ``write(root)`` unless ``is_complete(root)``
    already. A folder holding anything else is never overwritten (one-line error)."""
    root = Path(root)
    if is_complete(root):
        return str(root)
    if root.exists() and root.is_dir() and any(root.iterdir()):
        found = read_marker(root)
        what = f"a synthetic dataset with other parameters {found}" if found else "other files"
        raise FileExistsError(f"{root} holds {what}; expected {MARKER} with {params}")
    try:
        write(root)
    except OSError:
        # Another process may have finished the same dataset first (rename onto it failed).
        if not is_complete(root):
            raise
    return str(root)
