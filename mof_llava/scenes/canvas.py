"""Scenes on canvases of varied sizes and aspect ratios: what the data pipeline's resize, pad and
crop paths are tested on, and what `mof-llava demo`'s canvas dataset and the benchmark folders show.

Every picture is a `Scene`: one to four objects of one shape and one colour, placed without
touching, on a plain, noisy or two-colour gradient background, in one of several sizes and aspect
ratios. Triangles and arrows point up, down, left or right; a single object sits on the left, the
right, at the top, at the bottom or in the centre. Drawn by `scenes.drawing.paint`, like the toy
lab's scenes. `attribute_pair` gives two scenes that differ in one attribute; `picture(seed)` one
picture for a benchmark folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from .drawing import (
    BACKGROUND_COLOURS,
    BACKGROUND_STYLES,
    OPPOSITE,
    ORIENTATIONS,
    ORIENTED_SHAPES,
    SHAPE_COLOURS,
    SHAPES,
    Box,
    Thing,
    paint,
    seeded_rng,
)

POSITIONS = ("left", "right", "top", "bottom", "centre")
MAX_COUNT = 4

# Picture sizes: (width, height) ratios on a short side of 80-128 px. Wide and tall pictures make
# the difference between padding to a square and centre-cropping visible.
ASPECT_RATIOS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1), (1, 2))
SHORT_SIDE = (80, 128)

PAIR_ATTRIBUTES = ("orientation", "count", "colour", "position")
PICTURE_STREAM = 11  # the benchmark folders' pictures


@dataclass(frozen=True)
class Scene:
    """What a picture shows; `render()` draws it, the text builders describe it."""

    size: tuple[int, int]  # width, height
    background: tuple[str, ...]  # one colour name, or two for a gradient
    background_style: str  # plain | noise | gradient
    shape: str
    colour: str
    boxes: tuple[Box, ...]  # one square box per object
    orientation: str | None  # oriented shapes only
    position: str | None  # single objects only
    noise_seed: int = 0

    @property
    def count(self) -> int:
        return len(self.boxes)

    @property
    def background_name(self) -> str:
        return " and ".join(self.background)

    @property
    def things(self) -> tuple[Thing, ...]:
        return tuple(Thing.in_box(self.shape, self.colour, box, self.orientation) for box in self.boxes)

    def render(self) -> Image.Image:
        return paint(self.size, self.background, self.things, self.background_style, self.noise_seed)

    def to_json(self) -> dict:
        """The whole scene, plus its count (derived: `from_json` ignores it)."""
        return {**asdict(self), "count": self.count}

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        fields = {k: data[k] for k in ("background_style", "shape", "colour", "orientation", "position")}
        return cls(size=tuple(data["size"]), background=tuple(data["background"]),
                   boxes=tuple(tuple(b) for b in data["boxes"]), noise_seed=data.get("noise_seed", 0),
                   **fields)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Drawing a random scene


def random_scene(
    rng: np.random.Generator,
    count: int | None = None,
    position: str | None = None,
    size: tuple[int, int] | None = None,
) -> Scene:
    """A random scene; `count`, `position` (only for a single object) and the size may be fixed."""
    width, height = _random_size(rng) if size is None else size
    shape = str(rng.choice(SHAPES))
    colour = str(rng.choice(list(SHAPE_COLOURS)))
    count = int(rng.integers(1, MAX_COUNT + 1)) if count is None else count
    side = int(round(rng.uniform(0.22, 0.32) * min(width, height)))
    if count == 1:
        position = str(rng.choice(POSITIONS)) if position is None else position
        boxes: tuple[Box, ...] = (_box_at(rng, width, height, side, position),)
    else:
        position = None
        boxes = _grid_boxes(rng, width, height, side, count)
    style = str(rng.choice(BACKGROUND_STYLES))
    names = list(BACKGROUND_COLOURS)
    background = tuple(str(c) for c in rng.choice(names, size=2 if style == "gradient" else 1, replace=False))
    orientation = str(rng.choice(ORIENTATIONS)) if shape in ORIENTED_SHAPES else None
    return Scene(
        size=(width, height),
        background=background,
        background_style=style,
        shape=shape,
        colour=colour,
        boxes=boxes,
        orientation=orientation,
        position=position,
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    ratio_w, ratio_h = ASPECT_RATIOS[int(rng.integers(len(ASPECT_RATIOS)))]
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    scale = short / min(ratio_w, ratio_h)
    return int(round(ratio_w * scale)), int(round(ratio_h * scale))


def _box_at(rng: np.random.Generator, width: int, height: int, side: int, position: str) -> Box:
    """A box whose centre lies in the outer 30% of the picture on `position`'s side (or in the
    middle fifth for "centre"), and in the middle fifth along the other axis."""
    half = side / 2

    def middle(extent: int) -> float:
        return rng.uniform(0.4 * extent, 0.6 * extent)

    def near(extent: int) -> float:
        return rng.uniform(half + 1, 0.3 * extent)

    if position == "centre":
        cx, cy = middle(width), middle(height)
    elif position in ("left", "right"):
        cx, cy = near(width), middle(height)
        cx = cx if position == "left" else width - cx
    elif position in ("top", "bottom"):
        cx, cy = middle(width), near(height)
        cy = cy if position == "top" else height - cy
    else:
        raise ValueError(f"unknown position {position!r}; choose one of {POSITIONS}")
    left, top = int(round(cx - half)), int(round(cy - half))
    return (left, top, left + side - 1, top + side - 1)


def _grid_boxes(rng: np.random.Generator, width: int, height: int, side: int, count: int) -> tuple[Box, ...]:
    """`count` boxes in distinct cells of a grid of 1.5 x side cells, jittered by at most 0.15 x
    side, so neighbours stay at least 0.2 x side apart (and at least a 2 x 2 grid fits)."""
    cell = 1.5 * side
    cols, rows = int(width // cell), int(height // cell)
    if cols * rows < count:
        raise ValueError(f"{count} objects of {side} px do not fit a {width}x{height} picture")
    x0, y0 = (width - cols * cell) / 2, (height - rows * cell) / 2
    cells = rng.choice(cols * rows, size=count, replace=False)
    boxes = []
    for c in sorted(int(c) for c in cells):
        jitter = rng.uniform(-0.15 * side, 0.15 * side, size=2)
        cx = x0 + (c % cols + 0.5) * cell + jitter[0]
        cy = y0 + (c // cols + 0.5) * cell + jitter[1]
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        boxes.append((left, top, left + side - 1, top + side - 1))
    return tuple(boxes)


# ---------------------------------------------------------------------------------------------
# Pairs that differ in one attribute


def attribute_pair(rng: np.random.Generator, attribute: str) -> tuple[Scene, Scene]:
    """Two scenes that differ in `attribute` only (count: two to four objects on both sides, so
    that neither picture gains a position; position: a single object mirrored left-right or
    top-bottom)."""
    if attribute == "orientation":
        base = _scene_with(rng, lambda s: s.orientation is not None)
        return base, replace(base, orientation=other_orientation(rng, base.orientation))
    if attribute == "count":
        larger = random_scene(rng, count=int(rng.integers(3, MAX_COUNT + 1)))
        drop = int(rng.integers(larger.count))
        smaller = replace(larger, boxes=larger.boxes[:drop] + larger.boxes[drop + 1 :])
        return (smaller, larger) if rng.random() < 0.5 else (larger, smaller)
    if attribute == "colour":
        base = random_scene(rng)
        return base, replace(base, colour=str(rng.choice([c for c in SHAPE_COLOURS if c != base.colour])))
    if attribute == "position":
        side = str(rng.choice(("left", "top")))
        base = random_scene(rng, count=1, position=side)
        return base, replace(base, position=OPPOSITE[side], boxes=(_mirror(base.boxes[0], base.size),))
    raise ValueError(f"unknown pair attribute {attribute!r}; choose one of {PAIR_ATTRIBUTES}")


def _scene_with(rng: np.random.Generator, wanted) -> Scene:
    while True:
        scene = random_scene(rng)
        if wanted(scene):
            return scene


def other_orientation(rng: np.random.Generator, orientation: str) -> str:
    return str(rng.choice([o for o in ORIENTATIONS if o != orientation]))


def _mirror(box: Box, size: tuple[int, int]) -> Box:
    """The box reflected through the picture's centre (a left box goes right, a top box bottom;
    it stays in the middle fifth along the other axis)."""
    left, top, right, bottom = box
    width, height = size
    return (width - 1 - right, height - 1 - bottom, width - 1 - left, height - 1 - top)


def picture(seed: int, size: tuple[int, int] = (72, 56)) -> Image.Image:
    """A picture of `size` for the benchmark folders, a function of `seed`."""
    return random_scene(seeded_rng(seed, PICTURE_STREAM, 0), size=size).render()
