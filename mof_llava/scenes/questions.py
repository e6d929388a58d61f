"""Questions about lab scenes, answered from their metadata, and the LLaVA-format records built from them.

Every attribute of `world.ATTRIBUTES` has one question about the main kind (`ask`) whose answer is a
word read from the scene (`value`), and one statement of what a picture shows (`statement`, the toy
MMVP-VLM's text). Multiple-choice questions offer the true value and one other (`distractor`); the
toy MMVP offers the two values of a `world.attribute_pair`, so a training question and a benchmark
question look alike. The question names the main kind by what the attribute leaves unchanged (its
colour when asking the shape, its shape when asking the colour, both otherwise), so the two pictures
of a pair get the same question.

Stage 1 reads `world.caption` (the kinds only); stage 2 reads two to four rounds about one picture,
in LLaVA-1.5's letter format (the MMVP prompt's) or as a short answer.
"""

from __future__ import annotations

import numpy as np

from ..constants import IMAGE_TOKEN
from ..prompts import LETTER_ANSWER, SHORT_ANSWER, lettered_options
from . import lab as world
from .drawing import ORIENTATIONS, SHAPES

# Stage-1 instructions, worded like LLaVA-Pretrain's (the demo's canvas data uses them too).
PRETRAIN_INSTRUCTIONS = (
    "Describe the image briefly.",
    "Give a short caption of the picture.",
    "Sum up the picture in a few words.",
    "What does the picture show?",
    "Summarize the visual content of the image.",
    "Write a terse description of the image.",
)


NUMBERS = ("one", "two", "three")
_HALF = ("left", "right")


def value(scene: world.LabScene, attribute: str) -> str | None:
    """The answer word for `attribute`, or None where the question does not apply (no companion for
    a relation, a shape that points nowhere, several copies or a middle place for a position)."""
    first = scene.main[0]
    if attribute == "colour":
        return first.colour
    if attribute == "shape":
        return first.shape
    if attribute == "count":
        return NUMBERS[scene.count - 1]
    if attribute == "position":
        if (
            scene.count != 1
            or scene.companion is not None
            or abs(first.centre[0] - world.SIZE / 2) < first.side / 2
        ):
            return None
        return _HALF[world.labels(scene)["position"]]
    if attribute == "relation":
        if (
            scene.count != 1
            or scene.companion is None
            or abs(first.centre[0] - scene.companion.centre[0]) < 4
        ):
            return None
        return "left" if world.labels(scene)["relation"] else "right"
    if attribute == "size":
        return scene.size_class
    if attribute == "orientation":
        return first.orientation
    if attribute == "fill":
        return "solid" if first.filled else "outlined"
    if attribute == "detail":
        return "yes" if first.dot else "no"
    raise ValueError(f"unknown attribute {attribute!r}; choose one of {world.ATTRIBUTES}")


def answer_values(attribute: str) -> tuple[str, ...]:
    """Every answer `value` can give for `attribute` (a guesser's chance is one over their number)."""
    fixed = {"colour": world.COLOURS, "shape": SHAPES, "count": NUMBERS, "orientation": ORIENTATIONS,
             "position": _HALF, "relation": _HALF, "size": ("small", "big"), "fill": ("solid", "outlined"),
             "detail": ("yes", "no")}  # fmt: skip
    if attribute not in fixed:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {world.ATTRIBUTES}")
    return tuple(fixed[attribute])


# Per attribute, how the main kind is put into words: the question (`ask`) and the toy MMVP-VLM's
# statement of what a picture shows (`statement`, read by the scorer as "a photo of ..."). {kind}
# is the first main thing's colour and shape, {other} the companion's, {word} the `value`.
_WORDING = {
    "colour": ("What colour is the {shape}?", "a {kind}"),
    "shape": ("What shape is the {colour} object?", "a {kind}"),
    "count": ("How many {kind}s are there?", "a {kind} {word} of them"),
    "position": ("Is the {kind} on the left or the right?", "a {kind} on the {word}"),
    "relation": ("Is the {kind} to the left or to the right of the {other}?", "a {kind} {word} of a {other}"),
    "size": ("Is the {kind} small or big?", "a {word} {kind}"),
    "orientation": ("Which way does the {kind} point?", "a {kind} pointing {word}"),
    "fill": ("Is the {kind} solid or outlined?", "a {word} {kind}"),
    "detail": ("Does a {kind} have a dot in its corner?", "a {kind} {dot} a dot"),
}


