"""Sample random scenes (geometry, materials, lights, camera) for a class set.

``indoor_scene`` builds a box room (floor, ceiling, four walls) furnished with a few object
classes; ``street_scene`` builds a road with sidewalks, buildings, vehicles, poles, trees and
people under a sky. Every draw comes from the ``numpy.random.Generator`` passed in, so a scene
is a pure function of it.
"""
from __future__ import annotations

import colorsys

import numpy as np

from .classes import TEXTURES, ClassSpec
from .geometry import Box, Cylinder, Plane, Sphere, rotation_y
from .render import Camera, Decal, Light, Material, Scene, SceneObject


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def make_material(spec: ClassSpec, rng: np.random.Generator, scale: float = 1.0) -> Material:
    """Class-typical colour and pattern, jittered; sometimes any colour or any pattern."""
    r, g, b = spec.color
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    if rng.random() < 0.15:                       # an atypical instance
        h, l, s = rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.7)
    h = (h + rng.normal(0, 0.04)) % 1.0
    l = float(np.clip(l * rng.uniform(0.75, 1.25), 0.05, 0.95))
    s = float(np.clip(s + rng.normal(0, 0.12), 0, 1))
    color = np.array(colorsys.hls_to_rgb(h, l, s))
    contrast = rng.uniform(0.15, 0.5)
    color2 = np.clip(color * (1 - contrast) + rng.uniform(0, 1, 3) * contrast * 0.5, 0, 1)
    if rng.random() < 0.5:
        color2 = np.clip(color * rng.uniform(0.4, 0.8), 0, 1)
    kind = str(rng.choice(spec.textures)) if rng.random() > 0.2 else str(rng.choice(TEXTURES))
    axis = _unit(rng.normal(size=3))
    axis2 = _unit(np.cross(axis, _unit(rng.normal(size=3))))
    if kind in ("checker", "grid") and rng.random() < 0.7:   # mostly axis-aligned patterns
        axis, axis2 = np.eye(3)[rng.permutation(3)[:2]]
    freq = rng.uniform(1.5, 5.0) / scale
    return Material(color=color, color2=color2, texture=kind, freq=freq, axis=axis, axis2=axis2,
                    phases=rng.uniform(0, 2 * np.pi, 3), dirs=rng.normal(size=(3, 3)))


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(*r))


def build_object(spec: ClassSpec, label: int, x: float, z: float, base: float,
                 rng: np.random.Generator, scale: float = 1.0) -> tuple[SceneObject, float]:
    """An instance of ``spec`` standing at ``(x, base, z)``; returns it and its top height."""
    mat = make_material(spec, rng, scale)
    shape = spec.shape
    if shape == "box":
        w, h, d = (_u(rng, r) for r in spec.dims)
        parts = [Box(np.array([x, base + h / 2, z]), np.array([w / 2, h / 2, d / 2]),
                     float(rng.uniform(-np.pi, np.pi)))]
        top = base + h
    elif shape == "sphere":
        r = _u(rng, spec.dims[0])
        parts, top = [Sphere(np.array([x, base + r, z]), r)], base + 2 * r
    elif shape in ("cylinder", "pole"):
        r, h = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        parts, top = [Cylinder(x, z, r, base, base + h)], base + h
    elif shape == "person":
        r, h = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        head = r * rng.uniform(0.5, 0.65)
        parts = [Cylinder(x, z, r, base, base + h), Sphere(np.array([x, base + h + head, z]), head)]
        top = base + h + 2 * head
    elif shape == "lamp":
        h = _u(rng, spec.dims[0])
        shade = rng.uniform(0.12, 0.22)
        parts = [Cylinder(x, z, 0.02, base, base + h), Sphere(np.array([x, base + h, z]), shade)]
        top = base + h + shade
    elif shape == "plant":
        r, h, f = (_u(rng, d) for d in spec.dims)
        parts = [Cylinder(x, z, r, base, base + h), Sphere(np.array([x, base + h + f * 0.8, z]), f)]
        top = base + h + 1.8 * f
    elif shape == "tree":
        h, c = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        parts = [Cylinder(x, z, 0.15, base, base + h), Sphere(np.array([x, base + h + c * 0.7, z]), c)]
        top = base + h + 1.7 * c
    else:
        raise ValueError(f"class {spec.name!r} has shape {shape!r}, not a standing object")
    return SceneObject(label, mat, parts, spec.depth_unreliable), top


