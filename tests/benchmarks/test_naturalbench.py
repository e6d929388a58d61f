"""NaturalBench: the official answer reading and Acc / Q-Acc / I-Acc / G-Acc on a released-format
excerpt; goldens by hand and from a re-implementation of the official get_scores."""

from __future__ import annotations

import json
import re

import pytest

from mof_llava.benchmarks import intervals, naturalbench, registry
from mof_llava.benchmarks.answers import AnswerFileError


def _data(fixtures_dir):
    return fixtures_dir / "naturalbench" / "naturalbench_excerpt.jsonl"


def _answers(fixtures_dir):
    return fixtures_dir / "naturalbench" / "answers.jsonl"


def _official_read(text, kind):
    """The official extract_answer's documented rule: whichever word comes first, whole word,
    any case; -1 when neither appears."""
    yes, no = ("yes", "no") if kind == "yes_no" else ("A", "B")
    found = {w: m.start() for w in (yes, no) if (m := re.search(rf"\b{w}\b", text, re.IGNORECASE))}
    if not found:
        return -1
    return 1 if min(found, key=found.get) == yes else 0


def _official_scores(raw):
    """The official get_scores on raw reads per sample (q0_i0, q0_i1, q1_i0, q1_i1), which takes
    the right answers to be (1, 0, 0, 1)."""
    q = i = acc = g = 0
    for a, b, c, d in raw:
        qs = (a == 1 and b == 0) + (d == 1 and c == 0)
        im = (a == 1 and c == 0) + (d == 1 and b == 0)
        q, i, acc = q + qs, i + im, acc + (a == 1) + (b == 0) + (c == 0) + (d == 1)
        g += qs == 2 and im == 2
    n = len(raw)
    return {
        "q_acc": 100 * q / (2 * n),
        "i_acc": 100 * i / (2 * n),
        "acc": 100 * acc / (4 * n),
        "g_acc": 100 * g / n,
    }


def test_excerpt_scores_as_the_official_scorer_and_by_hand(fixtures_dir):
    metrics = naturalbench.score_answer_file(
        _answers(fixtures_dir), naturalbench.read_samples(_data(fixtures_dir))
    )
    rows = [json.loads(line) for line in _data(fixtures_dir).read_text().splitlines()]
    texts = {
        a["question_id"]: a["text"] for a in map(json.loads, _answers(fixtures_dir).read_text().splitlines())
    }
    raw = [
        [
            _official_read(texts[f"{r['Index']}_q{q}_i{i}"], r["Question_Type"])
            for q, i in ((0, 0), (0, 1), (1, 0), (1, 1))
        ]
        for r in rows
    ]
    official = _official_scores(raw)
    for key in ("acc", "q_acc", "i_acc", "g_acc"):
        assert metrics[key] == pytest.approx(official[key])
    # by hand (tests/fixtures/README.md): 16/20 cells, 7/10 questions, 6/10 images, 2/5 samples
    assert (metrics["acc"], metrics["q_acc"], metrics["i_acc"], metrics["g_acc"]) == pytest.approx(
        (80, 70, 60, 40)
    )
    assert metrics["score"] == metrics["g_acc"] and metrics["unread"] == 2
    assert (
        metrics["samples"] == 5 and metrics["questions"] == 20 and metrics["samples_off_official_layout"] == 0
    )
    assert metrics["per_type"]["multiple_choice"]["g_acc"] == pytest.approx(50.0)
    # interval over samples, the four answers of a sample together
    per_sample_g = [float(all(x == y for x, y in zip(r, (1, 0, 0, 1)))) for r in raw]
    assert metrics["g_acc_ci95"] == intervals.mean_interval(per_sample_g) == metrics["score_ci95"]
    assert metrics["bootstrap"]["unit"].startswith("sample")