def _wording(scene: world.LabScene, attribute: str, form: int, **fields: str | None) -> str:
    if attribute not in _WORDING:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {world.ATTRIBUTES}")
    template, first, other = _WORDING[attribute][form], scene.main[0], scene.companion
    if other is None and "{other}" in template:
        raise ValueError(f"{attribute}: the scene has no companion to name")
    names = {"colour": first.colour, "shape": first.shape, "kind": f"{first.colour} {first.shape}",
             "other": f"{other.colour} {other.shape}" if other is not None else ""}  # fmt: skip
    return template.format(**names, **fields)


def ask(scene: world.LabScene, attribute: str) -> str:
    return _wording(scene, attribute, 0)


def statement(scene: world.LabScene, attribute: str) -> str:
    """What `scene` shows of `attribute`, in words."""
    dot = "with" if scene.main[0].dot else "without"
    word = value(scene, attribute)
    if word is None:  # e.g. position on a scene with several copies: no statement to make
        raise ValueError(f"{attribute}: does not apply to this scene, so it has no statement")
    return _wording(scene, attribute, 1, word=word, dot=dot)


def distractor(scene: world.LabScene, attribute: str, rng: np.random.Generator) -> str:
    """A wrong answer of the kind the attribute's pair would show (a colour not in the picture, a
    count one off, another direction...)."""
    right = value(scene, attribute)
    if attribute == "colour":
        taken = {t.colour for t in scene.things}
        return str(rng.choice([c for c in world.COLOURS if c not in taken]))
    if attribute == "shape":
        return str(rng.choice([s for s in SHAPES if s != right]))
    if attribute == "count":
        near = [n for n in (scene.count - 1, scene.count + 1) if 1 <= n <= world.MAX_MAIN]
        return NUMBERS[int(rng.choice(near)) - 1]
    if attribute == "orientation":
        return str(rng.choice([o for o in ORIENTATIONS if o != right]))
    return next(v for v in answer_values(attribute) if v != right)  # the other of two


def choice_prompt(question: str, options: tuple[str, str]) -> str:
    """LLaVA-1.5's multiple-choice prompt, as the MMVP evaluation's `llava` prompt asks."""
    return f"{question}\n{lettered_options([o.capitalize() for o in options])}\n{LETTER_ANSWER}"


def pretrain_record(record_id: str, image: str, scene: world.LabScene, rng: np.random.Generator) -> dict:
    instruction = PRETRAIN_INSTRUCTIONS[int(rng.integers(len(PRETRAIN_INSTRUCTIONS)))]
    return _record(record_id, image, [(f"{IMAGE_TOKEN}\n{instruction}", world.caption(scene, rng))])


def instruct_record(
    record_id: str,
    image: str,
    scene: world.LabScene,
    rng: np.random.Generator,
    first: str | None = None,
    letter_share: float = 0.75,
    captioned_share: float = 0.0,
) -> dict:
    """Two to four rounds about the picture, each attribute at most once, `first` among the first two.
    The questions name the main kind's colour and shape, so a record asks at most one of the two,
    before any other: the text never tells what a later question asks. Any attribute may open a
    record, as every held-out and benchmark question is asked as a first round. A round is in the letter
    format with probability `letter_share`, else a short answer (the questions are drawn first, so
    two shares ask the same questions about the same pictures). With probability `captioned_share`
    the record is its captioned round alone (colour or shape): data weighted towards what the
    towers are taught to see; at 0 nothing extra is drawn, so the records are as before."""
    asked = [str(a) for a in rng.permutation([a for a in world.ATTRIBUTES if value(scene, a) is not None])]
    order = list(dict.fromkeys(([first] if first else []) + asked))
    captioned = [a for a in order if a in world.CAPTIONED][:1]
    count = int(rng.integers(2, 5))
    if captioned_share and rng.random() < captioned_share:
        chosen = captioned
    else:
        # Any attribute may open a record (the held-out questions are all first rounds); a captioned
        # one, when drawn, is moved first, since the others' wording names it.
        chosen = [a for a in order if a not in world.CAPTIONED or a in captioned][:count]
        chosen.sort(key=lambda a: a not in world.CAPTIONED)
    rounds = []
    for attribute in chosen:
        right = value(scene, attribute)
        if rng.random() < letter_share:
            options = [right, distractor(scene, attribute, rng)]
            rng.shuffle(options)
            rounds.append((choice_prompt(ask(scene, attribute), tuple(options)), "AB"[options.index(right)]))
        else:
            rounds.append((f"{ask(scene, attribute)}\n{SHORT_ANSWER}", right))
    rounds[0] = (f"{IMAGE_TOKEN}\n{rounds[0][0]}", rounds[0][1])
    return _record(record_id, image, rounds)


def _record(record_id: str, image: str, rounds: list[tuple[str, str]]) -> dict:
    turns = [{"from": r, "value": t} for q, a in rounds for r, t in (("human", q), ("gpt", a))]
    return {"id": record_id, "image": image, "conversations": turns}
