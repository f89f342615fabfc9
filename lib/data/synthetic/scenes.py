"""Sample random scenes (geometry, materials, lights, camera) for a class set.

``indoor_scene`` builds a box room (floor, ceiling, four walls) furnished with a few object
classes, as hard to read as its :class:`IndoorStyle` says; ``street_scene`` builds a road with
sidewalks, buildings, vehicles, poles, trees and people under a sky. Every draw comes from the ``numpy.random.Generator`` passed in, so a scene
is a pure function of it.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .classes import TEXTURES, ClassSpec
from .geometry import Box, Cylinder, Plane, Sphere, rotation_y
from .render import Camera, Decal, Light, Material, Scene, SceneObject


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class IndoorStyle:
    """How hard an indoor scene is to read: which classes appear, how large they look (room
    size, object count), how much the viewpoint varies and how reliably appearance follows
    the class. Ranges are ``(low, high)``; counts are drawn from ``[low, high)``.

    ``classes``: names of the classes furnishing the rooms (``None``: every class of the set);
    the other classes of the label set never appear. ``atypical``: chance that an instance takes
    any colour; ``any_texture``: chance that it takes any pattern instead of its class's;
    ``texture_freq``: pattern cycles per metre (a narrow range makes texture scale a depth cue).
    """
    classes: tuple[str, ...] | None = None
    room_width: tuple[float, float] = (3.5, 4.5)
    room_depth: tuple[float, float] = (3.5, 4.5)
    room_height: tuple[float, float] = (2.5, 2.9)
    camera_height: tuple[float, float] = (1.3, 1.6)
    objects: tuple[int, int] = (3, 9)              # standing objects
    classes_per_scene: tuple[int, int] = (2, 5)    # standing classes
    wall_decals: tuple[int, int] = (1, 4)
    atypical: float = 0.05
    any_texture: float = 0.1
    texture_freq: tuple[float, float] = (2.0, 3.0)   # pattern cycles per metre: a depth cue

    def palette(self, classes: Sequence[ClassSpec]) -> list[int]:
        """Indices of the classes scenes may show (an unknown name is an error)."""
        if self.classes is None:
            return list(range(len(classes)))
        names = [s.name for s in classes]
        unknown = sorted(set(self.classes) - set(names))
        if unknown:
            raise ValueError(f"IndoorStyle names unknown class(es) {unknown}")
        return [i for i, n in enumerate(names) if n in self.classes]


def make_material(spec: ClassSpec, rng: np.random.Generator, scale: float = 1.0,
                  atypical: float = 0.15, any_texture: float = 0.2,
                  freq: tuple[float, float] = (1.5, 5.0)) -> Material:
    """Class-typical colour and pattern, jittered; with probability ``atypical`` any colour,
    with probability ``any_texture`` any pattern; ``freq / scale`` pattern cycles per metre."""
    r, g, b = spec.color
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    if rng.random() < atypical:                   # an atypical instance
        h, l, s = rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.7)
    h = (h + rng.normal(0, 0.04)) % 1.0
    l = float(np.clip(l * rng.uniform(0.75, 1.25), 0.05, 0.95))
    s = float(np.clip(s + rng.normal(0, 0.12), 0, 1))
    color = np.array(colorsys.hls_to_rgb(h, l, s))
    contrast = rng.uniform(0.15, 0.5)
    color2 = np.clip(color * (1 - contrast) + rng.uniform(0, 1, 3) * contrast * 0.5, 0, 1)
    if rng.random() < 0.5:
        color2 = np.clip(color * rng.uniform(0.4, 0.8), 0, 1)
    kind = (str(rng.choice(spec.textures)) if rng.random() >= any_texture
            else str(rng.choice(TEXTURES)))
    axis = _unit(rng.normal(size=3))
    axis2 = _unit(np.cross(axis, _unit(rng.normal(size=3))))
    if kind in ("checker", "grid") and rng.random() < 0.7:   # mostly axis-aligned patterns
        axis, axis2 = np.eye(3)[rng.permutation(3)[:2]]
    cycles = rng.uniform(*freq) / scale
    return Material(color=color, color2=color2, texture=kind, freq=cycles, axis=axis, axis2=axis2,
                    phases=rng.uniform(0, 2 * np.pi, 3), dirs=rng.normal(size=(3, 3)))


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(*r))


def build_object(spec: ClassSpec, label: int, x: float, z: float, base: float,
                 rng: np.random.Generator, scale: float = 1.0, yaw: float | None = None,
                 material: Material | None = None) -> tuple[SceneObject, float]:
    """An instance of ``spec`` standing at ``(x, base, z)``; returns it and its top height.
    Boxes turn by ``yaw`` (random if None) about the vertical. ``material`` defaults to a
    :func:`make_material` draw."""
    mat = make_material(spec, rng, scale) if material is None else material
    shape = spec.shape
    if shape == "box":
        w, h, d = (_u(rng, r) for r in spec.dims)
        turn = float(rng.uniform(-np.pi, np.pi)) if yaw is None else yaw
        parts = [Box(np.array([x, base + h / 2, z]), np.array([w / 2, h / 2, d / 2]), turn)]
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
        parts = [Cylinder(x, z, 0.15, base, base + h),
                 Sphere(np.array([x, base + h + c * 0.7, z]), c)]
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


@dataclass
class Room:
    width: float        # x from -width/2 to width/2
    depth: float        # z from 0 to depth
    height: float       # y from 0 (floor) to height
    wall_ids: list[int]  # object indices of the left, right, back and front walls


def _build_room(classes, structure: dict[str, int], style: IndoorStyle,
                rng: np.random.Generator, objects: list[SceneObject]) -> Room:
    """Floor, ceiling and four walls (the same paint on most walls)."""
    room = Room(_u(rng, style.room_width), _u(rng, style.room_depth), _u(rng, style.room_height),
                [])
    floor, ceiling, wall = structure["floor"], structure["ceiling"], structure["wall"]
    objects.append(SceneObject(floor, style_material(style, classes[floor], rng),
                               [Plane(np.array([0, 1.0, 0]), 0.0)]))
    objects.append(SceneObject(ceiling, style_material(style, classes[ceiling], rng),
                               [Plane(np.array([0, -1.0, 0]), -room.height)], casts_shadow=False))
    paint = style_material(style, classes[wall], rng)
    for n, offset in ((np.array([1.0, 0, 0]), -room.width / 2),
                      (np.array([-1.0, 0, 0]), -room.width / 2),
                      (np.array([0, 0, -1.0]), -room.depth), (np.array([0, 0, 1.0]), 0.0)):
        mat = paint if rng.random() < 0.7 else style_material(style, classes[wall], rng)
        room.wall_ids.append(len(objects))
        objects.append(SceneObject(wall, mat, [Plane(n, offset)]))
    return room


def style_material(style: IndoorStyle, spec: ClassSpec, rng: np.random.Generator,
                   scale: float = 1.0) -> Material:
    """:func:`make_material` with the style's chances of atypical colours and patterns."""
    return make_material(spec, rng, scale, atypical=style.atypical, any_texture=style.any_texture,
                         freq=style.texture_freq)


