"""Class sets of the synthetic scenes, one per layout, with how each class looks.

A class fixes a shape family, plausible sizes, preferred textures and a base colour; every
instance then jitters colour and texture (and sometimes takes any colour/texture), so
appearance correlates with the class without determining it.

``shape`` values and their ``dims``:
    structure       room surface / road (``dims`` unused)
    box             (width, height, depth) ranges, metres
    sphere          (radius,) range
    cylinder        (radius, height) ranges
    person          (body radius, body height) ranges; a head sphere on top
    lamp            (pole height,) range; a thin pole with a shade sphere
    plant           (pot radius, pot height, foliage radius) ranges
    tree            (trunk height, crown radius) ranges
    pole            (radius, height) ranges
    wall_decal      (width, height) ranges of a rectangle on a wall (same depth as the wall)
    floor_decal     (width, depth) ranges of a rectangle on the floor / ground
    sky             nothing is hit (no depth)
"""
from __future__ import annotations

from dataclasses import dataclass

R = tuple[float, float]


@dataclass(frozen=True)
class ClassSpec:
    name: str
    shape: str
    dims: tuple[R, ...]
    textures: tuple[str, ...]
    color: tuple[float, float, float]          # base RGB in [0, 1]
    on_top: bool = False                       # may stand on another object's top face
    depth_unreliable: bool = False             # depth sensor often fails (glass, screens)


