"""Procedural pictures of coloured shapes, and LLaVA-format data about them.

Every picture is a `Scene`: one to four objects of one shape and one colour, placed without
touching, on a plain, noisy or two-colour gradient background, in one of several sizes and aspect
ratios. Triangles and arrows point up, down, left or right; a single object sits on the left, the
right, at the top, at the bottom or in the centre. Because the text is written from the scene that
drew the picture, every caption and answer is correct by construction.

`write_dataset(root, seed)` writes:

    images/pretrain/<n>.jpg|png       stage-1 pictures (about one in twelve a PNG)
    images/instruct/<n>.jpg|png       stage-2 pictures
    stage1_pretrain.json              LLaVA-Pretrain (558K) format: an instruction with <image>, a caption
    stage2_instruct.json              LLaVA-1.5 mix (665K) format: multi-turn Q&A, plus text-only records
    mmvp/Questions.csv                MMVP format: pairs (2k-1, 2k) of pictures that differ in one
    mmvp/MMVP Images/<Index>.jpg      attribute, same question and options, opposite answers
    mmvp_patterns.csv                 Index,Pattern: the MMVP visual pattern each question tests
    scenes.jsonl                      every picture's scene (training pictures and MMVP pictures)

Everything is a function of the seed: picture n of a split is drawn from its own generator seeded
by (seed, split, n), so the files are identical on every run and adding samples keeps the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import write_text_atomic
from ..benchmarks.mmvp import IMAGE_DIR, QUESTIONS_CSV
from ..benchmarks.prompts import LETTER_ANSWER, SHORT_ANSWER, lettered_options
from ..constants import IMAGE_TOKEN

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
POSITIONS = ("left", "right", "top", "bottom", "centre")
MAX_COUNT = 4
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Picture sizes: (width, height) ratios on a short side of 80-128 px. Wide and tall pictures make
# the difference between padding to a square and centre-cropping visible.
ASPECT_RATIOS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1), (1, 2))
SHORT_SIDE = (80, 128)
PNG_EVERY = 12  # one picture in twelve is saved as PNG, the rest as JPEG
JPEG_QUALITY = 92

_SPLITS = {"pretrain": 1, "instruct": 2, "text": 3, "mmvp": 4}


# ---------------------------------------------------------------------------------------------
# Scenes


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

    def render(self) -> Image.Image:
        image = Image.fromarray(_background_pixels(self))
        draw = ImageDraw.Draw(image)
        for box in self.boxes:
            draw_shape(draw, self.shape, box, SHAPE_COLOURS[self.colour], self.orientation)
        return image

    def to_json(self) -> dict:
        return {**asdict(self), "count": self.count}


def _background_pixels(scene: Scene) -> np.ndarray:
    width, height = scene.size
    first = np.array(BACKGROUND_COLOURS[scene.background[0]], dtype=np.float32)
    pixels = np.broadcast_to(first, (height, width, 3)).copy()
    if scene.background_style == "gradient":
        second = np.array(BACKGROUND_COLOURS[scene.background[1]], dtype=np.float32)
        vertical = scene.noise_seed % 2 == 0
        ramp = np.linspace(0.0, 1.0, height if vertical else width, dtype=np.float32)
        ramp = ramp[:, None, None] if vertical else ramp[None, :, None]
        pixels = first + (second - first) * ramp * np.ones((height, width, 1), dtype=np.float32)
    elif scene.background_style == "noise":
        noise = np.random.default_rng(scene.noise_seed).integers(
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
    paint = {"fill": colour} if line <= 0 else {"outline": colour, "width": line}
    if shape == "circle":
        draw.ellipse(box, **paint)
    elif shape == "square":
        draw.rectangle(box, **paint)
    else:
        outline = {"triangle": _TRIANGLE, "arrow": _ARROW, "diamond": _DIAMOND}[shape]
        turned = [_orient(u, v, orientation or "right") for u, v in outline]
        draw.polygon([(left + x * (right - left), top + y * (bottom - top)) for x, y in turned], **paint)


# ---------------------------------------------------------------------------------------------
# Drawing a random scene


def random_scene(rng: np.random.Generator, count: int | None = None, position: str | None = None) -> Scene:
    """A random scene; `count` and `position` may be fixed (position only for a single object)."""
    width, height = _random_size(rng)
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
# Words


def noun(scene: Scene, plural: bool | None = None) -> str:
    plural = scene.count > 1 if plural is None else plural
    return scene.shape + ("s" if plural else "")


def noun_phrase(scene: Scene) -> str:
    """ "a red circle", "three blue arrows pointing left" """
    amount = "a" if scene.count == 1 else NUMBER_WORDS[scene.count]
    phrase = f"{amount} {scene.colour} {noun(scene)}"
    if scene.orientation:
        phrase += f" pointing {scene.orientation}"
    return phrase


def where_phrase(position: str) -> str:
    return {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
            "centre": "in the centre"}[position]  # fmt: skip


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A one-line description in the style of LLaVA-Pretrain's BLIP captions."""
    background = f"a {scene.background_name} background"
    if scene.position is not None:
        body = f"{noun_phrase(scene)} {where_phrase(scene.position)} of {background}"
    else:
        body = f"{noun_phrase(scene)} on {background}"
    opening = ("", "a picture of ", "a drawing of ", "the image shows ")[int(rng.integers(4))]
    return opening + body