def _furnish(classes, palette: list[int], style: IndoorStyle, room: Room, cam_pos: np.ndarray,
             rng: np.random.Generator, objects: list[SceneObject]) -> None:
    """``style.objects`` standing objects of ``style.classes_per_scene`` palette classes, kept
    away from the camera, and small things on top of some boxes."""
    standing = [i for i in palette
                if classes[i].shape in ("box", "sphere", "cylinder", "person", "lamp", "plant")]
    if not standing:
        return
    chosen = rng.choice(standing, size=min(len(standing),
                                           int(rng.integers(*style.classes_per_scene))),
                        replace=False)
    tops: list[tuple[float, float, float, float]] = []   # x, z, top height, half size
    for _ in range(int(rng.integers(*style.objects))):
        c = int(rng.choice(chosen))
        spec = classes[c]
        for _attempt in range(10):
            x = rng.uniform(-room.width / 2 + 0.3, room.width / 2 - 0.3)
            z = rng.uniform(1.0, room.depth - 0.3)
            if np.hypot(x - cam_pos[0], z - cam_pos[2]) > 1.2:
                break
        else:
            continue
        yaw = None      # furniture stands squarely against the back wall half of the time
        if spec.shape == "box" and rng.random() < 0.5:
            z, yaw = room.depth - spec.dims[2][1] / 2 - 0.05, 0.0
        obj, top = build_object(spec, c, x, z, 0.0, rng, yaw=yaw,
                                material=style_material(style, spec, rng))
        objects.append(obj)
        if spec.shape == "box":
            tops.append((x, z, top, min(spec.dims[0][0], spec.dims[2][0]) / 2))
    small = [i for i in palette if classes[i].on_top]
    for x, z, top, half in tops:
        if small and rng.random() < 0.6:
            c = int(rng.choice(small))
            dx, dz = rng.uniform(-half, half, 2) * 0.6
            objects.append(build_object(classes[c], c, x + dx, z + dz, top, rng,
                                        material=style_material(style, classes[c], rng))[0])


