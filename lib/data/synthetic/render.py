"""Render a sampled scene: ray cast, procedural textures, lighting, and the five labels.

:func:`render` turns a :class:`Scene` into a :class:`Frame` whose labels are computed from the
same geometry that produced the image, so they agree with each other: depth is the camera-z
distance of the first hit, normals are the hit surface's in the camera frame, edges are depth
discontinuities, keypoints are corner responses of the noise-free image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import Plane, Rays

# Camera frame: x right, y up, z towards the viewer (the camera looks along -z).


@dataclass
class Material:
    color: np.ndarray            # RGB in [0, 1]
    color2: np.ndarray           # second colour of the pattern
    texture: str
    freq: float                  # pattern cycles per metre
    axis: np.ndarray             # unit pattern direction
    axis2: np.ndarray
    phases: np.ndarray           # 3 phases for the noise pattern
    dirs: np.ndarray             # 3 x 3 random directions for the noise pattern


@dataclass
class SceneObject:
    label: int
    material: Material
    parts: list                  # geometry primitives
    depth_unreliable: bool = False
    casts_shadow: bool = True


@dataclass
class Decal:
    """A textured rectangle lying on a host object's surface (door, window, sidewalk ...)."""
    host: int                    # index into Scene.objects
    label: int
    material: Material
    center: np.ndarray
    u: np.ndarray                # unit in-plane axes
    v: np.ndarray
    half_u: float
    half_v: float
    depth_unreliable: bool = False


@dataclass
class Light:
    position: np.ndarray | None  # point light, or None for a directional light
    direction: np.ndarray | None  # unit direction *towards* the light (directional)
    intensity: float


@dataclass
class Camera:
    position: np.ndarray
    rotation: np.ndarray         # camera -> world (columns: camera x, y, z in world)
    focal: float                 # pixels


@dataclass
class Scene:
    objects: list[SceneObject]
    decals: list[Decal]
    lights: list[Light]
    camera: Camera
    ambient: float
    sky_label: int | None = None             # label of rays that hit nothing (else unlabeled)
    sky_color: tuple[np.ndarray, np.ndarray] | None = None   # horizon, zenith colours
    exposure: float = 1.0
    noise_sigma: float = 0.02


@dataclass
class Frame:
    """A rendered view. Invalid depth/normal pixels are marked by ``depth_valid``; unlabeled
    pixels by ``label == -1``."""
    image: np.ndarray            # H x W x 3 uint8 RGB
    label: np.ndarray            # H x W int16, -1 = unlabeled
    depth: np.ndarray            # H x W float32 metres (camera z), inf where nothing was hit
    depth_valid: np.ndarray      # H x W bool
    normal: np.ndarray           # H x W x 3 float32 unit, camera frame (0 where nothing hit)
    edge: np.ndarray             # H x W float32 in [0, 1], occlusion edges
    keypoint: np.ndarray         # H x W float32 in [0, 1], corner responses
    unreliable: np.ndarray       # H x W bool: surfaces the depth sensor often misses
    surface: np.ndarray          # H x W int: primitive hit (-1 = nothing)
    focal: float                 # pixels; principal point at the image centre


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of two ``(N, 3)`` arrays (faster than ``(a * b).sum(-1)``)."""
    return np.einsum("ij,ij->i", a, b)


def camera_rays(height: int, width: int, camera: Camera) -> np.ndarray:
    """World directions ``(H*W, 3)`` of the pixel centres, scaled so that ``t`` = depth."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d = np.stack([(u + 0.5 - width / 2) / camera.focal, -(v + 0.5 - height / 2) / camera.focal,
                  -np.ones_like(u)], axis=-1).reshape(-1, 3)
    return d @ camera.rotation.T


def texture(material: Material, points: np.ndarray) -> np.ndarray:
    """Pattern value in [0, 1] at world points ``(N, 3)`` (a solid texture: no uv needed)."""
    q = points * material.freq
    kind = material.texture
    if kind == "plain":
        return np.full(len(points), 0.15)
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * (q @ material.axis))
    if kind == "checker":
        return (np.floor(q + 1e-6).sum(-1) % 2).astype(np.float64)
    if kind == "grain":
        warp = 2.5 * np.sin(2 * np.pi * 0.3 * (q @ material.axis2))
        return 0.5 + 0.5 * np.sin(2 * np.pi * (q @ material.axis) + warp)
    if kind == "noise":
        waves = np.sin(q @ (material.dirs.T * 6.0) + material.phases)
        return np.clip(0.5 + 0.3 * waves.sum(-1) / np.sqrt(3), 0, 1)
    if kind == "grid":
        a = (q @ material.axis) % 1.0
        b = (q @ material.axis2) % 1.0
        return ((a < 0.12) | (b < 0.12)).astype(np.float64)
    raise ValueError(f"unknown texture {kind!r}")


