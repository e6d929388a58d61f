"""CV-Bench: Cambrian's answer reading and the source-weighted score on a released-format excerpt;
goldens by hand (tests/fixtures/README.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mof_llava.benchmarks import cvbench, intervals, registry
from mof_llava.benchmarks.answers import AnswerFileError


def _data(fixtures_dir):
    return fixtures_dir / "cvbench"


def test_excerpt_scores_by_hand(fixtures_dir):
    metrics = cvbench.score_answer_file(
        _data(fixtures_dir) / "answers.jsonl", cvbench.read_questions(_data(fixtures_dir))
    )
    # ADE20K 2/2, COCO 2/3 ("b" reads as (b)), Omni3D 1/3 ("(a)" unread)
    per_source = {s: v["accuracy"] for s, v in metrics["per_source"].items()}
    assert per_source == pytest.approx({"ADE20K": 100.0, "COCO": 200 / 3, "Omni3D": 100 / 3})
    assert metrics["score"] == pytest.approx(((100 + 200 / 3) / 2 + 100 / 3) / 2)  # 58.33, not the 5/8 pooled
    assert metrics["accuracy_2d"] == pytest.approx(250 / 3) and metrics["accuracy_3d"] == pytest.approx(
        100 / 3
    )
    assert {t: v["accuracy"] for t, v in metrics["per_task"].items()} == pytest.approx(
        {"Count": 200 / 3, "Relation": 100.0, "Depth": 0.0, "Distance": 100.0}
    )
    assert metrics["questions"] == 8 and metrics["unread"] == 1


def test_interval_resamples_within_each_source(fixtures_dir):
    metrics = cvbench.score_answer_file(
        _data(fixtures_dir) / "answers.jsonl", cvbench.read_questions(_data(fixtures_dir))
    )
    hits = {"ADE20K": [1, 1], "COCO": [0, 1, 1], "Omni3D": [0, 1, 0]}  # by hand, file order
    rng = np.random.default_rng(intervals.SEED)
    draws = [rng.integers(0, len(hits[s]), size=(intervals.RESAMPLES, len(hits[s]))) for s in cvbench.SOURCES]
    stats = []
    for b in range(intervals.RESAMPLES):
        acc = [100 * sum(hits[s][i] for i in d[b]) / len(d[b]) for s, d in zip(cvbench.SOURCES, draws)]
        stats.append(((acc[0] + acc[1]) / 2 + acc[2]) / 2)
    assert metrics["score_ci95"] == pytest.approx(list(np.percentile(stats, [2.5, 97.5])))
    assert metrics["score_ci95"][0] <= metrics["score"] <= metrics["score_ci95"][1]


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("(C) 1", "(C)"),
        ("B. right", "(B)"),
        ("b", "(b)"),
        ("The answer is (A).", "(A)"),
        ("(a)", None),
        ("", None),
    ],
)
def test_answer_reading(text, letter):
    assert cvbench.read_letter(text) == letter


def test_task_prompt_and_images(fixtures_dir):
    task = cvbench.build_task(_data(fixtures_dir))
    assert [q.question_id for q in task.questions] == list(range(8))
    assert task.questions[0].text.endswith(
        "(D) 0\nAnswer with the option's letter from the given choices directly."
    )
    assert task.questions[5].load_image().getpixel((0, 0)) == (150, 100, 100)
    assert registry.get("cvbench").options is cvbench.CVBenchOptions


def test_partial_data_has_no_score_and_bad_rows_fail_in_one_line(fixtures_dir, tmp_path):
    only_2d = cvbench.read_questions(_data(fixtures_dir) / "test_2d.jsonl")
    answers = _data(fixtures_dir) / "answers.jsonl"
    partial = tmp_path / "answers.jsonl"
    partial.write_text("".join(line + "\n" for line in answers.read_text().splitlines()[:5]))
    metrics = cvbench.score_answer_file(partial, only_2d)
    assert metrics["score"] is None and "Omni3D" in metrics["note"] and "score_ci95" not in metrics
    row = json.loads((_data(fixtures_dir) / "test_2d.jsonl").read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**row, "answer": "C"}) + "\n")
    with pytest.raises(cvbench.CVBenchDataError, match=r"bad.jsonl:1: answer must look like"):
        cvbench.read_questions(bad)
    with pytest.raises(AnswerFileError):
        cvbench.score_answer_file(partial, cvbench.read_questions(_data(fixtures_dir)))


def test_repeated_idx_is_refused_naming_both_lines(fixtures_dir, tmp_path):
    line = (_data(fixtures_dir) / "test_2d.jsonl").read_text().splitlines()[0]
    twice = tmp_path / "twice.jsonl"
    twice.write_text(f"{line}\n{line}\n")
    with pytest.raises(
        cvbench.CVBenchDataError, match=r"twice.jsonl:2: idx 0 already used at .*twice.jsonl:1"
    ):
        cvbench.read_questions(twice)