def _look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera -> world rotation; at zero angles the camera looks along world +z, y up."""
    base = np.array([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]]).T   # columns: cam x, y, z
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rotation_y(yaw) @ base @ rx @ rz


def indoor_scene(classes: tuple[ClassSpec, ...], rng: np.random.Generator, width: int,
                 structure: dict[str, int]) -> Scene:
    """A furnished box room. ``structure`` maps 'wall', 'floor', 'ceiling' to class indices."""
    room_w, room_d, room_h = rng.uniform(3.0, 7.0), rng.uniform(3.5, 8.0), rng.uniform(2.4, 3.2)
    objects: list[SceneObject] = []
    floor_mat = make_material(classes[structure["floor"]], rng)
    objects.append(SceneObject(structure["floor"], floor_mat, [Plane(np.array([0, 1.0, 0]), 0.0)]))
    objects.append(SceneObject(structure["ceiling"], make_material(classes[structure["ceiling"]], rng),
                               [Plane(np.array([0, -1.0, 0]), -room_h)], casts_shadow=False))
    wall_mat = make_material(classes[structure["wall"]], rng)
    walls = [(np.array([1.0, 0, 0]), -room_w / 2), (np.array([-1.0, 0, 0]), -room_w / 2),
             (np.array([0, 0, -1.0]), -room_d), (np.array([0, 0, 1.0]), 0.0)]
    wall_ids = []
    for n, off in walls:
        mat = wall_mat if rng.random() < 0.7 else make_material(classes[structure["wall"]], rng)
        wall_ids.append(len(objects))
        objects.append(SceneObject(structure["wall"], mat, [Plane(n, off)]))

    cam_pos = np.array([rng.uniform(-room_w / 4, room_w / 4), rng.uniform(1.1, 1.7),
                        rng.uniform(0.2, 0.9)])
    # A few classes per scene, several instances each.
    standing = [i for i, s in enumerate(classes)
                if s.shape in ("box", "sphere", "cylinder", "person", "lamp", "plant")]
    wall_decals = [i for i, s in enumerate(classes) if s.shape == "wall_decal"]
    floor_decals = [i for i, s in enumerate(classes) if s.shape == "floor_decal"]
    chosen = rng.choice(standing, size=min(len(standing), int(rng.integers(2, 6))), replace=False)
    tops: list[tuple[float, float, float, float]] = []   # x, z, top height, half size
    for _ in range(int(rng.integers(2, 8))):
        c = int(rng.choice(chosen))
        spec = classes[c]
        for _attempt in range(10):
            x = rng.uniform(-room_w / 2 + 0.3, room_w / 2 - 0.3)
            z = rng.uniform(1.0, room_d - 0.3)
            if np.hypot(x - cam_pos[0], z - cam_pos[2]) > 1.2:
                break
        else:
            continue
        # Large furniture goes against a wall half of the time.
        if spec.shape == "box" and rng.random() < 0.5:
            z = room_d - spec.dims[2][1] / 2 - 0.05
        obj, top = build_object(spec, c, x, z, 0.0, rng)
        objects.append(obj)
        if spec.shape == "box":
            tops.append((x, z, top, min(spec.dims[0][0], spec.dims[2][0]) / 2))
    # Small things on top of boxes.
    small = [i for i, s in enumerate(classes) if s.on_top]
    for x, z, top, half in tops:
        if small and rng.random() < 0.6:
            c = int(rng.choice(small))
            dx, dz = rng.uniform(-half, half, 2) * 0.6
            objects.append(build_object(classes[c], c, x + dx, z + dz, top, rng)[0])

    decals: list[Decal] = []
    for _ in range(int(rng.integers(0, 4)) if wall_decals else 0):
        c = int(rng.choice(wall_decals))
        spec = classes[c]
        k = int(rng.integers(0, 3))          # left, right or back wall
        w, h = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        along = room_d if k < 2 else room_w
        s = rng.uniform(-along / 2 + w / 2, along / 2 - w / 2) if along > w else 0.0
        y = h / 2 if spec.name in ("door",) else rng.uniform(h / 2 + 0.3, max(h / 2 + 0.3, room_h - h / 2 - 0.1))
        if k < 2:
            center = np.array([-room_w / 2 if k == 0 else room_w / 2, y, room_d / 2 + s])
            u = np.array([0, 0, 1.0])
        else:
            center = np.array([s, y, room_d])
            u = np.array([1.0, 0, 0])
        decals.append(Decal(wall_ids[k], c, make_material(spec, rng), center, u,
                            np.array([0, 1.0, 0]), w / 2, h / 2, spec.depth_unreliable))
    if floor_decals and rng.random() < 0.4:
        c = int(rng.choice(floor_decals))
        spec = classes[c]
        w, d = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        yaw = rng.uniform(0, np.pi)
        rot = rotation_y(yaw)
        center = np.array([rng.uniform(-room_w / 3, room_w / 3), 0.0, rng.uniform(1.0, room_d - 1.0)])
        decals.append(Decal(0, c, make_material(spec, rng), center, rot[:, 0], rot[:, 2],
                            w / 2, d / 2, spec.depth_unreliable))

    lights = [Light(np.array([rng.uniform(-room_w / 3, room_w / 3), room_h - 0.2,
                              rng.uniform(0.5, room_d - 0.5)]), None, rng.uniform(0.6, 1.0))]
    if rng.random() < 0.5:
        lights.append(Light(np.array([rng.uniform(-room_w / 2.5, room_w / 2.5), room_h - 0.3,
                                      rng.uniform(0.5, room_d - 0.5)]), None, rng.uniform(0.2, 0.5)))
    yaw, pitch, roll = rng.uniform(-0.6, 0.6), rng.uniform(-0.45, 0.08), rng.uniform(-0.07, 0.07)
    camera = Camera(cam_pos, _look_rotation(yaw, pitch, roll), focal=0.8 * width)
    return Scene(objects, decals, lights, camera, ambient=float(rng.uniform(0.25, 0.45)),
                 exposure=float(rng.uniform(0.8, 1.2)), noise_sigma=float(rng.uniform(0.005, 0.03)))


def street_scene(classes: tuple[ClassSpec, ...], rng: np.random.Generator, width: int) -> Scene:
    """A street: road, sidewalks, building rows, vehicles, poles, trees, people, sky."""
    idx = {s.name: i for i, s in enumerate(classes)}
    objects: list[SceneObject] = [SceneObject(idx["road"], make_material(classes[idx["road"]], rng),
                                              [Plane(np.array([0, 1.0, 0]), 0.0)])]
    road_half = rng.uniform(3.5, 7.0)
    walk = rng.uniform(2.0, 4.0)
    decals: list[Decal] = []
    walk_mat = make_material(classes[idx["sidewalk"]], rng)
    for side in (-1, 1):
        decals.append(Decal(0, idx["sidewalk"], walk_mat,
                            np.array([side * (road_half + walk / 2), 0, 100.0]),
                            np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), walk / 2, 100.0))
    edge = road_half + walk
    for side in (-1, 1):
        z = rng.uniform(-5, 5)
        while z < 120:
            length = rng.uniform(8, 20)
            roll = rng.random()
            if roll < 0.65:
                depth = rng.uniform(6, 12)
                h = rng.uniform(6, 25)
                x = side * (edge + rng.uniform(0, 3) + depth / 2)
                objects.append(SceneObject(idx["building"], make_material(classes[idx["building"]], rng, 2.0),
                                           [Box(np.array([x, h / 2, z + length / 2]),
                                                np.array([depth / 2, h / 2, length / 2]))]))
            elif roll < 0.85:
                c = idx["terrain"]
                decals.append(Decal(0, c, make_material(classes[c], rng), np.array([side * (edge + 3), 0, z + length / 2]),
                                    np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), 3.0, length / 2))
                for _ in range(int(rng.integers(1, 3))):
                    obj, _top = build_object(classes[idx["vegetation"]], idx["vegetation"],
                                             side * (edge + rng.uniform(1, 5)), z + rng.uniform(0, length), 0.0, rng)
                    objects.append(obj)
            else:
                c = idx[str(rng.choice(["wall", "fence"]))]
                spec = classes[c]
                h = _u(rng, spec.dims[1])
                objects.append(SceneObject(c, make_material(spec, rng),
                                           [Box(np.array([side * (edge + 0.2), h / 2, z + length / 2]),
                                                np.array([0.1, h / 2, length / 2]))]))
            z += length + rng.uniform(0, 4)
    # Poles with lights/signs along the sidewalk edge.
    for _ in range(int(rng.integers(1, 5))):
        side = rng.choice([-1, 1])
        x, z = side * (road_half + 0.4), rng.uniform(4, 60)
        obj, top = build_object(classes[idx["pole"]], idx["pole"], x, z, 0.0, rng)
        objects.append(obj)
        if rng.random() < 0.6:
            c = idx[str(rng.choice(["traffic light", "traffic sign"]))]
            spec = classes[c]
            w, h, d = (_u(rng, r) for r in spec.dims)
            objects.append(SceneObject(c, make_material(spec, rng),
                                       [Box(np.array([x, top + h / 2, z]), np.array([w / 2, h / 2, d / 2]))]))
    vehicles = [idx[n] for n in ("car", "car", "car", "truck", "bus", "motorcycle", "bicycle", "train")]
    for _ in range(int(rng.integers(1, 7))):
        c = int(rng.choice(vehicles))
        spec = classes[c]
        lane = rng.uniform(-road_half + 1.2, road_half - 1.2)
        z = rng.uniform(6, 50)
        w, h, d = (_u(rng, r) for r in spec.dims)
        yaw = rng.normal(0, 0.08)
        objects.append(SceneObject(c, make_material(spec, rng),
                                   [Box(np.array([lane, h / 2 + 0.15, z]), np.array([w / 2, h / 2, d / 2]), yaw)]))
        if spec.name in ("motorcycle", "bicycle"):
            objects.append(build_object(classes[idx["rider"]], idx["rider"], lane, z, h * 0.6, rng)[0])
    for _ in range(int(rng.integers(0, 6))):
        side = rng.choice([-1, 1])
        obj, _top = build_object(classes[idx["person"]], idx["person"],
                                 side * (road_half + rng.uniform(0.5, walk)), rng.uniform(4, 40), 0.0, rng)
        objects.append(obj)

    sun = _unit(np.array([rng.uniform(-1, 1), rng.uniform(0.4, 1.2), rng.uniform(-1, 1)]))
    lights = [Light(None, sun, float(rng.uniform(0.6, 0.9)))]
    cam_pos = np.array([rng.uniform(-road_half / 2, road_half / 2), rng.uniform(1.2, 1.7), 0.0])
    camera = Camera(cam_pos, _look_rotation(rng.uniform(-0.15, 0.15), rng.uniform(-0.08, 0.05),
                                            rng.uniform(-0.03, 0.03)), focal=0.5 * width)
    horizon = np.array(colorsys.hls_to_rgb(rng.uniform(0.5, 0.62), rng.uniform(0.7, 0.9), 0.4))
    zenith = np.array(colorsys.hls_to_rgb(rng.uniform(0.55, 0.65), rng.uniform(0.45, 0.65), 0.6))
    return Scene(objects, decals, lights, camera, ambient=float(rng.uniform(0.3, 0.45)),
                 sky_label=idx["sky"], sky_color=(horizon, zenith),
                 exposure=float(rng.uniform(0.85, 1.15)), noise_sigma=float(rng.uniform(0.005, 0.025)))
