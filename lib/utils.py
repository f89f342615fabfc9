"""Small shared helpers: device choice, seeding and RNG state, CPU threads, atomic file writes
(and their stale temporaries), JSON read/write with one-line errors, finiteness checks, output
path checks made before any work."""
from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch


def default_device() -> torch.device:
    """CUDA when available, else CPU. Choose once, pass it around."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`default_device`; anything else -> ``torch.device``."""
    if device is None or device == "auto":
        return default_device()
    return torch.device(device)


def set_cpu_threads(num_threads: int | None = None) -> int:
    """Use all cores (or ``CUT_NUM_THREADS``) for intra-op work; returns the number set."""
    if num_threads is None:
        num_threads = int(os.environ.get("CUT_NUM_THREADS", os.cpu_count() or 1))
    num_threads = max(1, num_threads)
    torch.set_num_threads(num_threads)
    return num_threads


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU, every CUDA device) as tensors/primitives."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------- finite values
class NonFiniteError(ValueError):
    """A tensor or value that must be finite holds NaN or infinity (weights, masks, outputs,
    metrics): the one-line message names it."""


def check_finite_tensors(tensors: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the first floating-point tensor of ``tensors``
    (``{name: tensor}``) that holds NaN or infinity; ``what`` says whose tensors they are
    (``"checkpoint X"``, ``"the outputs on batch [...]"``). Integer and bool tensors pass."""
    import torch

    for name, tensor in tensors.items():
        if not (torch.is_tensor(tensor) and (tensor.is_floating_point() or tensor.is_complex())):
            continue
        finite = torch.isfinite(tensor.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            nan = int(torch.isnan(tensor.detach()).sum())
            raise NonFiniteError(f"{what}: tensor {name!r} has {bad} non-finite value(s) "
                                 f"({nan} NaN, {bad - nan} infinite) of {tensor.numel()}; "
                                 f"expected finite values")


def first_non_finite(obj: Any, where: str = "") -> str | None:
    """The key path (``"seg/mIoU"``, ``"history/loss[3]"``) of the first float in a JSON-like
    ``obj`` that is NaN or infinite, else None."""
    if isinstance(obj, float) or (isinstance(obj, np.floating)):
        return None if math.isfinite(float(obj)) else (where or "<value>")
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found = first_non_finite(value, f"{where}/{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = first_non_finite(value, f"{where}[{i}]")
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------------------- atomic writes
# atomic_write's temporary beside its target: ``.{target name}.{mkstemp's 8 characters}.tmp``.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def atomic_temporary_target(name: str) -> str | None:
    """The target file name of one of :func:`atomic_write`'s temporaries (e.g.
    ``".last.pth.k3j_x8ab.tmp"`` -> ``"last.pth"``), else None."""
    match = _TEMPORARY.match(name)
    return match.group("target") if match else None


def remove_stale_temporaries(folder: str | os.PathLike, targets: Iterable[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left in ``folder`` for files named
    ``targets`` (a process killed mid-write leaves one behind); nothing else is touched.
    Returns what was deleted."""
    folder, targets = Path(folder), set(targets)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and atomic_temporary_target(path.name) in targets:
                path.unlink()
                removed.append(path)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path``.

    The temporary file lives in the same folder (so the rename is atomic).

    A crash mid-write leaves the previous file (if any) untouched and no partial file behind
    (a process killed outright leaves the temporary, ``.{name}.<random>.tmp``; see
    :func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = _disk_full(exc)
        if full is not None:
            raise OSError(full, f"cannot write {path}: {os.strerror(full).lower()} (the "
                                f"partial file was removed; {path} is unchanged)") from None
        raise
    return path


# torch.save reports a failed write (a full disk, a quota) from its C++ writer, as
# "[enforce fail at inline_container.cc:NNN] . PytorchStreamWriter failed writing file ..."
# or "... unexpected pos N vs M".
_TORCH_WRITE_FAILURE = ("PytorchStreamWriter failed writing", "inline_container.cc")


def _disk_full(exc: BaseException) -> int | None:
    """``errno.ENOSPC`` / ``EDQUOT`` when ``exc`` is a write that ran out of space (torch's
    writer does not say which: ENOSPC), else None."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) else None
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURE):
        return errno.ENOSPC
    return None


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write bytes atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (numpy scalars/arrays converted).

    Strict JSON only: a NaN or infinite number is refused (:class:`NonFiniteError` naming its
    key path) before anything is written, never written as a bare ``NaN``.
    """
    obj = json.loads(json.dumps(obj, default=_json_default))   # numpy / tensors -> plain values
    bad = first_non_finite(obj)
    if bad is not None:
        raise NonFiniteError(f"refusing to write {path}: {bad} is not a finite number (JSON "
                             f"has no NaN / infinity; an undefined value is written as null)")
    return atomic_write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def read_json(path: str | os.PathLike, what: str = "JSON file", recover: str | None = None) -> Any:
    """The parsed content of ``path``; a one-line ValueError naming the file (and, with
    ``recover``, saying how to recover, e.g. ``"delete it to recompute the cell"``) when it
    is not valid JSON. A missing file raises FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        hint = f"; {recover}" if recover else ""
        raise ValueError(f"{what} {path} is not valid JSON ({exc}){hint}") from None


def plain_json(obj: Any) -> Any:
    """``obj`` with numpy scalars / arrays, tensors and paths turned into plain JSON values (a
    TypeError names any other type)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the file.

    Files that would need arbitrary unpickling are refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"cannot read checkpoint {path}: {_load_failure(exc)}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _load_failure(exc: Exception) -> str:
    """One complete sentence for a failed ``torch.load(weights_only=True)``: torch's own text
    runs over several lines with terminal colour codes, so it is summarised, not cut."""
    text = _ANSI.sub("", str(exc))
    found = _UNSUPPORTED_GLOBAL.search(text)
    if found or "Weights only load failed" in text:
        what = f"a pickled {found.group(1)} object" if found else "pickled Python objects"
        return (f"it holds {what} (e.g. a whole model saved with torch.save(model)), which "
                f"only arbitrary unpickling could load, and that is refused; save and pass "
                f"the state_dict (torch.save(model.state_dict(), path)) instead")
    first = " ".join(text.split()).split(". ")[0].rstrip(".") if text.strip() else \
        type(exc).__name__
    return f"it is truncated, corrupt or not a torch.save file ({first})"


# ----------------------------------------------------------------------------- output paths
def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest of ``path`` and its parents that exists; a one-line OSError when one of them
    is a symbolic link that resolves to nothing (a loop, or a missing target), which
    ``Path.exists`` reports as absent and ``mkdir`` then fails on with ``File exists``."""
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
        if parent.is_symlink():
            try:
                parent.resolve(strict=True)
                reason = "does not resolve"
            except RuntimeError:            # Python < 3.13 reports a loop this way
                reason = "is a symbolic-link loop"
            except OSError as exc:
                reason = ("is a symbolic-link loop" if exc.errno == errno.ELOOP
                          else f"is a symbolic link to missing {os.readlink(parent)}")
            raise OSError(errno.ELOOP if "loop" in reason else errno.ENOENT,
                          f"{what} {path}: {parent} {reason}")
    return Path(".")


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise a one-line error unless ``path`` is a writable folder or can be created as one;
    creates nothing (called before any work, so a bad path fails first)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} exists and is not a folder")
    base = _existing_ancestor(path, what)
    if not base.is_dir():
        raise NotADirectoryError(f"{what} {path} cannot be created: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} is not writable ({base} is read-only)")
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Raise a one-line error unless ``path`` can be written as a file (not a folder, its
    folder writable or creatable); creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; expected a file path")
    check_output_dir(path.parent, f"folder of {what} {path}")
    return path
