"""The lab's floor and its mutation checks, on fixed seeds, through the real chain (`run_lab`: data,
language pre-training, stage 1 and stage 2 through `train`, the MMVP runner).

Floor: the trained MLLM reads what the toy towers see (colour: assets/toy-lab/measures.json has
the CLIP probes at 80-90 % on colour and near chance on shape) far above chance on held-out scenes.
Mutations, each a monkeypatch of the real code for one training and evaluation: labels shifted by
one token, the interleaved tokens in a scrambled order, the towers' features read from the wrong
layer. Each must lower the score it should clearly (by DROP points or more); they run only when
the unmutated model is above the floor (below it there is nothing a bug could lower).

A reduced run (REDUCED); its numbers and time are in docs/toy-lab.md.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data import samples
from mof_llava.lab import mllm
from mof_llava.model import mixer, towers

pytestmark = pytest.mark.slow

REDUCED = dict(seed=0, samples=450, epochs=2.0, language_steps=150, mmvp_pairs=18, heldout_pairs=90,
               progress=False)  # fmt: skip
FLOOR = 90.0  # % question accuracy on a captioned attribute the towers see (issue 16); chance is 50
DROP = 20.0  # points a mutation must cost


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Data and the language-pre-trained LLM, once; each run copies them."""
    base = tmp_path_factory.mktemp("lab") / "base"
    mllm.run_lab(mllm.LabConfig(out=str(base), variants=(), **REDUCED), say=lambda _: None)
    return base


def _run(prepared, name: str, variant: str) -> mllm.VariantScores:
    out = prepared.parent / name
    if not out.exists():
        shutil.copytree(prepared, out)
    (run,) = mllm.run_lab(
        mllm.LabConfig(out=str(out), variants=(variant,), **REDUCED), say=lambda _: None
    ).runs
    return run


@pytest.fixture(scope="module")
def clip_only(prepared):
    return _run(prepared, "clip-only", "llava-1.5")


@pytest.fixture(scope="module")
def interleaved(prepared):
    return _run(prepared, "i-mof", "i-mof")


# Measured (docs/toy-lab.md, "The MLLM runs"): at this size both models answer at chance on every
# attribute (colour 53 % and 50 %). Strict: the day the reduced run learns, these fail and say so.
NOT_YET = pytest.mark.xfail(strict=True, reason="the reduced lab run does not learn yet (docs/toy-lab.md)")


@NOT_YET
def test_floor_clip_only_reads_colour(clip_only):
    assert clip_only.heldout["colour"] >= FLOOR, clip_only.heldout


@NOT_YET
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
    encode = samples._encode

    def shifted(*args, **kwargs):
        ids, labels, offsets = encode(*args, **kwargs)
        moved = np.full_like(labels, IGNORE_INDEX)
        moved[1:] = labels[:-1]  # each answer token one place late
        return ids, moved, offsets

    monkeypatch.setattr(samples, "_encode", shifted)
    mutated = _run(prepared, "labels-shifted", "llava-1.5")
    assert mutated.heldout["colour"] <= clip_only.heldout["colour"] - DROP, (
        mutated.heldout,
        clip_only.heldout,
    )


def test_scrambled_interleave_order_is_caught(prepared, interleaved, monkeypatch):
    _needs_learned(interleaved)
    forward = mixer.FeatureMixer.forward
    generator = torch.Generator().manual_seed(0)

    def scrambled(self, features):
        tokens = forward(self, features)
        order = torch.randperm(tokens.shape[1], generator=generator)  # a new order every call
        return tokens[:, order]

    monkeypatch.setattr(mixer.FeatureMixer, "forward", scrambled)
    mutated = _run(prepared, "scrambled", "i-mof")
    spatial = ("position", "relation")
    assert _mean(mutated.heldout, spatial) <= _mean(interleaved.heldout, spatial) - DROP, (
        mutated.heldout,
        interleaved.heldout,
    )


def test_wrong_feature_layer_is_caught(prepared, clip_only, monkeypatch):
    _needs_learned(clip_only)
    forward = towers.VisionTower.forward

    def first_layer(self, pixel_values):
        right = self.spec
        self.spec = replace(right, feature_layer=0)  # the embeddings instead of layer -2 / -1
        try:
            return forward(self, pixel_values)
        finally:
            self.spec = right

    monkeypatch.setattr(towers.VisionTower, "forward", first_layer)
    mutated = _run(prepared, "wrong-layer", "llava-1.5")
    every = tuple(clip_only.heldout)
    assert _mean(mutated.heldout, every) <= _mean(clip_only.heldout, every) - DROP, (
        mutated.heldout,
        clip_only.heldout,
    )


def _mean(scores: dict[str, float], attributes) -> float:
    return sum(scores[a] for a in attributes) / len(attributes)
