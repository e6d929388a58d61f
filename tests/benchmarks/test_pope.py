"""POPE: LLaVA's parser and metrics reproduced on the released answers; version mix-ups refused."""

from __future__ import annotations

import json
import random

import pytest

from mof_llava.benchmarks import pope
from mof_llava.benchmarks.answers import AnswerFileError, index_answers


def _fixture_data(fixtures_dir, with_questions=True):
    questions = fixtures_dir / "pope" / "llava_pope_test.jsonl" if with_questions else None
    return pope.load_pope(fixtures_dir / "pope" / "coco", questions)


def _fixture_answers(fixtures_dir):
    return fixtures_dir / "pope" / "answers" / "llava-v1.5-13b.jsonl"


def test_llava_13b_answers_reproduce_eval_pope_output_exactly(fixtures_dir):
    metrics = pope.score_answer_file(_fixture_answers(fixtures_dir), _fixture_data(fixtures_dir))
    expected = (fixtures_dir / "pope" / "expected_eval_pope.txt").read_text()
    assert pope.llava_report(metrics) == expected
    for split in pope.SPLITS:
        m = metrics["splits"][split]
        assert (m["n"], m["tp"], m["fp"], m["tn"], m["fn"]) == (6, 2, 0, 3, 1)
    assert metrics["score"] == pytest.approx(80.0, abs=1e-12)


def test_question_list_rebuilt_from_annotations_equals_llavas_file(fixtures_dir):
    rebuilt = pope.llava_questions_from_annotations(
        {
            s: pope.read_annotations(p, s)
            for s, p in pope.find_annotation_files(fixtures_dir / "pope" / "coco").items()
        }
    )
    llava = [
        json.loads(line)
        for line in (fixtures_dir / "pope" / "llava_pope_test.jsonl").read_text().splitlines()
    ]
    assert [(q.question_id, q.image, q.text, q.category) for q in rebuilt] == [
        (r["question_id"], r["image"], r["text"], r["category"]) for r in llava
    ]
    # and scoring without the question file gives the same result
    metrics = pope.score_answer_file(
        _fixture_answers(fixtures_dir), _fixture_data(fixtures_dir, with_questions=False)
    )
    assert metrics["score"] == pytest.approx(80.0, abs=1e-12)


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("No.", "no"),  # first sentence only
        ("There is no dog", "no"),
        ("not sure", "no"),
        ("Yes, there is. No doubt", "yes"),  # only the first sentence counts
        ("", "yes"),  # quirk 8: everything that is not a "no" is a "yes"
        ("NO", "yes"),
        ("Nope", "yes"),
        ("None", "yes"),
        ("No\nThere is a dog", "yes"),  # split on single spaces only: the token is "No\nThere"
        ("No, there is not.", "no"),
    ],
)
def test_llava_yes_no_parser(text, parsed):
    assert pope.llava_yes_no(text) == parsed


def test_answers_are_matched_by_question_id_not_file_order(fixtures_dir):
    records = [json.loads(line) for line in _fixture_answers(fixtures_dir).read_text().splitlines()]
    random.Random(0).shuffle(records)
    metrics = pope.score_pope(index_answers(records), _fixture_data(fixtures_dir))
    assert metrics["splits"]["random"]["tp"] == 2 and metrics["score"] == pytest.approx(80.0, abs=1e-12)


