"""How every procedural picture is drawn: the palette, the shapes, the background and `paint`.

Both layouts (`scenes.lab`, the toy lab's 48 px world; `scenes.canvas`, pictures of varied sizes
and aspect ratios) describe a picture as a background and a list of `Thing`s and draw it with
`paint`, so a shape looks the same wherever it appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # left, top, right, bottom (inclusive)

# Saturated object colours, at least 98 apart in RGB from every background colour and every blend
# of two, so a picture's objects can be told from its background by colour alone (the tests do).
SHAPE_COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
BACKGROUND_COLOURS: dict[str, RGB] = {
    "grey": (128, 128, 128),
    "beige": (196, 176, 140),
    "slate": (84, 96, 116),
    "lavender": (168, 150, 196),
    "steel": (100, 130, 160),
    "brown": (124, 88, 60),
}
BACKGROUND_STYLES = ("plain", "noise", "gradient")
NOISE_AMPLITUDE = 10  # +- per channel, for the "noise" style

SHAPES = ("circle", "square", "triangle", "arrow", "diamond")
ORIENTED_SHAPES = ("triangle", "arrow")
ORIENTATIONS = ("up", "down", "left", "right")
OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left", "top": "bottom", "bottom": "top"}

OUTLINE_WIDTH = 2  # px, for things that are not filled
DOT_SIDE = 3  # the small detail: a DOT_SIDE x DOT_SIDE square in the thing's top-left corner
DOT_COLOURS = {"white": "black", "black": "white"}  # dot colour on an object of this colour; else white


@dataclass(frozen=True)
class Thing:
    """One object: a shape of one colour in a square box of `side` px around `centre`."""

    shape: str
    colour: str
    centre: tuple[float, float]  # x, y in pixels
    side: int
    orientation: str | None = None
    filled: bool = True
    dot: bool = False

    @property
    def box(self) -> Box:
        left, top = int(round(self.centre[0] - self.side / 2)), int(round(self.centre[1] - self.side / 2))
        return (left, top, left + self.side - 1, top + self.side - 1)

    @classmethod
    def in_box(cls, shape: str, colour: str, box: Box, orientation: str | None = None) -> Thing:
        """The filled thing whose `box` is exactly `box` (a square)."""
        side = box[2] - box[0] + 1
        return cls(shape, colour, (box[0] + side / 2, box[1] + side / 2), side, orientation)

    @classmethod
    def from_json(cls, data: dict) -> Thing:
        return cls(**{**data, "centre": tuple(data["centre"])})


def paint(
    size: tuple[int, int],
    background: tuple[str, ...],
    things: tuple[Thing, ...],
    style: str = "plain",
    noise_seed: int = 0,
) -> Image.Image:
    """The picture: the background (one colour, or two for a gradient), then each thing in order."""
    image = Image.fromarray(background_pixels(size, background, style, noise_seed))
    draw = ImageDraw.Draw(image)
    for thing in things:
        line = 0 if thing.filled else OUTLINE_WIDTH
        draw_shape(draw, thing.shape, thing.box, SHAPE_COLOURS[thing.colour], thing.orientation, line)
        if thing.dot:
            left, top = thing.box[0], thing.box[1]
            dot = SHAPE_COLOURS[DOT_COLOURS.get(thing.colour, "white")]
            draw.rectangle((left, top, left + DOT_SIDE - 1, top + DOT_SIDE - 1), fill=dot)
    return image


def background_pixels(
    size: tuple[int, int], background: tuple[str, ...], style: str, noise_seed: int
) -> np.ndarray:
    width, height = size
    first = np.array(BACKGROUND_COLOURS[background[0]], dtype=np.float32)
    pixels = np.broadcast_to(first, (height, width, 3)).copy()
    if style == "gradient":
        second = np.array(BACKGROUND_COLOURS[background[1]], dtype=np.float32)
        vertical = noise_seed % 2 == 0
        ramp = np.linspace(0.0, 1.0, height if vertical else width, dtype=np.float32)
        ramp = ramp[:, None, None] if vertical else ramp[None, :, None]
        pixels = first + (second - first) * ramp * np.ones((height, width, 1), dtype=np.float32)
    elif style == "noise":
        noise = np.random.default_rng(noise_seed).integers(
            -NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(height, width, 3)
        )
        pixels = pixels + noise
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


# Outlines in a unit square, pointing right; `_orient` turns them.
_TRIANGLE = ((0.0, 0.0), (1.0, 0.5), (0.0, 1.0))
_ARROW = ((0.0, 0.25), (0.6, 0.25), (0.6, 0.0), (1.0, 0.5), (0.6, 1.0), (0.6, 0.75), (0.0, 0.75))
_DIAMOND = ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5))


def _orient(u: float, v: float, orientation: str) -> tuple[float, float]:
    """A point of a right-pointing unit outline, turned to point `orientation` (y grows downwards)."""
    return {"right": (u, v), "left": (1 - u, v), "down": (v, u), "up": (v, 1 - u)}[orientation]


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: Box, colour: RGB, orientation: str | None, line: int = 0
) -> None:
    """The shape filled, or with `line` > 0 only its outline, `line` px wide (the toy lab's fill attribute)."""
    left, top, right, bottom = box
    paint_args = {"fill": colour} if line <= 0 else {"outline": colour, "width": line}
    if shape == "circle":
        draw.ellipse(box, **paint_args)
    elif shape == "square":
        draw.rectangle(box, **paint_args)
    else:
        outline = {"triangle": _TRIANGLE, "arrow": _ARROW, "diamond": _DIAMOND}[shape]
        turned = [_orient(u, v, orientation or "right") for u, v in outline]
        draw.polygon([(left + x * (right - left), top + y * (bottom - top)) for x, y in turned], **paint_args)


def seeded_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item `index` of a stream: adding items keeps the others."""
    return np.random.default_rng([seed, stream, index])
