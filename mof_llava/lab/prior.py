"""Measuring the lab's text prior (`LabConfig.colour_prior`: training circles mostly red) on uniform
pictures: does the model answer "red" for circles that are not red?

`write_prior_probe` writes a GQA folder (`mllm_data.write_heldout`'s layout, its own seed stream) of
colour pairs, half whose main kind is the prior's shape and half of other shapes, plus
`main_shapes.json` (question id -> the asked object's shape). `prior_rates` reads the GQA runner's
answers against it:

    prior_following   % of questions about a non-red circle answered "red"
    control_following % of questions about a non-red object of another shape answered "red": the
                      same mistake where the training text held no prior, to compare against
    circle_accuracy   % of circle colour questions answered right
    other_accuracy    % of the other shapes' colour questions answered right
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from . import world
from .mllm_data import PRIOR_COLOUR, PRIOR_SHAPE, stream_rng, write_heldout

SHAPES_FILE = "main_shapes.json"


class PriorProbeError(ValueError):
    """An answers file or probe folder the measure cannot read; one line naming it."""


def probe_pairs(seed: int, pairs: int) -> list[tuple[str, world.LabScene, world.LabScene, bool]]:
    """`pairs` colour pairs about the prior's shape, then `pairs` about the others, in
    `mllm_data.benchmark_pairs`' form; drawn one generator per try until both halves are full."""
    circles, others, k = [], [], 0
    while len(circles) < pairs or len(others) < pairs:
        a, b = world.attribute_pair(stream_rng(seed, "probe", k), "colour")
        k += 1
        half = circles if a.main[0].shape == PRIOR_SHAPE else others
        if len(half) < pairs:
            half.append(("colour", a, b, True))
    return circles + others


def write_prior_probe(folder: Path, seed: int, pairs: int) -> None:
    chosen = probe_pairs(seed, pairs)
    write_heldout(folder, chosen)
    shapes = {f"{k:04d}{side}": a.main[0].shape for k, (_, a, _, _) in enumerate(chosen) for side in "ab"}
    write_text_atomic(folder / SHAPES_FILE, json.dumps(shapes, indent=1) + "\n")


def prior_rates(answers: Path, probe: Path) -> dict[str, float]:
    """The four rates (%) of the module docstring, and how many questions each counts (`n_...`)."""
    from ..benchmarks.answers import answer_key, answer_text, load_answer_index
    from ..benchmarks.gqa import OFFICIAL_QUESTIONS, llava_normalize, read_official_questions

    given = load_answer_index(answers)
    shapes = json.loads((probe / SHAPES_FILE).read_text())
    tally = {"prior_following": [], "control_following": [], "circle_accuracy": [], "other_accuracy": []}
    for qid, question in read_official_questions(probe / OFFICIAL_QUESTIONS).items():
        if question["types"]["semantic"] != "colour":
            continue
        if answer_key(qid) not in given:
            raise PriorProbeError(f"{answers}: no answer to question {qid}")
        if qid not in shapes:
            raise PriorProbeError(f"{probe / SHAPES_FILE}: no shape for question {qid}")
        said = llava_normalize(answer_text(given[answer_key(qid)], answers))
        circle = shapes[qid] == PRIOR_SHAPE
        tally["circle_accuracy" if circle else "other_accuracy"].append(said == question["answer"])
        if question["answer"] != PRIOR_COLOUR:
            tally["prior_following" if circle else "control_following"].append(said == PRIOR_COLOUR)
    out: dict[str, float] = {}
    for name, hits in tally.items():
        out[name] = 100.0 * sum(hits) / len(hits) if hits else float("nan")
        out[f"n_{name}"] = len(hits)
    return out
