"""The toy lab's world: small pictures of coloured shapes whose every attribute is known.

A `LabScene` is a background and one to four objects on a `SIZE` x `SIZE` picture. The *main* kind
(a shape and a colour) appears one to three times; a *companion* of another shape and colour may
join it. The main kind also has a size (small or big), an orientation (triangles and arrows), a
fill (solid or outline only) and, on its first copy, a small dot or not. Shapes, colours and the
drawing are `scenes.drawing`'s, shared with the canvas layout and every other procedural picture.

`caption()` names only the kinds ("a red circle and a blue square"), in random order: counts,
positions, relations, sizes, orientations, fills and the dot are never named. They are the
attributes a contrastive tower trained on these captions has no reason to keep.

`attribute_pair(rng, attribute)` gives two scenes that differ in that one attribute, for
measuring what a tower sees; `labels(scene)` the per-attribute classes for linear probes;
`to_json` / `from_json` the scene's metadata. Everything is a function of the seed: scene i of a
split comes from its own generator (`scene_rng`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from .drawing import (
    BACKGROUND_COLOURS,
    DOT_COLOURS,
    DOT_SIDE,
    OPPOSITE,
    ORIENTATIONS,
    ORIENTED_SHAPES,
    OUTLINE_WIDTH,
    SHAPE_COLOURS,
    SHAPES,
    Thing,
    paint,
    seeded_rng,
)

SIZE = 48  # picture side in pixels
SIDES = {"small": 9, "big": 14}  # main object's box side per size class
COMPANION_SIDE = 12
MAX_MAIN = 3
BACKGROUNDS = {name: BACKGROUND_COLOURS[name] for name in ("grey", "beige", "slate")}
COLOURS = tuple(SHAPE_COLOURS)
# The attributes pairs are made for and probes read, and which the captions name.
ATTRIBUTES = ("colour", "shape", "count", "position", "relation", "size", "orientation", "fill", "detail")
CAPTIONED = ("colour", "shape")

# Streams of scenes: the towers' training, probes, pairs, random pairs; the demo's data.
_SPLITS = {"train": 1, "probe": 2, "pairs": 3, "random": 4, "pretrain": 5, "instruct": 6, "mmvp": 7}


@dataclass(frozen=True)
class LabScene:
    background: str
    main: tuple[Thing, ...]  # copies of the main kind; main[0] carries the dot
    companion: Thing | None = None
    size_class: str = "small"

    @property
    def things(self) -> tuple[Thing, ...]:
        return self.main + ((self.companion,) if self.companion else ())

    @property
    def count(self) -> int:
        return len(self.main)

    def render(self) -> Image.Image:
        return paint((SIZE, SIZE), (self.background,), self.things)

    def pixels(self) -> np.ndarray:
        return np.asarray(self.render(), dtype=np.uint8)

    def to_json(self) -> dict:
        """The whole scene, plus its count and labels (derived: `from_json` ignores them)."""
        return {**asdict(self), "count": self.count, "labels": labels(self)}

    @classmethod
    def from_json(cls, data: dict) -> LabScene:
        companion = data.get("companion")
        return cls(
            background=data["background"],
            main=tuple(Thing.from_json(t) for t in data["main"]),
            companion=None if companion is None else Thing.from_json(companion),
            size_class=data.get("size_class", "small"),
        )


def labels(scene: LabScene) -> dict[str, int | None]:
    """Per-attribute class of a scene (None where the attribute does not apply)."""
    first = scene.main[0]
    x = sum(t.centre[0] for t in scene.main) / scene.count  # where the main kind is, as a group
    relation = None
    if scene.companion is not None:
        relation = int(x < scene.companion.centre[0])  # 1: the main kind is left of the companion
    return {
        "colour": COLOURS.index(first.colour),
        "shape": SHAPES.index(first.shape),
        "count": scene.count - 1,
        "position": int(x >= SIZE / 2),  # 0: left half, 1: right half
        "relation": relation,
        "size": int(scene.size_class == "big"),
        "orientation": ORIENTATIONS.index(first.orientation) if first.orientation else None,
        "fill": int(first.filled),
        "detail": int(first.dot),
    }


# ---------------------------------------------------------------------------------------------
# Drawing a random scene


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return seeded_rng(seed, _SPLITS[split], index)


def random_scene(
    rng: np.random.Generator,
    count: int | None = None,
    companion: bool | None = None,
    shape: str | None = None,
) -> LabScene:
    """A random scene; `count`, whether a companion is present and the main shape may be fixed."""
    shape = str(rng.choice(SHAPES)) if shape is None else shape
    colour = str(rng.choice(COLOURS))
    count = int(rng.integers(1, MAX_MAIN + 1)) if count is None else count
    companion = bool(rng.random() < 0.5) if companion is None else companion
    size_class = str(rng.choice(list(SIDES)))
    orientation = str(rng.choice(ORIENTATIONS)) if shape in ORIENTED_SHAPES else None
    filled, dot = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    sides = [SIDES[size_class]] * count + ([COMPANION_SIDE] if companion else [])
    centres = place(rng, sides)
    main = tuple(
        Thing(shape, colour, centres[i], sides[i], orientation, filled, dot and i == 0) for i in range(count)
    )
    other = None
    if companion:
        other_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        other_colour = str(rng.choice([c for c in COLOURS if c != colour]))
        turn = str(rng.choice(ORIENTATIONS)) if other_shape in ORIENTED_SHAPES else None
        other = Thing(other_shape, other_colour, centres[-1], COMPANION_SIDE, turn)
    return LabScene(str(rng.choice(list(BACKGROUNDS))), main, other, size_class)


def place(rng: np.random.Generator, sides: list[int], restarts: int = 50) -> list[tuple[float, float]]:
    """Centres for boxes of these sides, inside the picture and at least 2 px apart (each box
    drawn up to 50 times before the whole layout starts again)."""
    for _ in range(restarts):
        centres: list[tuple[float, float]] = []
        for side in sides:
            low, high = side / 2 + 1, SIZE - side / 2 - 1
            for _ in range(50):
                centre = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
                if all(_apart(centre, side, c, s) for c, s in zip(centres, sides)):
                    centres.append(centre)
                    break
            else:
                break
        if len(centres) == len(sides):
            return centres
    raise ValueError(f"cannot place objects of sides {sides} on a {SIZE} px picture")


def _apart(
    a: tuple[float, float], side_a: int, b: tuple[float, float], side_b: int, gap: float = 2.0
) -> bool:
    reach = (side_a + side_b) / 2 + gap
    return abs(a[0] - b[0]) >= reach or abs(a[1] - b[1]) >= reach


def fits(scene: LabScene) -> bool:
    """Every object inside the picture and no two touching."""
    things = scene.things
    inside = all(t.box[0] >= 0 and t.box[1] >= 0 and t.box[2] < SIZE and t.box[3] < SIZE for t in things)
    return inside and all(
        _apart(a.centre, a.side, b.centre, b.side) for i, a in enumerate(things) for b in things[i + 1 :]
    )


# ---------------------------------------------------------------------------------------------
# Captions: the kinds only


def caption(scene: LabScene, rng: np.random.Generator) -> str:
    kinds = [f"a {t.colour} {t.shape}" for t in (scene.main[0], scene.companion) if t is not None]
    if len(kinds) == 2 and rng.random() < 0.5:
        kinds.reverse()  # the order says nothing about where things are
    opening = ("", "a picture of ", "a photo of ")[int(rng.integers(3))]
    return opening + " and ".join(kinds)


CAPTION_WORDS = ("a", "and", "picture", "of", "photo", *COLOURS, *SHAPES)


# ---------------------------------------------------------------------------------------------
# Pairs that differ in one attribute


def attribute_pair(rng: np.random.Generator, attribute: str) -> tuple[LabScene, LabScene]:
    """Two scenes identical but for `attribute` (retrying the draw until the change fits)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {ATTRIBUTES}")
    for _ in range(100):
        pair = _try_pair(rng, attribute)
        if pair is not None and fits(pair[1]) and pair[0] != pair[1]:
            return pair
    raise RuntimeError(f"no {attribute} pair fitted in 100 draws")