PRETRAIN_INSTRUCTIONS = (
    "Describe the image briefly.",
    "Give a short caption of the picture.",
    "Sum up the picture in a few words.",
    "What does the picture show?",
    "Summarize the visual content of the image.",
    "Write a terse description of the image.",
)


def pretrain_record(record_id: str, image: str, scene: Scene, rng: np.random.Generator) -> dict:
    instruction = PRETRAIN_INSTRUCTIONS[int(rng.integers(len(PRETRAIN_INSTRUCTIONS)))]
    # The 558K file puts <image> before the instruction in some records and after it in others.
    human = f"{IMAGE_TOKEN}\n{instruction}" if rng.random() < 0.5 else f"{instruction}\n{IMAGE_TOKEN}"
    return _record(record_id, [(human, caption(scene, rng))], image)


def colour_question(scene: Scene) -> str:
    if scene.count == 1:
        return f"What is the colour of the {scene.shape}?"
    return f"What colour are the {noun(scene)}?"


def count_question(scene: Scene) -> str:
    return f"How many {noun(scene, plural=True)} are there?"


def orientation_question(scene: Scene) -> str:
    verb = "does" if scene.count == 1 else "do"
    return f"Which way {verb} the {noun(scene)} point?"


def position_question(scene: Scene) -> str:
    if scene.position in ("left", "right"):
        return f"Is the {scene.shape} on the left or the right?"
    return f"Is the {scene.shape} at the top or the bottom?"


OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left", "top": "bottom", "bottom": "top"}

# Questions about a scene: each returns (question, answer), or None when it does not apply.
QA = Callable[[Scene, np.random.Generator], "tuple[str, str] | None"]


