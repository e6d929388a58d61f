"""VSR scoring on the first 12 lines of the release's zero-shot test split (verbatim) with 12
hand-written answers; per relation and per meta-category as the release's analysis script groups."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mof_llava.benchmarks import intervals, registry, vsr

# by hand from the fixture's labels (1 0 0 1 0 0 1 0 0 1 0 0) and answers/*.jsonl's texts
RIGHT = [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1]


def _data(fixtures_dir):
    return fixtures_dir / "vsr" / "test.jsonl"


def _score(fixtures_dir):
    return vsr.score_answer_file(
        fixtures_dir / "vsr" / "answers.jsonl", vsr.read_captions(_data(fixtures_dir))
    )


def test_excerpt_scores_by_hand(fixtures_dir):
    metrics = _score(fixtures_dir)
    assert (
        metrics["score"] == pytest.approx(800 / 12) and metrics["questions"] == 12 and metrics["unread"] == 1
    )
    categories = metrics["per_meta_category"]
    # Projective: behind x2, under, right of, over; Topological: touching x2, inside, contains, in x2
    assert {k: v["accuracy"] for k, v in categories.items()} == pytest.approx(
        {"Projective": 60.0, "Topological": 500 / 6, "Orientation": 0.0}
    )
    assert {k: v["n"] for k, v in categories.items()} == {"Projective": 5, "Topological": 6, "Orientation": 1}
    relations = metrics["per_relation"]
    assert (relations["in"]["accuracy"], relations["in"]["n"]) == (50.0, 2)
    assert (relations["behind"]["accuracy"], relations["right of"]["accuracy"]) == (100.0, 0.0)
    assert len(relations) == 9


def test_interval_resamples_captions(fixtures_dir):
    rng = np.random.default_rng(intervals.SEED)
    draws = rng.integers(0, 12, size=(intervals.RESAMPLES, 12))
    stats = [100 * sum(RIGHT[i] for i in d) / 12 for d in draws]
    assert _score(fixtures_dir)["score_ci95"] == pytest.approx(list(np.percentile(stats, [2.5, 97.5])))


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("True", 1),
        ("yes.", 1),
        ("FALSE", 0),
        ("No, it is not.", 0),
        ("It is true.", 1),
        ("not sure", None),
        ("", None),
    ],
)
def test_verdicts(text, verdict):
    assert vsr.read_verdict(text) == verdict


def test_among_counts_as_unallocated_and_unknown_relations_are_reported(tmp_path):
    rows = [
        {"image": "a.jpg", "caption": "The cat is among the dogs.", "label": 1, "relation": "among"},
        {
            "image": "b.jpg",
            "caption": "The cat floats over the dog.",
            "label": 0,
            "relation": "floating over",
        },
    ]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 0, "text": "true"}\n{"question_id": 1, "text": "true"}\n')
    metrics = vsr.score_answer_file(answers, vsr.read_captions(tmp_path))  # the folder's test.jsonl
    assert metrics["per_meta_category"] == {
        "Unallocated": {"accuracy": 100.0, "n": 1},
        vsr.UNCATEGORISED: {"accuracy": 0.0, "n": 1},
    }
    # the release's list: 10 + 16 + 4 + 12 + 5 + 18 + 6 = 71 entries (its script prints "# rel: 71"), "among" twice
    assert sum(len(rels) for _, rels in vsr.META_CATEGORIES) == 71 and len(vsr.RELATION_CATEGORY) == 70


def test_task_and_bad_rows(fixtures_dir, tmp_path):
    task = vsr.build_task(_data(fixtures_dir), tmp_path)
    assert task.questions[0].text == (
        "Is the following statement about the image true or false? The car is behind the suitcase.\n"
        "Answer with true or false."
    )
    assert (
        task.questions[0].image_path == tmp_path / "000000017697.jpg" and task.questions[11].question_id == 11
    )
    with pytest.raises(vsr.VsrDataError, match="--images is needed to run VSR"):
        vsr.build_task(_data(fixtures_dir), None)
    line = json.loads(_data(fixtures_dir).read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({**line, "label": "True"}) + "\n" + json.dumps({**line, "caption": None}) + "\n"
    )
    with pytest.raises(
        vsr.VsrDataError, match=r"bad.jsonl:1: label must be 1 \(true\) or 0 \(false\), got 'True'"
    ):
        vsr.read_captions(bad)
    assert registry.get("vsr").options is vsr.VsrOptions
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(vsr.VsrDataError, match="empty.jsonl: the VSR file holds no rows"):
        vsr.read_captions(tmp_path / "empty.jsonl")
