"""GQA: LLaVA's conversion reproduced byte for byte; the official eval.py's metrics."""

from __future__ import annotations

import json

import pytest

from mof_llava.benchmarks import gqa
from mof_llava.benchmarks.answers import index_answers


def test_predictions_file_matches_llavas_converter_byte_for_byte(fixtures_dir, tmp_path):
    out = tmp_path / "testdev_balanced_predictions.json"
    gqa.write_predictions(fixtures_dir / "gqa" / "llava-v1.5-13b.jsonl", out)
    expected = fixtures_dir / "gqa" / "expected_testdev_balanced_predictions.json"
    assert out.read_bytes() == expected.read_bytes()


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("Yes", "yes"),
        ("Woman", "woman"),
        ("Yes.", "yes"),
        ("yes..", "yes"),
        ("Yes!", "yes!"),
        ("the man", "the man"),
        ("t-shirt", "t-shirt"),
        (" yes", " yes"),
    ],
)
def test_llava_normalisation_only_strips_periods_and_lowercases(text, normalised):
    # quirk 16: no article, punctuation or whitespace removal (unlike lmms-eval / VLMEvalKit)
    assert gqa.llava_normalize(text) == normalised


def _question(text, answer, structural, semantic, group, ops, balanced=True):
    return {
        "question": text,
        "answer": answer,
        "fullAnswer": "",
        "imageId": "n1",
        "isBalanced": balanced,
        "groups": {"global": group, "local": "x"},
        "types": {"structural": structural, "semantic": semantic, "detailed": "d"},
        "semantic": [{"operation": op, "argument": arg, "dependencies": []} for op, arg in ops],
        "semanticStr": "",
        "entailed": [],
        "equivalent": [],
        "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
    }


@pytest.fixture
def official():
    return {
        "1": _question(
            "Is it overcast?",
            "no",
            "verify",
            "global",
            None,
            [("select", "sky"), ("verify weather", "overcast")],
        ),
        "2": _question(
            "Who is wearing the dress?",
            "woman",
            "query",
            "rel",
            "person",
            [("select", "dress"), ("relate", "person,wearing,s"), ("query", "name")],
        ),
        "3": _question(
            "What color is the car?", "red", "query", "attr", "color", [("select", "car"), ("query", "color")]
        ),
        "4": _question(
            "What color is the bus?", "red", "query", "attr", "color", [("select", "bus"), ("query", "color")]
        ),
        "5": _question(
            "Are there both cars and trees?",
            "yes",
            "logical",
            "obj",
            None,
            [("select", "car"), ("exist", "?"), ("select", "tree"), ("exist", "?"), ("and", "")],
        ),
        "6": _question("Not balanced?", "yes", "verify", "attr", None, [("select", "x")], balanced=False),
    }


def test_metrics_follow_the_official_script(official):
    answers = index_answers(
        [
            {"question_id": "1", "text": "No"},
            {"question_id": "2", "text": "Woman."},
            {"question_id": "3", "text": "Red"},
            {"question_id": "4", "text": "blue"},
            {"question_id": "5", "text": "Yes!"},  # not normalised: wrong
        ]
    )  # question 6 is not balanced: needs no answer
    m = gqa.score_gqa(answers, official)
    assert m["score"] == m["accuracy"] == pytest.approx(60.0)
    assert (m["n"], m["correct"]) == (5, 3)
    assert m["binary"] == pytest.approx(50.0)  # verify + logical: 1 of 2
    assert m["open"] == pytest.approx(200 / 3)  # query: 2 of 3
    assert m["per_structural_type"] == {
        "logical": {"accuracy": 0.0, "n": 1},
        "query": {"accuracy": pytest.approx(200 / 3), "n": 3},
        "verify": {"accuracy": 100.0, "n": 1},
    }
    assert m["per_semantic_type"]["attr"] == {"accuracy": 50.0, "n": 2}
    # steps: exist / "query: name" / "choose name" operations do not count
    assert m["per_steps"] == {"2": {"accuracy": 75.0, "n": 4}, "3": {"accuracy": 0.0, "n": 1}}
    assert gqa.reasoning_steps(official["2"]) == 2 and gqa.reasoning_steps(official["5"]) == 3
    assert gqa.reasoning_steps(official["3"]) == 2
    # distribution: groups person {woman: gold 1, pred 1} and color {red: gold 2, pred 1}
    # chi2(person) = 0, chi2(color) = (1-2)^2/2 = 0.5 weighted by 2; (0*1 + 0.5*2) / 3 / 100
    assert m["distribution"] == pytest.approx(1 / 3 / 100)
    assert "validity" not in m and "plausibility" not in m  # quirk 15: testdev has no choices file


def test_steps_breakdown(official):
    answers = index_answers([{"question_id": q, "text": official[q]["answer"]} for q in "12345"])
    m = gqa.score_gqa(answers, official)
    assert m["score"] == 100.0
    assert m["per_steps"] == {"2": {"accuracy": 100.0, "n": 4}, "3": {"accuracy": 100.0, "n": 1}}
    assert m["distribution"] == 0.0


def test_missing_and_unknown_answers_are_refused(official):
    with pytest.raises(gqa.GqaDataError, match=r"4 of 5 balanced questions have no answer"):
        gqa.score_gqa(index_answers([{"question_id": "1", "text": "no"}]), official)
    with pytest.raises(
        gqa.GqaDataError, match=r"1 answers have question ids not in the GQA questions file \(first: 99\)"
    ):
        gqa.score_gqa(index_answers([{"question_id": q, "text": "x"} for q in [*"12345", "99"]]), official)


def test_llava_question_list_rebuilt_from_official_file(fixtures_dir, official):
    built = gqa.questions_from_official(official)
    assert [q.question_id for q in built] == ["1", "2", "3", "4", "5"]
    assert (
        built[0].text == "Is it overcast?\nAnswer the question using a single word or phrase."
        and built[0].image == "n1.jpg"
    )
    # same text format as LLaVA's converted file
    first = json.loads(
        (fixtures_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl").read_text().splitlines()[0]
    )
    assert first["text"] == built[0].text and first["image"] == "n161313.jpg"


def test_duplicate_question_ids_in_llava_question_list_are_refused(fixtures_dir, tmp_path):
    lines = (fixtures_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl").read_text().splitlines()
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    qid = json.loads(lines[1])["question_id"]
    with pytest.raises(
        gqa.GqaDataError,
        match=rf"questions.jsonl:{len(lines) + 1}: question_id {qid} already appears on line 2",
    ):
        gqa.read_llava_questions(path)
    assert len(gqa.read_llava_questions(fixtures_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl")) == len(
        lines
    )