def _c(hex_rgb: str) -> tuple[float, float, float]:
    return tuple(int(hex_rgb[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


# NYU-v2 40 classes, AdaShare's 0-based order.
NYU40 = (
    ClassSpec("wall", "structure", (), ("plain", "noise", "stripes"), _c("c8c0b0")),
    ClassSpec("floor", "structure", (), ("checker", "grain", "noise"), _c("8a6a4a")),
    ClassSpec("cabinet", "box", ((0.5, 1.2), (0.6, 1.2), (0.4, 0.6)), ("grain", "plain"), _c("7a5230")),
    ClassSpec("bed", "box", ((1.4, 2.0), (0.4, 0.7), (1.9, 2.2)), ("stripes", "plain"), _c("d0d0e8")),
    ClassSpec("chair", "box", ((0.4, 0.55), (0.8, 1.0), (0.4, 0.55)), ("grain", "plain"), _c("6a4a2a")),
    ClassSpec("sofa", "box", ((1.6, 2.4), (0.7, 0.9), (0.8, 1.0)), ("noise", "plain"), _c("5a6a8a")),
    ClassSpec("table", "box", ((0.8, 1.6), (0.7, 0.8), (0.7, 1.0)), ("grain", "plain"), _c("9a7040")),
    ClassSpec("door", "wall_decal", ((0.8, 1.0), (1.9, 2.1)), ("grain", "plain"), _c("8a5a30")),
    ClassSpec("window", "wall_decal", ((0.8, 1.8), (0.9, 1.4)), ("grid", "plain"), _c("b0d0f0"), depth_unreliable=True),
    ClassSpec("bookshelf", "box", ((0.7, 1.2), (1.6, 2.1), (0.3, 0.4)), ("grid", "stripes"), _c("6a4020")),
    ClassSpec("picture", "wall_decal", ((0.3, 0.9), (0.3, 0.7)), ("noise", "checker"), _c("a04040")),
    ClassSpec("counter", "box", ((1.2, 2.5), (0.85, 0.95), (0.55, 0.65)), ("plain", "noise"), _c("d8d8d0")),
    ClassSpec("blinds", "wall_decal", ((0.8, 1.6), (0.9, 1.4)), ("stripes",), _c("e0e0d0")),
    ClassSpec("desk", "box", ((1.0, 1.5), (0.72, 0.78), (0.6, 0.8)), ("grain", "plain"), _c("a08060")),
    ClassSpec("shelves", "box", ((0.6, 1.2), (0.8, 1.8), (0.25, 0.4)), ("grid",), _c("907050")),
    ClassSpec("curtain", "wall_decal", ((0.6, 1.4), (1.6, 2.2)), ("stripes", "noise"), _c("a05070")),
    ClassSpec("dresser", "box", ((0.8, 1.4), (0.7, 1.1), (0.45, 0.55)), ("grain", "grid"), _c("805030")),
    ClassSpec("pillow", "sphere", ((0.15, 0.25),), ("plain", "noise"), _c("e8e0f0"), on_top=True),
    ClassSpec("mirror", "wall_decal", ((0.4, 0.9), (0.6, 1.2)), ("plain",), _c("d0e0e8"), depth_unreliable=True),
    ClassSpec("floor mat", "floor_decal", ((0.6, 1.6), (0.5, 1.2)), ("checker", "stripes"), _c("a03030")),
    ClassSpec("clothes", "sphere", ((0.2, 0.35),), ("noise", "stripes"), _c("406090")),
    ClassSpec("ceiling", "structure", (), ("plain", "noise"), _c("f0f0f0")),
    ClassSpec("books", "box", ((0.2, 0.4), (0.15, 0.3), (0.15, 0.25)), ("stripes", "noise"), _c("b03020"), on_top=True),
    ClassSpec("refrigerator", "box", ((0.6, 0.8), (1.6, 1.9), (0.6, 0.7)), ("plain",), _c("e8e8e8")),
    ClassSpec("television", "box", ((0.6, 1.1), (0.4, 0.65), (0.06, 0.1)), ("plain",), _c("202020"), on_top=True, depth_unreliable=True),
    ClassSpec("paper", "floor_decal", ((0.2, 0.4), (0.25, 0.4)), ("plain",), _c("f8f8f8")),
    ClassSpec("towel", "wall_decal", ((0.3, 0.6), (0.5, 0.9)), ("stripes", "plain"), _c("60a0c0")),
    ClassSpec("shower curtain", "wall_decal", ((0.8, 1.2), (1.6, 1.9)), ("checker", "stripes"), _c("90c0d0")),
    ClassSpec("box", "box", ((0.3, 0.6), (0.25, 0.5), (0.3, 0.5)), ("plain", "noise"), _c("c09060"), on_top=True),
    ClassSpec("whiteboard", "wall_decal", ((1.0, 1.8), (0.8, 1.1)), ("plain",), _c("f4f4f4")),
    ClassSpec("person", "person", ((0.18, 0.25), (1.1, 1.45)), ("noise", "stripes", "plain"), _c("c08870")),
    ClassSpec("night stand", "box", ((0.4, 0.55), (0.5, 0.65), (0.35, 0.45)), ("grain",), _c("704828")),
    ClassSpec("toilet", "cylinder", ((0.18, 0.25), (0.4, 0.5)), ("plain",), _c("f0f0f0")),
    ClassSpec("sink", "cylinder", ((0.2, 0.3), (0.8, 0.9)), ("plain", "noise"), _c("e0e4e8")),
    ClassSpec("lamp", "lamp", ((0.4, 1.6),), ("plain",), _c("f0d090"), on_top=True),
    ClassSpec("bathtub", "box", ((0.7, 0.8), (0.5, 0.6), (1.5, 1.7)), ("plain",), _c("f0f0ff")),
    ClassSpec("bag", "sphere", ((0.15, 0.3),), ("noise", "plain"), _c("303050"), on_top=True),
    ClassSpec("otherstructure", "cylinder", ((0.15, 0.3), (2.4, 3.2)), ("plain", "noise"), _c("b0a898")),
    ClassSpec("otherfurniture", "box", ((0.4, 1.0), (0.4, 1.2), (0.4, 0.8)), ("grain", "noise", "plain"), _c("8a7060")),
    ClassSpec("otherprop", "cylinder", ((0.05, 0.12), (0.15, 0.35)), ("plain", "stripes", "noise"), _c("50a050"), on_top=True),
)

# Cityscapes 19 training classes in their standard order; void is -1.
CITYSCAPES19 = (
    ClassSpec("road", "structure", (), ("noise", "plain"), _c("505058")),
    ClassSpec("sidewalk", "floor_decal", ((2.0, 4.0), (200.0, 200.0)), ("checker", "grid"), _c("a09890")),
    ClassSpec("building", "box", ((6.0, 12.0), (8.0, 25.0), (8.0, 20.0)), ("grid", "noise"), _c("a08070")),
    ClassSpec("wall", "box", ((0.2, 0.4), (1.0, 2.5), (5.0, 15.0)), ("noise", "plain"), _c("a0a090")),
    ClassSpec("fence", "box", ((0.05, 0.1), (0.8, 1.6), (4.0, 12.0)), ("stripes", "grid"), _c("8a8a70")),
    ClassSpec("pole", "pole", ((0.06, 0.12), (3.5, 7.0)), ("plain",), _c("707070")),
    ClassSpec("traffic light", "box", ((0.3, 0.4), (0.8, 1.0), (0.3, 0.4)), ("plain", "stripes"), _c("303020")),
    ClassSpec("traffic sign", "box", ((0.6, 0.9), (0.6, 0.9), (0.05, 0.08)), ("plain", "checker"), _c("d0c020")),
    ClassSpec("vegetation", "tree", ((2.0, 4.0), (1.5, 3.0)), ("noise",), _c("407030")),
    ClassSpec("terrain", "floor_decal", ((2.0, 6.0), (4.0, 15.0)), ("noise",), _c("80a050")),
    ClassSpec("sky", "sky", (), ("noise",), _c("80b0e0")),
    ClassSpec("person", "person", ((0.2, 0.28), (1.2, 1.5)), ("noise", "stripes", "plain"), _c("a05050")),
    ClassSpec("rider", "person", ((0.2, 0.28), (0.9, 1.1)), ("noise", "plain"), _c("c04040")),
    ClassSpec("car", "box", ((1.7, 1.9), (1.3, 1.6), (3.8, 4.6)), ("plain",), _c("3040a0")),
    ClassSpec("truck", "box", ((2.2, 2.5), (2.5, 3.5), (6.0, 9.0)), ("plain", "stripes"), _c("406040")),
    ClassSpec("bus", "box", ((2.4, 2.6), (2.8, 3.2), (10.0, 12.0)), ("grid", "plain"), _c("c0a020")),
    ClassSpec("train", "box", ((2.8, 3.0), (3.5, 4.0), (20.0, 30.0)), ("grid",), _c("909090")),
    ClassSpec("motorcycle", "box", ((0.5, 0.7), (0.9, 1.2), (1.8, 2.2)), ("plain",), _c("602060")),
    ClassSpec("bicycle", "box", ((0.3, 0.5), (0.9, 1.1), (1.6, 1.8)), ("stripes",), _c("2080a0")),
)
# Cityscapes category (label_7) of each of the 19 classes:
# flat, construction, object, nature, sky, human, vehicle.
CITYSCAPES_CATEGORY7 = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
# label_2 of the synthetic scenes: 0 = background (flat, construction, nature, sky), 1 = things
# (objects, humans, vehicles).
CITYSCAPES_CATEGORY2 = tuple(int(c in (2, 5, 6)) for c in CITYSCAPES_CATEGORY7)

# Taskonomy 17 classes (class k is stored as k + 1; 0 = unlabeled).
TASKONOMY17 = (
    ClassSpec("background", "structure", (), ("plain", "noise", "checker", "grain"), _c("b8b0a0")),
    ClassSpec("bottle", "cylinder", ((0.04, 0.06), (0.2, 0.35)), ("plain",), _c("40a060"), on_top=True),
    ClassSpec("chair", "box", ((0.4, 0.55), (0.8, 1.0), (0.4, 0.55)), ("grain", "plain"), _c("6a4a2a")),
    ClassSpec("couch", "box", ((1.6, 2.4), (0.7, 0.9), (0.8, 1.0)), ("noise", "plain"), _c("5a6a8a")),
    ClassSpec("potted plant", "plant", ((0.12, 0.2), (0.2, 0.4), (0.2, 0.4)), ("noise",), _c("3a7a3a")),
    ClassSpec("bed", "box", ((1.4, 2.0), (0.4, 0.7), (1.9, 2.2)), ("stripes", "plain"), _c("d0d0e8")),
    ClassSpec("dining table", "box", ((0.9, 1.8), (0.72, 0.78), (0.8, 1.0)), ("grain", "plain"), _c("9a7040")),
    ClassSpec("toilet", "cylinder", ((0.18, 0.25), (0.4, 0.5)), ("plain",), _c("f0f0f0")),
    ClassSpec("tv", "box", ((0.6, 1.1), (0.4, 0.65), (0.06, 0.1)), ("plain",), _c("202020"), on_top=True, depth_unreliable=True),
    ClassSpec("microwave", "box", ((0.45, 0.55), (0.28, 0.33), (0.35, 0.4)), ("plain", "grid"), _c("c0c0c0"), on_top=True),
    ClassSpec("oven", "box", ((0.6, 0.7), (0.85, 0.9), (0.6, 0.65)), ("grid", "plain"), _c("505050")),
    ClassSpec("toaster", "box", ((0.25, 0.3), (0.18, 0.22), (0.15, 0.2)), ("plain",), _c("b0b0b8"), on_top=True),
    ClassSpec("sink", "cylinder", ((0.2, 0.3), (0.8, 0.9)), ("plain", "noise"), _c("e0e4e8")),
    ClassSpec("refrigerator", "box", ((0.6, 0.8), (1.6, 1.9), (0.6, 0.7)), ("plain",), _c("e8e8e8")),
    ClassSpec("book", "box", ((0.2, 0.4), (0.15, 0.3), (0.15, 0.25)), ("stripes", "noise"), _c("b03020"), on_top=True),
    ClassSpec("clock", "wall_decal", ((0.25, 0.4), (0.25, 0.4)), ("checker", "plain"), _c("e0d0a0")),
    ClassSpec("vase", "cylinder", ((0.06, 0.12), (0.2, 0.4)), ("noise", "stripes"), _c("a060c0"), on_top=True),
)

# The NYU-v2 classes the synthetic rooms are furnished with: one per class of NYU's 13-class
# grouping (furniture -> cabinet, objects -> box). Labels keep the 40-class ids; the other 27
# classes never appear, so a small CPU model can learn every class it is scored on.
NYU13_SCENE_CLASSES = ("wall", "floor", "ceiling", "bed", "books", "chair", "cabinet", "box",
                       "picture", "sofa", "table", "television", "window")

CLASS_SETS = {"nyuv2_3": NYU40, "cityscapes": CITYSCAPES19, "taskonomy": TASKONOMY17}
TEXTURES = ("plain", "stripes", "checker", "grain", "noise", "grid")


def class_index(classes: tuple[ClassSpec, ...], name: str) -> int:
    """Index of the class called ``name`` in ``classes``."""
    for i, spec in enumerate(classes):
        if spec.name == name:
            return i
    raise KeyError(f"no class {name!r} in this class set")