@pytest.mark.parametrize(
    ("text", "kind", "read"),
    [
        ("Yes", "yes_no", 1),
        ("no, it is not", "yes_no", 0),
        ("Yes and no", "yes_no", 1),
        ("I cannot tell.", "yes_no", -1),  # "no" inside "cannot" is not a word
        ("Nope", "yes_no", -1),
        ("B. a newspaper", "multiple_choice", 0),
        ("There is a man with A", "multiple_choice", 1),  # the article counts, as in the reference
        ("Not sure", "multiple_choice", -1),
    ],
)
def test_answer_reading(text, kind, read):
    assert naturalbench.read_answer(text, kind) == read == _official_read(text, kind)


def test_answers_are_compared_with_their_columns(fixtures_dir, tmp_path):
    row = json.loads(_data(fixtures_dir).read_text().splitlines()[0])
    row.update({"Image_0_Question_0": "No", "Image_1_Question_0": "Yes"})  # q0 flipped
    data = tmp_path / "nb.jsonl"
    data.write_text(json.dumps(row) + "\n")
    answers = tmp_path / "answers.jsonl"
    texts = ["No", "Yes", "No", "Yes"]
    ids = ["0_q0_i0", "0_q0_i1", "0_q1_i0", "0_q1_i1"]
    answers.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in zip(ids, texts)))
    metrics = naturalbench.score_answer_file(answers, naturalbench.read_samples(data))
    assert metrics["g_acc"] == 100.0 and metrics["samples_off_official_layout"] == 1


def test_task_has_four_questions_per_sample_with_their_images(fixtures_dir):
    task = naturalbench.build_task(_data(fixtures_dir))
    assert len(task.questions) == 20 and task.questions[1].question_id == "0_q0_i1"
    assert task.questions[0].text == "Is the dog sleeping on the sofa?Please answer Yes or No."
    lmms = naturalbench.build_task(_data(fixtures_dir), prompt="lmms-eval")
    assert lmms.questions[12].text.endswith(
        "B. a newspaper Please output the letter corresponding to the correct option."
    )
    first, second = (task.questions[k].load_image() for k in (0, 1))
    assert first.getpixel((0, 0)) == (200, 30, 30) and second.getpixel((0, 0)) == (30, 200, 30)
    assert task.questions[2].image_base64 == task.questions[0].image_base64  # q1 on image 0
    assert registry.get("naturalbench").options is naturalbench.NaturalBenchOptions


def test_bad_rows_and_missing_answers_fail_in_one_line(fixtures_dir, tmp_path):
    row = json.loads(_data(fixtures_dir).read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**row, "Image_1_Question_1": "Maybe"}) + "\n")
    with pytest.raises(
        naturalbench.NaturalBenchDataError, match=r"bad.jsonl:1 Image_1_Question_1: .*'Maybe'"
    ):
        naturalbench.read_samples(bad)
    bad.write_text(json.dumps({**row, "Question_Type": "open"}) + "\n")
    with pytest.raises(naturalbench.NaturalBenchDataError, match=r"bad.jsonl:1: Question_Type"):
        naturalbench.read_samples(bad)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(_answers(fixtures_dir).read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(AnswerFileError, match="4_q1_i1"):
        naturalbench.score_answer_file(partial, naturalbench.read_samples(_data(fixtures_dir)))


def test_parquet_release_is_read_or_refused_in_one_line(fixtures_dir, tmp_path):
    import base64
    import importlib.util

    import pandas as pd

    rows = [json.loads(line) for line in _data(fixtures_dir).read_text().splitlines()]
    for r in rows:  # the parquet release holds the image bytes themselves
        for k in ("Image_0", "Image_1"):
            r[k] = {"bytes": base64.b64decode(r[k]["bytes"]), "path": None}
    path = tmp_path / "train-00000-of-00001.parquet"
    if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
        path.write_bytes(b"PAR1")
        with pytest.raises(naturalbench.NaturalBenchDataError, match="reading parquet needs pyarrow"):
            naturalbench.read_samples(tmp_path)
        return
    pd.DataFrame(rows).to_parquet(path)
    samples = naturalbench.read_samples(tmp_path)
    from_jsonl = naturalbench.read_samples(_data(fixtures_dir))
    assert [s.images for s in samples] == [s.images for s in from_jsonl]
