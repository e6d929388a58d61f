"""LLaVA-format data and an MMVP-format benchmark about procedural pictures (`mof_llava.scenes`).

Two worlds, both drawn by the one scene generator:

- `LAB` (what `mof-llava demo` uses): the toy lab's 48 px scenes (`scenes.lab`), the pictures the
  committed toy towers were trained on, with the text of `mof_llava.scenes.questions` (captions name
  the kinds; questions and answers about every attribute, written from each scene's metadata) and
  MMVP pairs that differ in one of the nine attributes.
- `CANVAS` (the default of `write_dataset`): scenes of varied sizes and aspect ratios
  (`scenes.canvas`) with the captions and questions below, for exercising the data pipeline.

Because the text is written from the scene that drew the picture, every caption and answer is
correct by construction. `write_dataset(root, seed, sizes, world)` writes:

    images/pretrain/<n>.jpg|png       stage-1 pictures (about one in twelve a PNG)
    images/instruct/<n>.jpg|png       stage-2 pictures
    stage1_pretrain.json              LLaVA-Pretrain (558K) format: an instruction with <image>, a caption
    stage2_instruct.json              LLaVA-1.5 mix (665K) format: multi-turn Q&A, plus text-only records
    mmvp/Questions.csv                MMVP format: pairs (2k-1, 2k) of pictures that differ in one
    mmvp/MMVP Images/<Index>.jpg      attribute, same question and options, opposite answers
    mmvp_patterns.csv                 Index,Pattern: the visual pattern each question tests
    scenes.jsonl                      every picture's scene (training pictures and MMVP pictures)

Everything is a function of the seed: picture n of a split is drawn from its own generator seeded
by (seed, split, n), so the files are identical on every run and adding samples keeps the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_text_atomic
from ..benchmarks.mmvp import IMAGE_DIR, QUESTIONS_CSV
from ..constants import IMAGE_TOKEN
from ..prompts import LETTER_ANSWER, SHORT_ANSWER, lettered_options
from ..scenes import lab as lab_world
from ..scenes.canvas import (  # noqa: F401  (re-exported: the demo's public names before scenes/)
    ASPECT_RATIOS,
    MAX_COUNT,
    PAIR_ATTRIBUTES,
    POSITIONS,
    SHORT_SIDE,
    Scene,
    attribute_pair,
    other_orientation,
    random_scene,
)
from ..scenes.drawing import (  # noqa: F401
    BACKGROUND_COLOURS,
    BACKGROUND_STYLES,
    NOISE_AMPLITUDE,
    OPPOSITE,
    ORIENTATIONS,
    ORIENTED_SHAPES,
    RGB,
    SHAPE_COLOURS,
    SHAPES,
    Box,
    draw_shape,
    seeded_rng,
)
from ..scenes.questions import PRETRAIN_INSTRUCTIONS

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PNG_EVERY = 12  # one picture in twelve is saved as PNG, the rest as JPEG
JPEG_QUALITY = 92

_SPLITS = {"pretrain": 1, "instruct": 2, "text": 3, "mmvp": 4}


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
        wrong = other_orientation(rng, scene.orientation)
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
    scenes: tuple  # scenes[i] shows options[i]
    pattern: str = ""  # what mmvp_patterns.csv calls the pair's visual pattern; "" = PAIR_PATTERNS'


def mmvp_pair(rng: np.random.Generator, attribute: str) -> MmvpPair:
    """Two canvas scenes that differ in `attribute` only, with the question telling them apart."""
    base, other = attribute_pair(rng, attribute)
    if attribute == "orientation":
        options, question = (base.orientation, other.orientation), orientation_question(base)
    elif attribute == "count":
        options, question = (NUMBER_WORDS[base.count], NUMBER_WORDS[other.count]), count_question(base)
    elif attribute == "colour":
        options, question = (base.colour, other.colour), colour_question(base)
    else:
        options, question = (base.position, other.position), position_question(base)
    options = (options[0].capitalize(), options[1].capitalize())
    return MmvpPair(attribute, question, options, (base, other), PAIR_PATTERNS[attribute])


def lab_mmvp_pair(rng: np.random.Generator, attribute: str) -> MmvpPair:
    """Two lab scenes that differ in `attribute` only (`scenes.lab.attribute_pair`), asked as the
    lab's questions ask it; the pattern is the attribute's name."""
    from ..scenes import questions

    pair = lab_world.attribute_pair(rng, attribute)
    options = tuple(questions.value(scene, attribute).capitalize() for scene in pair)
    return MmvpPair(attribute, questions.ask(pair[0], attribute), options, pair, attribute)


# ---------------------------------------------------------------------------------------------
# The two worlds


@dataclass(frozen=True)
class World:
    """What `write_dataset` draws and says: training picture n of a split, the two records about
    one, and MMVP pair k (cycling through `pair_attributes`)."""

    name: str
    scene_rng: Callable[[int, str, int], np.random.Generator]  # seed, split, index
    scene: Callable[[np.random.Generator], object]
    pretrain_record: Callable[[str, str, object, np.random.Generator], dict]
    instruct_record: Callable[[str, str, object, np.random.Generator], dict]
    pair: Callable[[np.random.Generator, str], MmvpPair]
    pair_attributes: tuple[str, ...]


def _lab_record(kind: str) -> Callable:
    def record(record_id: str, image: str, scene, rng: np.random.Generator) -> dict:
        from ..scenes import questions

        return getattr(questions, kind)(record_id, image, scene, rng)

    return record


CANVAS = World("canvas", lambda seed, split, n: seeded_rng(seed, _SPLITS[split], n), random_scene,
               pretrain_record, instruct_record, mmvp_pair, PAIR_ATTRIBUTES)  # fmt: skip
LAB = World("lab", lab_world.scene_rng, lab_world.random_scene, _lab_record("pretrain_record"),
            _lab_record("instruct_record"), lab_mmvp_pair, lab_world.ATTRIBUTES)  # fmt: skip
WORLDS = {w.name: w for w in (CANVAS, LAB)}


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
    return CANVAS.scene_rng(seed, split, index)


def _save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        image.save(path, format="PNG")
    else:
        # No chroma subsampling: it would blur colour edges by two pixels, a lot on small shapes.
        image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _training_pictures(
    seed: int, split: str, n: int, world: World = CANVAS
) -> Iterator[tuple[str, object, np.random.Generator]]:
    for i in range(n):
        rng = world.scene_rng(seed, split, i)
        scene = world.scene(rng)
        suffix = ".png" if i % PNG_EVERY == PNG_EVERY - 1 else ".jpg"
        yield f"{split}/{i:06d}{suffix}", scene, rng


def write_dataset(
    root: str | Path, seed: int = 0, sizes: DatasetSizes = DatasetSizes(), world: World = CANVAS
) -> SyntheticDataset:
    """Write the pictures, both training files, the MMVP-format benchmark and `scenes.jsonl`."""
    paths = dataset_paths(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    scenes: list[dict] = []
    records: dict[str, list[dict]] = {"pretrain": [], "instruct": []}
    for split, n in (("pretrain", sizes.pretrain), ("instruct", sizes.instruct)):
        make = world.pretrain_record if split == "pretrain" else world.instruct_record
        for image, scene, rng in _training_pictures(seed, split, n, world):
            _save_image(scene.render(), paths.image_folder / image)
            records[split].append(make(f"{split}-{len(records[split]):06d}", image, scene, rng))
            scenes.append({"file": f"images/{image}", **scene.to_json()})
    instruct = _spread(
        records["instruct"],
        [text_record(f"text-{t:06d}", _rng(seed, "text", t)) for t in range(sizes.text_only)],
    )
    scenes += write_mmvp(paths.mmvp_dir, paths.mmvp_patterns, seed, sizes.mmvp_pairs, world)
    _write_json(paths.pretrain_file, records["pretrain"])
    _write_json(paths.instruct_file, instruct)
    write_text_atomic(paths.scenes_file, "".join(json.dumps(s) + "\n" for s in scenes))
    return paths


def _spread(records: list[dict], extra: list[dict]) -> list[dict]:
    """`extra` spread evenly through `records` (text-only records sit among the others in the 665K mix)."""
    out = list(records)
    for t, record in reversed(list(enumerate(extra))):
        out.insert((t + 1) * len(records) // (len(extra) + 1), record)
    return out


def write_mmvp(
    folder: str | Path, patterns_file: str | Path, seed: int, pairs: int, world: World = CANVAS
) -> list[dict]:
    """`Questions.csv` (header `Index,Question,Options,Correct Answer`) and `MMVP Images/<Index>.jpg`;
    pair k (images 2k-1, 2k) differs in one attribute, cycling through the world's pair attributes
    (canvas: orientation, count, colour, position). `patterns_file` maps each question to its
    visual pattern. Returns the scenes, for `scenes.jsonl`."""
    folder = Path(folder)
    rows, patterns, scenes = [], [], []
    for k in range(pairs):
        rng = world.scene_rng(seed, "mmvp", k)
        pair = world.pair(rng, world.pair_attributes[k % len(world.pair_attributes)])
        options = f"(a) {pair.options[0]} (b) {pair.options[1]}"
        # Which picture comes first is random, so "always (a)" scores no pair.
        order = (0, 1) if rng.random() < 0.5 else (1, 0)
        for member, shown in enumerate(order):
            index = 2 * k + 1 + member
            _save_image(pair.scenes[shown].render(), folder / IMAGE_DIR / f"{index}.jpg")
            rows.append([index, pair.question, options, "(a)" if shown == 0 else "(b)"])
            patterns.append([index, pair.pattern])
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