def _try_pair(rng: np.random.Generator, attribute: str) -> tuple[LabScene, LabScene] | None:
    if attribute == "colour":
        base = random_scene(rng)
        taken = {base.main[0].colour} | ({base.companion.colour} if base.companion else set())
        colour = str(rng.choice([c for c in COLOURS if c not in taken]))
        return base, _main(base, colour=colour)
    if attribute == "shape":
        oriented = bool(rng.random() < 0.4)
        group = ORIENTED_SHAPES if oriented else tuple(s for s in SHAPES if s not in ORIENTED_SHAPES)
        base = random_scene(rng, shape=str(rng.choice(group)), companion=False)
        return base, _main(base, shape=str(rng.choice([s for s in group if s != base.main[0].shape])))
    if attribute == "count":
        larger = random_scene(rng, count=int(rng.integers(2, MAX_MAIN + 1)))
        return larger, replace(larger, main=larger.main[:-1])  # the last copy never has the dot
    if attribute == "position":
        base = random_scene(rng, count=1, companion=False)
        thing = base.main[0]
        if abs(thing.centre[0] - SIZE / 2) < thing.side:
            return None  # too near the middle for left/right to be clear
        mirrored = replace(thing, centre=(SIZE - thing.centre[0], thing.centre[1]))
        return base, replace(base, main=(mirrored,))
    if attribute == "relation":
        base = random_scene(rng, count=1, companion=True)
        a, b = base.main[0], base.companion
        if abs(a.centre[0] - b.centre[0]) < 4:
            return None
        # Swap the two objects' horizontal places: which is left of which flips, rows stay.
        return base, replace(base, main=(replace(a, centre=(b.centre[0], a.centre[1])),),
                             companion=replace(b, centre=(a.centre[0], b.centre[1])))  # fmt: skip
    if attribute == "size":
        base = random_scene(rng, count=1)
        size_class = "big" if base.size_class == "small" else "small"
        return base, replace(
            base, main=(replace(base.main[0], side=SIDES[size_class]),), size_class=size_class
        )
    if attribute == "orientation":
        base = random_scene(rng, shape=str(rng.choice(ORIENTED_SHAPES)))
        turn = str(rng.choice([o for o in ORIENTATIONS if o != base.main[0].orientation]))
        return base, _main(base, orientation=turn)
    if attribute == "fill":
        base = random_scene(rng)
        return base, _main(base, filled=not base.main[0].filled)
    base = random_scene(rng)  # detail
    return base, replace(base, main=(replace(base.main[0], dot=not base.main[0].dot),) + base.main[1:])


def _main(scene: LabScene, **changes) -> LabScene:
    """The scene with every copy of the main kind changed alike."""
    return replace(scene, main=tuple(replace(t, **changes) for t in scene.main))


__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "CAPTIONED", "CAPTION_WORDS", "COLOURS", "COMPANION_SIDE", "DOT_COLOURS",
    "DOT_SIDE", "LabScene", "MAX_MAIN", "OPPOSITE", "OUTLINE_WIDTH", "SIDES", "SIZE", "Thing",
    "attribute_pair", "caption", "fits", "labels", "place", "random_scene", "scene_rng",
]  # fmt: skip
