"""Vectorised ray casting against simple primitives (world frame, y up, metres).

Every ``intersect(origins, dirs)`` takes ray origins ``(3,)`` or ``(N, 3)`` and directions
``(N, 3)`` (not necessarily unit) and returns ``t`` ``(N,)`` (``inf`` where the ray misses or
hits behind ``T_MIN``) with hit point ``origin + t * dir``; ``normal(points, dirs)`` returns the
outward unit normal ``(N, 3)`` at hit points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T_MIN = 1e-4


def _split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return v[..., 0], v[..., 1], v[..., 2]


class Rays:
    """A batch of rays with the per-ray products that bounding tests reuse."""

    def __init__(self, origins: np.ndarray, dirs: np.ndarray):
        self.origins = origins
        self.dirs = dirs
        self.d2 = np.einsum("ij,ij->i", dirs, dirs)
        self.shared_origin = origins.ndim == 1
        if not self.shared_origin:
            self.do = np.einsum("ij,ij->i", dirs, origins)
            self.oo = np.einsum("ij,ij->i", origins, origins)

    def may_hit(self, center: np.ndarray, radius: float) -> np.ndarray:
        """Conservative test: rays passing within ``radius`` of ``center`` ahead of their
        origin (or starting inside). Only matrix-vector products, so it is cheap."""
        if self.shared_origin:
            oc = center - self.origins
            tca = self.dirs @ oc
            oc2 = oc @ oc
        else:
            tca = self.dirs @ center - self.do
            oc2 = center @ center - 2.0 * (self.origins @ center) + self.oo
        r2 = radius * radius * 1.0001
        return ((oc2 * self.d2 - tca * tca <= r2 * self.d2) & (tca > 0)) | (oc2 <= r2)


def rotation_y(angle: float) -> np.ndarray:
    """Rotation about the vertical axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Plane:
    """Infinite plane ``n . x = offset`` (``n`` unit)."""
    n: np.ndarray
    offset: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        denom = dirs @ self.n
        num = self.offset - origins @ self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / denom
        return np.where((t > T_MIN) & np.isfinite(t), t, np.inf)

    def normal(self, points: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.n, points.shape)

    def bounding_sphere(self) -> None:
        return None


@dataclass
class Sphere:
    center: np.ndarray
    radius: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = origins - self.center
        a = np.einsum("ij,ij->i", dirs, dirs)
        b = (oc * dirs).sum(-1)
        c = (oc * oc).sum(-1) - self.radius ** 2
        disc = b * b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t = (-b - root) / a
        return np.where((disc > 0) & (t > T_MIN), t, np.inf)

    def normal(self, points: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        return (points - self.center) / self.radius

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return self.center, self.radius


@dataclass
class Cylinder:
    """Vertical cylinder of ``radius`` around ``(cx, cz)`` from ``y0`` to ``y1`` (top cap)."""
    cx: float
    cz: float
    radius: float
    y0: float
    y1: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ox, oy, oz = _split(np.broadcast_to(origins, dirs.shape))
        dx, dy, dz = _split(dirs)
        px, pz = ox - self.cx, oz - self.cz
        a = dx * dx + dz * dz
        b = px * dx + pz * dz
        c = px * px + pz * pz - self.radius ** 2
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            y = oy + t_side * dy
            side_ok = (disc > 0) & (t_side > T_MIN) & (y >= self.y0) & (y <= self.y1)
            t_cap = (self.y1 - oy) / dy
            cx, cz = px + t_cap * dx, pz + t_cap * dz
            cap_ok = (t_cap > T_MIN) & (cx * cx + cz * cz <= self.radius ** 2)
        t = np.where(side_ok, t_side, np.inf)
        return np.minimum(t, np.where(cap_ok, t_cap, np.inf))

    def normal(self, points: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        n = np.zeros_like(points)
        on_cap = points[:, 1] >= self.y1 - 1e-6
        n[:, 0] = (points[:, 0] - self.cx) / self.radius
        n[:, 2] = (points[:, 2] - self.cz) / self.radius
        n[on_cap] = (0.0, 1.0, 0.0)
        return n

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half_h = (self.y1 - self.y0) / 2
        return (np.array([self.cx, self.y0 + half_h, self.cz]),
                float(np.hypot(half_h, self.radius)))


@dataclass
class Box:
    """Box with half sizes ``half`` (x, y, z) around ``center``, turned by ``yaw`` about y."""
    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0

    def __post_init__(self) -> None:
        self.rot = rotation_y(self.yaw)  # local -> world

    def _local(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (origins - self.center) @ self.rot, dirs @ self.rot

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        o, d = self._local(origins, dirs)
        o = np.broadcast_to(o, d.shape)
        t_near = np.full(len(d), -np.inf)
        t_far = np.full(len(d), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):   # slabs, one axis at a time (cheaper than axis reductions)
                dk = d[:, k]
                inv = 1.0 / np.where(np.abs(dk) < 1e-12, 1e-12, dk)
                t1 = (-self.half[k] - o[:, k]) * inv
                t2 = (self.half[k] - o[:, k]) * inv
                np.maximum(t_near, np.minimum(t1, t2), out=t_near)
                np.minimum(t_far, np.maximum(t1, t2), out=t_far)
        return np.where((t_near <= t_far) & (t_near > T_MIN), t_near, np.inf)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return self.center, float(np.linalg.norm(self.half))

    def normal(self, points: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        p = (points - self.center) @ self.rot
        # The face hit is the one whose slab the point lies on: largest |p| / half.
        axis = np.abs(p / self.half).argmax(-1)
        n = np.zeros_like(p)
        rows = np.arange(len(p))
        n[rows, axis] = np.sign(p[rows, axis])
        return n @ self.rot.T