def _room_decals(classes, palette: list[int], style: IndoorStyle, room: Room,
                 rng: np.random.Generator) -> list[Decal]:
    """``style.wall_decals`` rectangles on the side/back walls (doors stand on the floor),
    maybe one floor mat."""
    decals: list[Decal] = []
    wall_kinds = [i for i in palette if classes[i].shape == "wall_decal"]
    floor_kinds = [i for i in palette if classes[i].shape == "floor_decal"]
    for _ in range(int(rng.integers(*style.wall_decals)) if wall_kinds else 0):
        c = int(rng.choice(wall_kinds))
        spec = classes[c]
        k = int(rng.integers(0, 3))          # left, right or back wall
        w, h = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        along = room.depth if k < 2 else room.width
        offset = rng.uniform(-along / 2 + w / 2, along / 2 - w / 2) if along > w else 0.0
        low = h / 2 + 0.3
        y = h / 2 if spec.name == "door" else rng.uniform(low, max(low, room.height - h / 2 - 0.1))
        if k < 2:
            x = -room.width / 2 if k == 0 else room.width / 2
            center, u = np.array([x, y, room.depth / 2 + offset]), np.array([0, 0, 1.0])
        else:
            center, u = np.array([offset, y, room.depth]), np.array([1.0, 0, 0])
        decals.append(Decal(room.wall_ids[k], c, style_material(style, spec, rng), center, u,
                            np.array([0, 1.0, 0]), w / 2, h / 2, spec.depth_unreliable))
    if floor_kinds and rng.random() < 0.4:
        c = int(rng.choice(floor_kinds))
        spec = classes[c]
        w, d = _u(rng, spec.dims[0]), _u(rng, spec.dims[1])
        rot = rotation_y(rng.uniform(0, np.pi))
        center = np.array([rng.uniform(-room.width / 3, room.width / 3), 0.0,
                           rng.uniform(1.0, room.depth - 1.0)])
        decals.append(Decal(0, c, style_material(style, spec, rng), center, rot[:, 0], rot[:, 2],
                            w / 2, d / 2, spec.depth_unreliable))
    return decals


def indoor_scene(classes: tuple[ClassSpec, ...], rng: np.random.Generator, width: int,
                 structure: dict[str, int], style: IndoorStyle = IndoorStyle()) -> Scene:
    """A furnished box room. ``structure`` maps 'wall', 'floor', 'ceiling' to class indices;
    ``style`` says which other classes appear and how hard they are to tell apart."""
    palette = style.palette(classes)
    objects: list[SceneObject] = []
    room = _build_room(classes, structure, style, rng, objects)
    cam_pos = np.array([rng.uniform(-room.width / 4, room.width / 4),
                        _u(rng, style.camera_height), rng.uniform(0.2, 0.9)])
    _furnish(classes, palette, style, room, cam_pos, rng, objects)
    decals = _room_decals(classes, palette, style, room, rng)

    def ceiling_light(spread: float, drop: float, power: tuple[float, float]) -> Light:
        position = np.array([rng.uniform(-room.width / spread, room.width / spread),
                             room.height - drop, rng.uniform(0.5, room.depth - 0.5)])
        return Light(position, None, float(rng.uniform(*power)))

    lights = [ceiling_light(3.0, 0.2, (0.6, 1.0))]
    if rng.random() < 0.5:
        lights.append(ceiling_light(2.5, 0.3, (0.2, 0.5)))
    yaw, pitch, roll = rng.uniform(-0.6, 0.6), rng.uniform(-0.45, 0.08), rng.uniform(-0.07, 0.07)
    camera = Camera(cam_pos, _look_rotation(yaw, pitch, roll), focal=0.8 * width)
    return Scene(objects, decals, lights, camera, ambient=float(rng.uniform(0.25, 0.45)),
                 exposure=float(rng.uniform(0.8, 1.2)),
                 noise_sigma=float(rng.uniform(0.005, 0.03)))


def _box(classes: tuple[ClassSpec, ...], c: int, center: tuple[float, float, float],
         half: tuple[float, float, float], rng: np.random.Generator, yaw: float = 0.0,
         scale: float = 1.0) -> SceneObject:
    """A box-shaped object of class ``c`` with explicit placement."""
    return SceneObject(c, make_material(classes[c], rng, scale),
                       [Box(np.array(center, float), np.array(half, float), yaw)])


def _ground_strip(c: int, material: Material, x: float, z0: float, half_w: float,
                  half_len: float) -> Decal:
    """A rectangle on the ground (object 0) centred at ``x``, running along +z from ``z0``."""
    return Decal(0, c, material, np.array([x, 0.0, z0 + half_len]), np.array([1.0, 0, 0]),
                 np.array([0, 0, 1.0]), half_w, half_len)


