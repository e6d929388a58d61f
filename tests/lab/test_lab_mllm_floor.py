"""The lab's floor and its mutation checks, on fixed seeds, through the real chain (`run_lab`: data,
language pre-training, stage 1 and stage 2 through `train`, the MMVP runner and the GQA runner).

Floor: the trained MLLM answers the held-out short-answer questions about what the toy CLIP sees
(colour: assets/toy-lab/measures.json has its probes at 80-90 % on colour) far above chance.
Mutations, each a monkeypatch of the real code for one training and evaluation: labels shifted by
one token, the interleaved tokens in a new random order every forward pass, the towers' features
read from the wrong layer. Each must lower the score it should by DROP points or more; each runs
only where the unmutated model learned what the mutation should cost (colour above the floor; for
the interleave order, a spatial attribute): where nothing was learned, a bug has nothing to lower.

A reduced run (REDUCED: configuration E, one seed, LLaVA-1.5 and I-MoF only). Measured on these
seeds (docs/toy-lab.md, "Sixth round"): LLaVA-1.5 colour 90 %, I-MoF 80 %; labels shifted give 0 %
on every attribute; I-MoF reads no spatial attribute (position 52 %), so the scrambled-order check
skips; hidden state 0 keeps colour at 90 %, so the wrong-layer check is a strict xfail. The module
took 78 min with three other runs on the 2 cores (about 55 min alone). test_lab_learns.py runs the
floor at CI size.
"""

from __future__ import annotations

import os

import pytest
from lab_mutations import mean, prepare, read_layer_zero, run_variant, scramble_interleave, shift_labels

from mof_llava.lab import mllm

# The 90 % floor needs configuration E (1800 stage-2 steps, docs/toy-lab.md): the module's five runs
# are past the CI budget, so it runs on request; test_lab_learns.py asserts a floor at CI size.
FULL = os.environ.get("MOF_LLAVA_LAB_FLOOR") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(4 * 3600),
    pytest.mark.skipif(not FULL, reason="the lab floor runs take ~55 min; set MOF_LLAVA_LAB_FLOOR=1"),
]

REDUCED = dict(seed=0, samples=3600, epochs=8.0, letter_share=0.25, language_steps=300, llm_hidden_size=128,
               mmvp_pairs=36, heldout_pairs=180, progress=False)  # fmt: skip
FLOOR = 90.0  # % short-answer accuracy on colour, which the toy CLIP sees (issue 16); chance 17
DROP = 20.0  # points a mutation must cost


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("lab") / "base", REDUCED)


@pytest.fixture(scope="module")
def clip_only(prepared):
    return run_variant(prepared, REDUCED, "clip-only", "llava-1.5")


@pytest.fixture(scope="module")
def interleaved(prepared):
    return run_variant(prepared, REDUCED, "i-mof", "i-mof")


def test_floor_clip_only_reads_colour(clip_only):
    assert clip_only.heldout["colour"] >= FLOOR, clip_only.heldout


# Measured on these seeds (docs/toy-lab.md, "Sixth round"): strict, so the day they change, they say so.
@pytest.mark.xfail(
    strict=True, reason="measured: I-MoF answers 80 % of the colour questions at this size (LLaVA-1.5 90 %)"
)
def test_floor_i_mof_reads_colour(interleaved):
    assert interleaved.heldout["colour"] >= FLOOR, interleaved.heldout


def _needs_learned(baseline: mllm.VariantScores) -> None:
    """A mutation can only be caught by a run that learned: below the floor there is nothing to lose."""
    if baseline.heldout["colour"] < FLOOR:
        pytest.skip(
            f"the unmutated {baseline.row} is below the floor (colour {baseline.heldout['colour']:.0f} %)"
        )


def test_labels_shifted_by_one_are_caught(prepared, clip_only, monkeypatch):
    _needs_learned(clip_only)
    shift_labels(monkeypatch)
    mutated = run_variant(prepared, REDUCED, "labels-shifted", "llava-1.5")
    assert mutated.heldout["colour"] <= clip_only.heldout["colour"] - DROP, (
        mutated.heldout,
        clip_only.heldout,
    )


def test_scrambled_interleave_order_is_caught(prepared, interleaved, monkeypatch):
    # Order carries only where things are: the check needs a model that reads a spatial attribute.
    spatial = ("position", "relation")
    if mean(interleaved.heldout, spatial) < 50 + DROP:
        pytest.skip(f"the unmutated i-mof reads no spatial attribute (position, relation: "
                    f"{mean(interleaved.heldout, spatial):.0f} %, chance 50): the order cannot cost anything")  # fmt: skip
    scramble_interleave(monkeypatch)
    mutated = run_variant(prepared, REDUCED, "scrambled", "i-mof")
    assert mean(mutated.heldout, spatial) <= mean(interleaved.heldout, spatial) - DROP, (
        mutated.heldout,
        interleaved.heldout,
    )


@pytest.mark.xfail(
    strict=True,
    reason="measured: read at hidden state 0 (the patch embeddings) colour stays at 90 % (90 unmutated) "
    "and position rises to 98 % (68): an 8 px patch's embedding holds its colour and, with its position "
    "embedding, where it is",
)
def test_wrong_feature_layer_is_caught(prepared, clip_only, monkeypatch):
    _needs_learned(clip_only)
    read_layer_zero(monkeypatch)
    mutated = run_variant(prepared, REDUCED, "wrong-layer", "llava-1.5")
    assert mutated.heldout["colour"] <= clip_only.heldout["colour"] - DROP, (
        mutated.heldout,
        clip_only.heldout,
    )
