"""Value checks of a sample's arrays, right after they are read: dtype, finiteness, ranges, labels.

Every check is one vectorised pass over an array already in memory and raises a one-line
``ValueError`` that starts with ``source`` (the reader, the field and the file) and says what
was found and what was expected. Nothing here changes an array.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)
LABEL_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.float32, np.float64)


def check_dtype(source: str, array: np.ndarray, allowed: Iterable[type], expected: str) -> None:
    """``array.dtype`` must be one of ``allowed``; ``expected`` says what the file should hold."""
    allowed = tuple(np.dtype(d) for d in allowed)
    if array.dtype not in allowed:
        names = "/".join(d.name for d in allowed)
        raise ValueError(f"{source} has dtype {array.dtype}; expected {names} ({expected})")


def check_channels(source: str, array: np.ndarray, channels: int | None, expected: str) -> None:
    """``H x W`` (``channels=None``) or ``H x W x channels``."""
    shape = array.shape
    ok = len(shape) == 2 if channels is None else len(shape) == 3 and shape[2] == channels
    if not ok:
        layout = "H x W" if channels is None else f"H x W x {channels}"
        raise ValueError(f"{source} has shape {shape}; expected {layout} ({expected})")


def check_finite(source: str, array: np.ndarray) -> None:
    """No NaN or infinity (float arrays only; integers are always finite)."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    nan = int(np.isnan(array).sum())
    inf = int(np.isinf(array).sum())
    raise ValueError(f"{source} has {nan} NaN and {inf} infinite values; expected finite values")


def check_range(source: str, array: np.ndarray, low: float | None, high: float | None,
                expected: str) -> None:
    """All values in ``[low, high]`` (``None``: unbounded on that side); call after
    :func:`check_finite` so the bounds are meaningful."""
    if array.size == 0:
        return
    lo, hi = array.min(), array.max()
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{source} has values in [{lo:.6g}, {hi:.6g}]; expected "
                         f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                         f" ({expected})")


def check_labels(source: str, array: np.ndarray, num_class: int, ignore: int) -> None:
    """Integral class indices in ``0 .. num_class - 1``, or ``ignore``."""
    if array.dtype.kind == "f":
        check_finite(source, array)
        if not (array == np.floor(array)).all():
            raise ValueError(f"{source} has non-integer labels; expected class indices "
                             f"0..{num_class - 1} or {ignore} (ignore)")
    bad = ((array < 0) | (array >= num_class)) & (array != ignore)
    if bad.any():
        values = np.unique(array[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise ValueError(f"{source} has label(s) {shown} outside 0..{num_class - 1}; expected "
                         f"class indices 0..{num_class - 1} or {ignore} (ignore)")


def check_floats(source: str, array: np.ndarray, low: float | None, high: float | None,
                 expected: str) -> None:
    """A float array (:data:`FLOAT_DTYPES`) of finite values in ``[low, high]``."""
    check_dtype(source, array, FLOAT_DTYPES, expected)
    check_finite(source, array)
    check_range(source, array, low, high, expected)


def check_unit_rgb(source: str, image: np.ndarray) -> None:
    """An ``H x W x 3`` float RGB image scaled to [0, 1] (the layouts stored as ``.npy``)."""
    check_channels(source, image, 3, "RGB in [0, 1]")
    check_floats(source, image, 0.0, 1.0, "RGB scaled to [0, 1]")