def _street_side(classes, idx, side: int, edge: float, rng: np.random.Generator,
                 objects: list[SceneObject], decals: list[Decal]) -> None:
    """Blocks along one side of the street: buildings, green strips with trees, walls/fences."""
    z = rng.uniform(-5, 5)
    while z < 120:
        length = rng.uniform(8, 20)
        kind = rng.random()
        if kind < 0.65:
            depth, h = rng.uniform(6, 12), rng.uniform(6, 25)
            x = side * (edge + rng.uniform(0, 3) + depth / 2)
            objects.append(_box(classes, idx["building"], (x, h / 2, z + length / 2),
                                (depth / 2, h / 2, length / 2), rng, scale=2.0))
        elif kind < 0.85:
            c = idx["terrain"]
            decals.append(_ground_strip(c, make_material(classes[c], rng), side * (edge + 3), z,
                                        3.0, length / 2))
            for _ in range(int(rng.integers(1, 3))):
                x, zt = side * (edge + rng.uniform(1, 5)), z + rng.uniform(0, length)
                objects.append(build_object(classes[idx["vegetation"]], idx["vegetation"], x, zt,
                                            0.0, rng)[0])
        else:
            c = idx[str(rng.choice(["wall", "fence"]))]
            h = _u(rng, classes[c].dims[1])
            objects.append(_box(classes, c, (side * (edge + 0.2), h / 2, z + length / 2),
                                (0.1, h / 2, length / 2), rng))
        z += length + rng.uniform(0, 4)


def street_scene(classes: tuple[ClassSpec, ...], rng: np.random.Generator, width: int) -> Scene:
    """A street: road, sidewalks, building rows, vehicles, poles, trees, people, sky."""
    idx = {s.name: i for i, s in enumerate(classes)}
    road = idx["road"]
    objects = [SceneObject(road, make_material(classes[road], rng),
                           [Plane(np.array([0, 1.0, 0]), 0.0)])]
    road_half, walk = rng.uniform(3.5, 7.0), rng.uniform(2.0, 4.0)
    walk_mat = make_material(classes[idx["sidewalk"]], rng)
    decals = [_ground_strip(idx["sidewalk"], walk_mat, side * (road_half + walk / 2), 0.0,
                            walk / 2, 100.0) for side in (-1, 1)]
    for side in (-1, 1):
        _street_side(classes, idx, side, road_half + walk, rng, objects, decals)
    # Poles along the kerb, some carrying a traffic light or sign.
    for _ in range(int(rng.integers(1, 5))):
        x, z = rng.choice([-1, 1]) * (road_half + 0.4), rng.uniform(4, 60)
        obj, top = build_object(classes[idx["pole"]], idx["pole"], x, z, 0.0, rng)
        objects.append(obj)
        if rng.random() < 0.6:
            c = idx[str(rng.choice(["traffic light", "traffic sign"]))]
            w, h, d = (_u(rng, r) for r in classes[c].dims)
            objects.append(_box(classes, c, (x, top + h / 2, z), (w / 2, h / 2, d / 2), rng))
    vehicles = [idx[n] for n in ("car", "car", "car", "truck", "bus", "motorcycle", "bicycle",
                                 "train")]
    for _ in range(int(rng.integers(1, 7))):
        c = int(rng.choice(vehicles))
        lane, z = rng.uniform(-road_half + 1.2, road_half - 1.2), rng.uniform(6, 50)
        w, h, d = (_u(rng, r) for r in classes[c].dims)
        objects.append(_box(classes, c, (lane, h / 2 + 0.15, z), (w / 2, h / 2, d / 2), rng,
                            yaw=float(rng.normal(0, 0.08))))
        if classes[c].name in ("motorcycle", "bicycle"):
            objects.append(build_object(classes[idx["rider"]], idx["rider"], lane, z, h * 0.6,
                                        rng)[0])
    for _ in range(int(rng.integers(0, 6))):
        x = rng.choice([-1, 1]) * (road_half + rng.uniform(0.5, walk))
        objects.append(build_object(classes[idx["person"]], idx["person"], x,
                                    rng.uniform(4, 40), 0.0, rng)[0])

    sun = _unit(np.array([rng.uniform(-1, 1), rng.uniform(0.4, 1.2), rng.uniform(-1, 1)]))
    lights = [Light(None, sun, float(rng.uniform(0.6, 0.9)))]
    cam_pos = np.array([rng.uniform(-road_half / 2, road_half / 2), rng.uniform(1.2, 1.7), 0.0])
    rotation = _look_rotation(rng.uniform(-0.15, 0.15), rng.uniform(-0.08, 0.05),
                              rng.uniform(-0.03, 0.03))
    horizon = np.array(colorsys.hls_to_rgb(rng.uniform(0.5, 0.62), rng.uniform(0.7, 0.9), 0.4))
    zenith = np.array(colorsys.hls_to_rgb(rng.uniform(0.55, 0.65), rng.uniform(0.45, 0.65), 0.6))
    return Scene(objects, decals, lights, Camera(cam_pos, rotation, focal=0.5 * width),
                 ambient=float(rng.uniform(0.3, 0.45)), sky_label=idx["sky"],
                 sky_color=(horizon, zenith), exposure=float(rng.uniform(0.85, 1.15)),
                 noise_sigma=float(rng.uniform(0.005, 0.025)))