def _ask_colour(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    answer = f"{scene.colour.capitalize()}." if scene.count == 1 else f"They are {scene.colour}."
    return colour_question(scene), answer


def _ask_count(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    return count_question(scene), f"{NUMBER_WORDS[scene.count].capitalize()}."


def _ask_shape(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    if scene.count == 1:
        return "What shape is in the image?", f"A {scene.shape}."
    return "What shape are the objects in the image?", f"They are {noun(scene)}."


def _ask_orientation(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    if scene.orientation is None:
        return None
    return orientation_question(scene), f"{scene.orientation.capitalize()}."


def _ask_position(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    if scene.position is None:
        return None
    return f"Where is the {scene.shape} in the image?", f"{where_phrase(scene.position).capitalize()}."


def _ask_background(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    return "What colour is the background?", f"{scene.background_name.capitalize()}."


def _ask_yes_no(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    colour, shape = scene.colour, scene.shape
    truthful = rng.random() < 0.5
    if not truthful:
        if rng.random() < 0.5:
            colour = str(rng.choice([c for c in SHAPE_COLOURS if c != scene.colour]))
        else:
            shape = str(rng.choice([s for s in SHAPES if s != scene.shape]))
    return f"Is there a {colour} {shape} in the image?", "Yes." if truthful else "No."


def _ask_short(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """VQA-style: the short-answer instruction and a bare lower-case answer."""
    question, answer = (
        (f"What colour is the {scene.shape}?", scene.colour),
        (f"How many {noun(scene, plural=True)} are in the picture?", str(scene.count)),
        ("What shape is shown?", scene.shape),
    )[int(rng.integers(3))]
    return f"{question}\n{SHORT_ANSWER}", answer


def _ask_choice(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """Multiple choice in LLaVA-1.5's letter format (the form the MMVP evaluation asks in)."""
    question, right, wrong = multiple_choice_about(scene, rng)
    options = [right, wrong] if rng.random() < 0.5 else [wrong, right]
    letter = "AB"[options.index(right)]
    return f"{question}\n{lettered_options(options)}\n{LETTER_ANSWER}", letter


def multiple_choice_about(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """(question, right option, wrong option) about one attribute of the scene."""
    kinds = ["colour", "count"]
    kinds += ["orientation"] if scene.orientation else []
    kinds += ["position"] if scene.position in OPPOSITE else []
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "colour":
        wrong = str(rng.choice([c for c in SHAPE_COLOURS if c != scene.colour]))
        return colour_question(scene), scene.colour.capitalize(), wrong.capitalize()
    if kind == "count":
        wrong = int(rng.choice([n for n in range(1, MAX_COUNT + 1) if n != scene.count]))
        return count_question(scene), NUMBER_WORDS[scene.count].capitalize(), NUMBER_WORDS[wrong].capitalize()
    if kind == "orientation":
        wrong = _other_orientation(rng, scene.orientation)
        return orientation_question(scene), scene.orientation.capitalize(), wrong.capitalize()
    return position_question(scene), scene.position.capitalize(), OPPOSITE[scene.position].capitalize()


QUESTIONS: tuple[QA, ...] = (
    _ask_colour, _ask_count, _ask_shape, _ask_orientation, _ask_position, _ask_background, _ask_yes_no,
    _ask_short, _ask_choice,
)  # fmt: skip


def instruct_record(record_id: str, image: str, scene: Scene, rng: np.random.Generator) -> dict:
    """Two to four rounds of questions about the picture, each kind at most once."""
    asked = [qa for qa in (ask(scene, rng) for ask in QUESTIONS) if qa is not None]
    rounds = int(rng.integers(2, 5))
    chosen = [asked[int(i)] for i in rng.choice(len(asked), size=min(rounds, len(asked)), replace=False)]
    first_question = chosen[0][0]
    # Most 665K records open with "<image>\n"; a few put the marker after the question.
    chosen[0] = (f"{IMAGE_TOKEN}\n{first_question}" if rng.random() < 0.9 else f"{first_question}\n{IMAGE_TOKEN}",
                 chosen[0][1])  # fmt: skip
    return _record(record_id, chosen, image)


_WORDS = ("circle", "square", "triangle", "arrow", "diamond", "red", "green", "blue", "yellow", "picture")


def text_question(rng: np.random.Generator) -> tuple[str, str]:
    """A question needing no picture: small arithmetic or a question about a word."""
    kind = int(rng.integers(5))
    a, b = (int(v) for v in rng.integers(1, 20, size=2))
    word = str(rng.choice(_WORDS))
    if kind == 0:
        return f"What is {a} plus {b}?", f"{a + b}."
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}?", f"{a - b}."
    if kind == 2:
        a, b = a % 10, b % 10
        return f"What is {a} times {b}?", f"{a * b}."
    if kind == 3:
        return f"How many letters are in the word '{word}'?", f"{len(word)}."
    return f"Spell the word '{word}' backwards.", word[::-1]


def text_record(record_id: str, rng: np.random.Generator) -> dict:
    return _record(record_id, [text_question(rng) for _ in range(int(rng.integers(1, 3)))])


def _record(record_id: str, rounds: list[tuple[str, str]], image: str | None = None) -> dict:
    """A record in LLaVA's schema; text-only records have no `image` key."""
    record: dict = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = [
        {"from": role, "value": text}
        for question, answer in rounds
        for role, text in (("human", question), ("gpt", answer))
    ]
    return record


# ---------------------------------------------------------------------------------------------
# MMVP-style pairs

PAIR_ATTRIBUTES = ("orientation", "count", "colour", "position")
# The MMVP visual patterns (the paper's names, as `mof-llava eval analyze` reads them) the pairs test.
PAIR_PATTERNS = {
    "orientation": "Orientation and Direction",
    "count": "Quantity and Count",
    "colour": "Color and Appearance",
    "position": "Positional and Relational Context",
}


@dataclass(frozen=True)
class MmvpPair:
    attribute: str
    question: str
    options: tuple[str, str]
    scenes: tuple[Scene, Scene]  # scenes[i] shows options[i]


def mmvp_pair(rng: np.random.Generator, attribute: str) -> MmvpPair:
    """Two scenes that differ in `attribute` only, with the question telling them apart."""
    if attribute == "orientation":
        base = _scene_with(rng, lambda s: s.orientation is not None)
        other = replace(base, orientation=_other_orientation(rng, base.orientation))
        options, question = (base.orientation, other.orientation), orientation_question(base)
    elif attribute == "count":
        # Two to four objects on both sides, so that neither picture gains a position.
        larger = random_scene(rng, count=int(rng.integers(3, MAX_COUNT + 1)))
        drop = int(rng.integers(larger.count))
        smaller = replace(larger, boxes=larger.boxes[:drop] + larger.boxes[drop + 1 :])
        base, other = (smaller, larger) if rng.random() < 0.5 else (larger, smaller)
        options, question = (NUMBER_WORDS[base.count], NUMBER_WORDS[other.count]), count_question(base)
    elif attribute == "colour":
        base = random_scene(rng)
        other = replace(base, colour=str(rng.choice([c for c in SHAPE_COLOURS if c != base.colour])))
        options, question = (base.colour, other.colour), colour_question(base)
    elif attribute == "position":
        side = str(rng.choice(("left", "top")))
        base = random_scene(rng, count=1, position=side)
        other = replace(base, position=OPPOSITE[side], boxes=(_mirror(base.boxes[0], base.size),))
        options, question = (base.position, other.position), position_question(base)
    else:
        raise ValueError(f"unknown pair attribute {attribute!r}; choose one of {PAIR_ATTRIBUTES}")
    return MmvpPair(attribute, question, (options[0].capitalize(), options[1].capitalize()), (base, other))


def _scene_with(rng: np.random.Generator, wanted: Callable[[Scene], bool]) -> Scene:
    while True:
        scene = random_scene(rng)
        if wanted(scene):
            return scene


def _other_orientation(rng: np.random.Generator, orientation: str) -> str:
    return str(rng.choice([o for o in ORIENTATIONS if o != orientation]))


def _mirror(box: Box, size: tuple[int, int]) -> Box:
    """The box reflected through the picture's centre (a left box goes right, a top box bottom;
    it stays in the middle fifth along the other axis)."""
    left, top, right, bottom = box
    width, height = size
    return (width - 1 - right, height - 1 - bottom, width - 1 - left, height - 1 - top)


# ---------------------------------------------------------------------------------------------
# Writing the files


@dataclass(frozen=True)
class DatasetSizes:
    pretrain: int = 512  # stage-1 records (one picture each)
    instruct: int = 512  # stage-2 records with a picture
    text_fraction: float = 0.08  # text-only records, as a fraction of all stage-2 records
    mmvp_pairs: int = 24

    @property
    def text_only(self) -> int:
        return int(round(self.instruct * self.text_fraction / (1 - self.text_fraction)))


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    image_folder: Path
    pretrain_file: Path
    instruct_file: Path
    mmvp_dir: Path
    mmvp_patterns: Path  # Index,Pattern: which visual pattern each MMVP question tests
    scenes_file: Path


def dataset_paths(root: str | Path) -> SyntheticDataset:
    root = Path(root)
    return SyntheticDataset(
        root=root,
        image_folder=root / "images",
        pretrain_file=root / "stage1_pretrain.json",
        instruct_file=root / "stage2_instruct.json",
        mmvp_dir=root / "mmvp",
        mmvp_patterns=root / "mmvp_patterns.csv",
        scenes_file=root / "scenes.jsonl",
    )


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLITS[split], index])


def _save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        image.save(path, format="PNG")
    else:
        # No chroma subsampling: it would blur colour edges by two pixels, a lot on small shapes.
        image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _training_pictures(seed: int, split: str, n: int) -> Iterator[tuple[str, Scene, np.random.Generator]]:
    for i in range(n):
        rng = _rng(seed, split, i)
        scene = random_scene(rng)
        suffix = ".png" if i % PNG_EVERY == PNG_EVERY - 1 else ".jpg"
        yield f"{split}/{i:06d}{suffix}", scene, rng


def write_dataset(root: str | Path, seed: int = 0, sizes: DatasetSizes = DatasetSizes()) -> SyntheticDataset:
    """Write the pictures, both training files, the MMVP-format benchmark and `scenes.jsonl`."""
    paths = dataset_paths(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    scenes: list[dict] = []

    pretrain = []
    for image, scene, rng in _training_pictures(seed, "pretrain", sizes.pretrain):
        _save_image(scene.render(), paths.image_folder / image)
        pretrain.append(pretrain_record(f"pretrain-{len(pretrain):06d}", image, scene, rng))
        scenes.append({"file": f"images/{image}", **scene.to_json()})

    instruct = []
    for image, scene, rng in _training_pictures(seed, "instruct", sizes.instruct):
        _save_image(scene.render(), paths.image_folder / image)
        instruct.append(instruct_record(f"instruct-{len(instruct):06d}", image, scene, rng))
        scenes.append({"file": f"images/{image}", **scene.to_json()})
    instruct = _spread(
        instruct, [text_record(f"text-{t:06d}", _rng(seed, "text", t)) for t in range(sizes.text_only)]
    )

    scenes += write_mmvp(paths.mmvp_dir, paths.mmvp_patterns, seed, sizes.mmvp_pairs)
    _write_json(paths.pretrain_file, pretrain)
    _write_json(paths.instruct_file, instruct)
    write_text_atomic(paths.scenes_file, "".join(json.dumps(s) + "\n" for s in scenes))
    return paths


def _spread(records: list[dict], extra: list[dict]) -> list[dict]:
    """`extra` spread evenly through `records` (text-only records sit among the others in the 665K mix)."""
    out = list(records)
    for t, record in reversed(list(enumerate(extra))):
        out.insert((t + 1) * len(records) // (len(extra) + 1), record)
    return out


def write_mmvp(folder: str | Path, patterns_file: str | Path, seed: int, pairs: int) -> list[dict]:
    """`Questions.csv` (header `Index,Question,Options,Correct Answer`) and `MMVP Images/<Index>.jpg`;
    pair k (images 2k-1, 2k) differs in one attribute, cycling orientation, count, colour, position.
    `patterns_file` maps each question to its MMVP visual pattern. Returns the scenes, for
    `scenes.jsonl`."""
    folder = Path(folder)
    rows, patterns, scenes = [], [], []
    for k in range(pairs):
        rng = _rng(seed, "mmvp", k)
        pair = mmvp_pair(rng, PAIR_ATTRIBUTES[k % len(PAIR_ATTRIBUTES)])
        options = f"(a) {pair.options[0]} (b) {pair.options[1]}"
        # Which picture comes first is random, so "always (a)" scores no pair.
        order = (0, 1) if rng.random() < 0.5 else (1, 0)
        for member, shown in enumerate(order):
            index = 2 * k + 1 + member
            _save_image(pair.scenes[shown].render(), folder / IMAGE_DIR / f"{index}.jpg")
            rows.append([index, pair.question, options, "(a)" if shown == 0 else "(b)"])
            patterns.append([index, PAIR_PATTERNS[pair.attribute]])
            scenes.append({"file": f"mmvp/{IMAGE_DIR}/{index}.jpg", "differs_in": pair.attribute,
                           **pair.scenes[shown].to_json()})  # fmt: skip
    _write_csv(folder / QUESTIONS_CSV, ["Index", "Question", "Options", "Correct Answer"], rows)
    _write_csv(Path(patterns_file), ["Index", "Pattern"], patterns)
    return scenes


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _write_json(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