def _decal_mask(decal: Decal, points: np.ndarray) -> np.ndarray:
    rel = points - decal.center
    return (np.abs(rel @ decal.u) <= decal.half_u) & (np.abs(rel @ decal.v) <= decal.half_v)


def _intersect_culled(prim, rays: Rays, cull: bool = True
                      ) -> tuple[np.ndarray | slice, np.ndarray]:
    """``(rows, t)``: hit distances of the rays that may hit ``prim`` (by its bounding sphere);
    ``cull=False`` tests every ray exactly (same result, slower: the benchmark's baseline)."""
    bound = prim.bounding_sphere()
    if bound is None or not cull:
        return slice(None), prim.intersect(rays.origins, rays.dirs)
    rows = np.flatnonzero(rays.may_hit(*bound))
    o = rays.origins if rays.shared_origin else rays.origins[rows]
    return rows, prim.intersect(o, rays.dirs[rows])


def cast(parts: list[tuple[int, object]], origins: np.ndarray, dirs: np.ndarray,
         cull: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit over ``parts`` [(object id, primitive)]: ``t`` (inf = miss), part index."""
    best_t = np.full(len(dirs), np.inf)
    best = np.full(len(dirs), -1, dtype=np.int64)
    rays = Rays(origins, dirs)
    for k, (_, prim) in enumerate(parts):
        rows, t = _intersect_culled(prim, rays, cull)
        if isinstance(rows, slice):
            rows = np.arange(len(dirs))
        closer = t < best_t[rows]
        best_t[rows[closer]] = t[closer]
        best[rows[closer]] = k
    return best_t, best


def occluded(parts: list[tuple[int, object]], origins: np.ndarray, dirs: np.ndarray,
             max_t: np.ndarray | float, cull: bool = True) -> np.ndarray:
    """Whether anything in ``parts`` lies between each origin and ``origin + max_t * dir``."""
    blocked = np.zeros(len(dirs), dtype=bool)
    limit = np.broadcast_to(max_t, (len(dirs),))
    rays = Rays(origins, dirs)
    for _, prim in parts:
        rows, t = _intersect_culled(prim, rays, cull)
        if isinstance(rows, slice):
            rows = np.arange(len(dirs))
        blocked[rows[t < limit[rows]]] = True
    return blocked


def render(scene: Scene, height: int, width: int, rng: np.random.Generator,
           cull: bool = True) -> Frame:
    """Ray cast ``scene`` at ``height x width``; ``rng`` only adds sensor noise.
    ``cull`` skips exact tests for rays outside a primitive's bounding sphere."""
    cam = scene.camera
    dirs = camera_rays(height, width, cam)
    parts = [(i, p) for i, obj in enumerate(scene.objects) for p in obj.parts]
    t, part = cast(parts, cam.position, dirs, cull)
    hit = np.isfinite(t)
    obj_of_part = np.array([i for i, _ in parts], dtype=np.int64)
    obj = np.where(hit, obj_of_part[np.maximum(part, 0)], -1)

    points = cam.position + t[:, None] * dirs
    points[~hit] = 0.0
    normals = np.zeros_like(dirs)
    for k, (_, prim) in enumerate(parts):
        sel = np.flatnonzero(part == k)
        if len(sel):
            normals[sel] = prim.normal(points[sel], dirs[sel])
    # Surfaces are seen from the camera's side.
    facing = _rowdot(normals, dirs) > 0
    normals[facing] *= -1

    # Materials, labels and sensor reliability per pixel; decals override their host.
    n_pix = len(dirs)
    label = np.full(n_pix, -1 if scene.sky_label is None else scene.sky_label, dtype=np.int16)
    unreliable = np.zeros(n_pix, dtype=bool)
    albedo = np.zeros((n_pix, 3))
    surfaces: list[tuple[np.ndarray, Material]] = []
    owner = np.full(n_pix, -1, dtype=np.int64)      # surface index of each pixel
    for i, o in enumerate(scene.objects):
        owner[obj == i] = len(surfaces)
        surfaces.append((o, o.material))
    for d in scene.decals:
        sel = np.flatnonzero(obj == d.host)
        if len(sel):
            sel = sel[_decal_mask(d, points[sel])]
            owner[sel] = len(surfaces)
        surfaces.append((d, d.material))
    for s, (thing, mat) in enumerate(surfaces):
        sel = np.flatnonzero(owner == s)
        if not len(sel):
            continue
        label[sel] = thing.label
        unreliable[sel] = thing.depth_unreliable
        v = texture(mat, points[sel])[:, None]
        albedo[sel] = mat.color * (1 - v) + mat.color2 * v

    shading = _shade(scene, parts, points, normals, hit, cull)
    color = albedo * shading[:, None]
    if scene.sky_color is not None:
        horizon, zenith = scene.sky_color
        up = np.clip(dirs[:, 1] / np.sqrt(_rowdot(dirs, dirs)), 0, 1)[:, None]
        sky = horizon * (1 - up) + zenith * up
        color[~hit] = sky[~hit]
    clean = np.clip(color * scene.exposure, 0, 1).reshape(height, width, 3)
    noisy = clean + rng.normal(0.0, scene.noise_sigma, clean.shape)
    image = np.round(np.clip(noisy, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)

    depth = t.reshape(height, width).astype(np.float32)
    normal_cam = (normals @ cam.rotation).astype(np.float32)
    normal_cam /= np.maximum(np.sqrt(_rowdot(normal_cam, normal_cam)), 1e-12)[:, None]
    normal_cam[~hit] = 0.0
    return Frame(image=image, label=label.reshape(height, width), depth=depth,
                 depth_valid=hit.reshape(height, width),
                 normal=normal_cam.reshape(height, width, 3),
                 edge=occlusion_edges(depth, part.reshape(height, width)),
                 keypoint=corner_response(clean),
                 unreliable=unreliable.reshape(height, width),
                 surface=part.reshape(height, width), focal=cam.focal)


def _shade(scene: Scene, parts, points: np.ndarray, normals: np.ndarray, hit: np.ndarray,
           cull: bool = True) -> np.ndarray:
    """Ambient + Lambertian lights with hard shadows (room planes cannot occlude, skipped)."""
    shading = np.full(len(points), scene.ambient)
    idx = np.flatnonzero(hit)
    p, n = points[idx], normals[idx]
    blockers = [(i, prim) for i, prim in parts
                if scene.objects[i].casts_shadow and not isinstance(prim, Plane)]
    for light in scene.lights:
        if light.position is not None:
            to_light = light.position - p
            dist = np.sqrt(_rowdot(to_light, to_light))
            ldir = to_light / dist[:, None]
            falloff = 1.0 / (1.0 + 0.04 * dist ** 2)
            max_t = np.full(len(p), 1.0)
            ray = to_light
        else:
            ldir = np.broadcast_to(light.direction, p.shape)
            falloff = 1.0
            max_t = np.full(len(p), np.inf)
            ray = ldir
        lambert = np.clip(_rowdot(n, ldir), 0, None)
        lit = lambert > 0
        shadow = np.zeros(len(p), dtype=bool)
        if lit.any() and blockers:
            origins = p[lit] + n[lit] * 1e-3
            shadow[lit] = occluded(blockers, origins, np.ascontiguousarray(ray[lit]),
                                   max_t[lit], cull)
        shading[idx] += light.intensity * lambert * falloff * (~shadow)
    return shading


def occlusion_edges(depth: np.ndarray, surface: np.ndarray, rel_jump: float = 0.04) -> np.ndarray:
    """Soft occlusion edges in [0, 1]: the nearer pixel of each pair of neighbours that lie on
    different surfaces (``surface`` ids, -1 = nothing hit) whose depths differ by more than
    ``rel_jump`` (relative), blurred slightly. Misses count as far away."""
    z = np.where(np.isfinite(depth), depth, 1e4).astype(np.float64)
    edge = np.zeros(z.shape, dtype=bool)
    for axis in (0, 1):
        a = z[:-1, :] if axis == 0 else z[:, :-1]
        b = z[1:, :] if axis == 0 else z[:, 1:]
        sa = surface[:-1, :] if axis == 0 else surface[:, :-1]
        sb = surface[1:, :] if axis == 0 else surface[:, 1:]
        jump = (np.abs(a - b) > rel_jump * np.minimum(a, b)) & (sa != sb)
        near_a, near_b = jump & (a < b), jump & (b <= a)
        if axis == 0:
            edge[:-1, :] |= near_a
            edge[1:, :] |= near_b
        else:
            edge[:, :-1] |= near_a
            edge[:, 1:] |= near_b
    soft = cv2.GaussianBlur(edge.astype(np.float32), (3, 3), 0.8)
    return np.clip(np.maximum(soft * 2.0, edge), 0, 1).astype(np.float32)


def corner_response(image: np.ndarray, scale: float = 2e-4) -> np.ndarray:
    """Harris corner strength of the noise-free image, squashed to [0, 1] with a fixed scale
    (so the label is a local property of the image, not normalised per frame)."""
    gray = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    response = cv2.cornerHarris(gray, blockSize=3, ksize=3, k=0.05)
    response = cv2.GaussianBlur(np.maximum(response, 0), (5, 5), 1.0)
    return (1.0 - np.exp(-response / scale)).astype(np.float32)