def _write_split(folder, split, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"coco_pope_{split}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_questions_from_another_pope_version_are_refused(fixtures_dir, tmp_path):
    # quirk 7: the e3e39262 random split (as in LLaVA's question file) vs a regenerated one
    coco = tmp_path / "coco"
    for split in ("adversarial", "popular"):
        (coco).mkdir(exist_ok=True)
        (coco / f"coco_pope_{split}.json").write_text(
            (fixtures_dir / "pope" / "coco" / f"coco_pope_{split}.json").read_text()
        )
    newer = [
        json.loads(x)
        for x in (fixtures_dir / "pope" / "coco" / "coco_pope_random.json").read_text().splitlines()
    ]
    _write_split(coco, "random", newer + [dict(newer[0], question_id=7)])
    with pytest.raises(pope.PopeDataError, match=r"random.*6 questions.*has 7.*different POPE versions"):
        pope.load_pope(coco, fixtures_dir / "pope" / "llava_pope_test.jsonl")
    # same length, different content: the labels would shift silently in the reference
    swapped = newer[:]
    swapped[1], swapped[3] = swapped[3], swapped[1]
    _write_split(coco, "random", swapped)
    with pytest.raises(
        pope.PopeDataError, match=r"question_id 10000002\) asks 'Is there a car in the image\?'.*sandwich"
    ):
        pope.load_pope(coco, fixtures_dir / "pope" / "llava_pope_test.jsonl")


def test_unrelated_json_files_in_the_annotation_folder_are_ignored(fixtures_dir, tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    for p in (fixtures_dir / "pope" / "coco").iterdir():
        (coco / p.name).write_text(p.read_text())
    (coco / "llava_pope_test.json").write_text("{}")  # the reference fails on this (KeyError 'label')
    data = pope.load_pope(coco, fixtures_dir / "pope" / "llava_pope_test.jsonl")
    assert sorted(data.labels) == sorted(pope.SPLITS)


def test_missing_or_foreign_answers_are_refused(fixtures_dir, tmp_path):
    records = [json.loads(line) for line in _fixture_answers(fixtures_dir).read_text().splitlines()]
    with pytest.raises(AnswerFileError, match=r"1 of 18 questions have no answer \(first: 20000006\)"):
        pope.score_pope(index_answers(records[:-1]), _fixture_data(fixtures_dir))
    extra = records + [dict(records[0], question_id=30000001)]
    with pytest.raises(AnswerFileError, match="30000001"):
        pope.score_pope(index_answers(extra), _fixture_data(fixtures_dir))


def _synthetic(tmp_path, preds_by_split):
    """Annotation files with alternating labels and answers given per split."""
    coco = tmp_path / "coco"
    answers = []
    for split, preds in preds_by_split.items():
        lines = [
            {
                "question_id": i + 1,
                "image": f"{i}.jpg",
                "text": "Is there a cat in the image?",
                "label": "yes" if i % 2 == 0 else "no",
            }
            for i in range(len(preds))
        ]
        _write_split(coco, split, lines)
        answers += [
            {"question_id": i + 1 + pope.LLAVA_ID_OFFSETS[split], "text": p} for i, p in enumerate(preds)
        ]
    return pope.load_pope(coco), index_answers(answers)


def test_headline_is_the_mean_of_split_f1s_not_pooled(tmp_path):
    # quirk 10
    data, answers = _synthetic(
        tmp_path,
        {
            "adversarial": ["Yes", "Yes", "Yes", "Yes"],  # TP 2 FP 2: P .5 R 1 F1 2/3
            "random": ["Yes", "No", "Yes", "No"],  # perfect: F1 1
            "popular": ["Yes", "No", "No", "No"],  # TP 1 FN 1: P 1 R .5 F1 2/3
        },
    )
    metrics = pope.score_pope(answers, data)
    f1s = [metrics["splits"][s]["f1"] for s in pope.SPLITS]
    assert f1s == pytest.approx([200 / 3, 100.0, 200 / 3])
    assert metrics["score"] == pytest.approx(sum(f1s) / 3)
    pooled_f1 = 2 * 4 / (2 * 4 + 2 + 1)  # TP 4, FP 2, FN 1 over all rows
    assert metrics["score"] != pytest.approx(100 * pooled_f1)
    assert metrics["splits"]["adversarial"]["yes_ratio"] == pytest.approx(100.0)


def test_a_split_without_yes_predictions_does_not_crash(tmp_path):
    # the reference divides by zero here
    data, answers = _synthetic(
        tmp_path, {"adversarial": ["No", "No"], "random": ["Yes", "No"], "popular": ["Yes", "No"]}
    )
    metrics = pope.score_pope(answers, data)
    assert (
        metrics["splits"]["adversarial"]["precision"] == 0.0 and metrics["splits"]["adversarial"]["f1"] == 0.0
    )


def test_bad_label_names_the_line(tmp_path):
    _write_split(
        tmp_path, "random", [{"question_id": 1, "image": "x.jpg", "text": "Is there a cat?", "label": "Yes"}]
    )
    with pytest.raises(pope.PopeDataError, match=r"coco_pope_random.json:1: label must be 'yes' or 'no'"):
        pope.load_pope(tmp_path)
