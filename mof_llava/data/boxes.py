"""Boxes on pictures: where a box lands in the picture the model sees, and the text that names it.

A box is `(x1, y1, x2, y2)`, top-left and bottom-right corners. Ground truth is in pixels of the
original picture; what a model reads and writes is the box in its *input frame*, normalised to
[0, 1], written with 3 decimals as LION's region-level answers are: `[0.440,0.060,0.650,0.367]`.

The input frame is what the processor (`model/processing.py`, transformers' LLaVA image processor)
makes of the picture; each step moves a box, and this module is the one place that says how:

- `pad`: the picture is centred on a square of side max(w, h), the short axis shifted by
  (max(w, h) - short) // 2 pixels (transformers' `pad_to_square`), then resized to the square input;
- `crop`: resized so its short side is the input side, the long side to int(side * long / short),
  then centre-cropped, the crop starting at int((long' - side) / 2) (transformers' `center_crop`);
  a box may lose its part outside the crop (`visible_fraction` says how much);
- `image`: the whole picture resized to the square (no padding): normalised by the picture's own
  width and height, as LION and lmms-eval's RefCOCO normalise. For scoring other codebases'
  answers; mof-llava's processor has no such mode.

There are no flips or random crops anywhere in mof-llava's image path, so these three are all.
Without an input side (`size=None`) the crop geometry is continuous; with the processor's side it
reproduces its integer rounding (the two differ by less than one input pixel).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, get_args

Box = tuple[float, float, float, float]
BoxFrame = Literal["pad", "crop", "image"]
BOX_FRAMES: tuple[str, ...] = get_args(BoxFrame)
# the frames of mof-llava's own inputs, the processor's `image_aspect_ratio` values (training records)
INPUT_FRAMES: tuple[str, ...] = ("pad", "crop")
DECIMALS = 3  # LION's answers: "[0.440,0.060,0.650,0.367]"


@dataclass(frozen=True)
class Affine:
    """Per-axis scale then shift: x' = sx * x + tx, y' = sy * y + ty (all the image steps are this)."""

    sx: float = 1.0
    sy: float = 1.0
    tx: float = 0.0
    ty: float = 0.0

    def apply(self, box: Box) -> Box:
        x1, y1, x2, y2 = box
        return (
            self.sx * x1 + self.tx,
            self.sy * y1 + self.ty,
            self.sx * x2 + self.tx,
            self.sy * y2 + self.ty,
        )

    def invert(self, box: Box) -> Box:
        x1, y1, x2, y2 = box
        return (
            (x1 - self.tx) / self.sx,
            (y1 - self.ty) / self.sy,
            (x2 - self.tx) / self.sx,
            (y2 - self.ty) / self.sy,
        )

    def then(self, after: Affine) -> Affine:
        """This step followed by `after`."""
        return Affine(
            after.sx * self.sx,
            after.sy * self.sy,
            after.sx * self.tx + after.tx,
            after.sy * self.ty + after.ty,
        )


def pad_to_square(width: int, height: int) -> Affine:
    """Centring on a square of side max(w, h), the offset rounded down as transformers does."""
    side = max(width, height)
    return Affine(tx=(side - width) // 2, ty=(side - height) // 2)


def resize(width: float, height: float, new_width: float, new_height: float) -> Affine:
    return Affine(sx=new_width / width, sy=new_height / height)


def center_crop(
    width: float, height: float, crop_width: float, crop_height: float, exact: bool = True
) -> Affine:
    """Cutting the centre `crop_width` x `crop_height`; `exact` rounds the start as transformers does."""
    left, top = (width - crop_width) / 2, (height - crop_height) / 2
    return Affine(tx=-(int(left) if exact else left), ty=-(int(top) if exact else top))


def short_side_size(width: int, height: int, side: float, exact: bool = True) -> tuple[float, float]:
    """The size after resizing the short side to `side` (the long side truncated when `exact`)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = side * long / short
    new_long = int(new_long) if exact else new_long
    return (side, new_long) if width <= height else (new_long, side)


def to_model_input(width: int, height: int, frame: BoxFrame, size: int | None = None) -> Affine:
    """Original pixels -> the model input normalised to [0, 1] (see the module docstring)."""
    if frame not in BOX_FRAMES:
        raise ValueError(f"box frame must be one of {', '.join(BOX_FRAMES)}, got {frame!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"picture size must be positive, got {width}x{height}")
    if frame == "image":
        return resize(width, height, 1.0, 1.0)
    if frame == "pad":
        side = max(width, height)
        return pad_to_square(width, height).then(resize(side, side, 1.0, 1.0))
    exact = size is not None
    side = float(size) if exact else 1.0
    new_w, new_h = short_side_size(width, height, side, exact)
    steps = resize(width, height, new_w, new_h).then(center_crop(new_w, new_h, side, side, exact))
    return steps.then(resize(side, side, 1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Geometry of boxes


def xywh_to_xyxy(box) -> Box:
    """COCO's [x, y, width, height] -> corners."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def clip(box: Box, low: float = 0.0, high: float = 1.0) -> Box:
    return tuple(min(max(v, low), high) for v in box)  # type: ignore[return-value]


def visible_fraction(box: Box, to_input: Affine) -> float:
    """Share of the box's area that is inside the model input (1 unless a crop cuts it)."""
    moved = to_input.apply(box)
    whole = area(moved)
    return area(clip(moved)) / whole if whole > 0 else 0.0


def is_proper(box: Box) -> bool:
    """Inside [0, 1] with x1 < x2 and y1 < y2: a box a normalised answer may name."""
    x1, y1, x2, y2 = box
    return all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in box) and x1 < x2 and y1 < y2


# ---------------------------------------------------------------------------------------------
# Answer text


def format_box(box: Box) -> str:
    """A normalised box as LION writes it: `[0.440,0.060,0.650,0.367]`."""
    return "[" + ",".join(f"{v:.{DECIMALS}f}" for v in box) + "]"


_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+))"
_SEP = r"\s*,\s*"
# four numbers in one bracket "[a, b, c, d]" / "(a,b,c,d)", or two corner points "(a, b), (c, d)"
_FOUR = re.compile(r"[\[(]\s*" + _SEP.join([_NUMBER] * 4) + r"\s*[\])]")
_POINTS = re.compile(
    r"[\[(]\s*"
    + _NUMBER
    + _SEP
    + _NUMBER
    + r"\s*[\])]\s*,?\s*(?:to|and)?\s*[\[(]\s*"
    + _NUMBER
    + _SEP
    + _NUMBER
    + r"\s*[\])]"
)


def parse_box(text: str) -> Box | None:
    """The first box written in free text: four numbers in one pair of brackets or parentheses
    (`[0.44, 0.06, 0.65, 0.367]`, `Answer: (0.440,0.060,0.650,0.367)`), or two corner points
    (`(0.44, 0.06), (0.65, 0.37)`, `[0.44,0.06] to [0.65,0.37]`), whichever starts first; None
    when there is none. The numbers are returned as written (not clipped, not reordered)."""
    found = [m for m in (_FOUR.search(text), _POINTS.search(text)) if m]
    if not found:
        return None
    match = min(found, key=lambda m: m.start())
    return tuple(float(v) for v in match.groups())  # type: ignore[return-value]
