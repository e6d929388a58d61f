"""The lab's floor at CI size: through the real chain (`run_lab`: data, language pre-training, stage 1
and stage 2 through `train`, the held-out GQA-format runner), LLaVA-1.5 on the committed toy towers
learns colour, which the toy CLIP sees, and a label shift of one token undoes it.

SIZE is configuration D (1800 pictures x 4 epochs, 452 stage-2 steps), the smallest that learns
colour (docs/toy-lab.md, "Fifth round": 900 x 4 gives 24 ± 7 %). At SIZE, training seeds 0-2 answer
75, 72.5 and 80 % of the colour questions (76 ± 4; chance 17 %; "Sixth round"), so FLOOR sits three
standard deviations below the mean: a run below it did not learn. The full floor (90 %, configuration
E) and the other mutations are in test_lab_mllm_floor.py, run on request.
"""

from __future__ import annotations

import pytest
from lab_mutations import prepare, run_variant, shift_labels

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SIZE = dict(seed=0, samples=1800, epochs=4.0, letter_share=0.25, language_steps=300, mmvp_pairs=36,
            heldout_pairs=180, progress=False)  # fmt: skip
FLOOR = 64.0  # % held-out colour accuracy: 76 - 3 x 4 (three seeds at SIZE); chance 17
DROP = 20.0  # points the label shift must cost


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("lab") / "base", SIZE)


@pytest.fixture(scope="module")
def clip_only(prepared):
    return run_variant(prepared, SIZE, "clip-only", "llava-1.5")


def test_clip_only_learns_colour(clip_only):
    assert clip_only.heldout["colour"] >= FLOOR, clip_only.heldout


def test_labels_shifted_by_one_unlearn_colour(prepared, clip_only, monkeypatch):
    shift_labels(monkeypatch)
    mutated = run_variant(prepared, SIZE, "labels-shifted", "llava-1.5")
    assert mutated.heldout["colour"] <= clip_only.heldout["colour"] - DROP, (
        mutated.heldout,
        clip_only.heldout,
    )
