"""MMBench: VLMEvalKit's exact matching and circular evaluation reproduced on LLaVA's answers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mof_llava.benchmarks import mmbench
from mof_llava.benchmarks.answers import AnswerFileError, index_answers
from mof_llava.benchmarks.judge import ChatJudge, JudgeConfig
from mof_llava.benchmarks.synthetic import write_mmbench


@pytest.fixture
def fixture_tsv(fixtures_dir, tmp_path):
    """The fixture rows (from LLaVA's released upload sheet) as an MMBench TSV."""
    rows = [json.loads(line) for line in (fixtures_dir / "mmbench" / "gt.jsonl").read_text().splitlines()]
    path = tmp_path / "mmbench_dev_excerpt.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_llava_13b_answers_give_the_reference_circular_result(fixtures_dir, fixture_tsv):
    expected = json.loads((fixtures_dir / "mmbench" / "expected.json").read_text())
    metrics = mmbench.score_answer_file(
        fixtures_dir / "mmbench" / "llava-v1.5-13b.answers.jsonl", mmbench.read_tsv(fixture_tsv)
    )
    assert metrics["groups"] == {k: v for k, v in expected["groups"].items()}
    assert metrics["score"] == pytest.approx(100 * expected["circular_acc"])
    assert metrics["questions"] == 5 and metrics["rows"] == 16


def test_groups_come_from_the_file_not_synthesised(fixture_tsv):
    # quirk 11: question 34 has four options but only three circular rows
    rows = mmbench.read_tsv(fixture_tsv)
    sizes = {}
    for r in rows:
        sizes.setdefault(r.group, []).append(len(r.options))
    assert sizes[34] == [4, 4, 4] and sizes[241] == [2, 2] and sizes[244] == [3, 3, 3] and len(sizes[1]) == 4


def test_prompt_equals_llavas_recorded_prompt(fixtures_dir, fixture_tsv):
    rows = {r.index: r for r in mmbench.read_tsv(fixture_tsv)}
    answers = [
        json.loads(x)
        for x in (fixtures_dir / "mmbench" / "llava-v1.5-13b.answers.jsonl").read_text().splitlines()
    ]
    checked = 0
    for a in answers:
        row = rows[a["question_id"]]
        assert a["options"] == list(row.options.values())  # literal "\\n" sequences kept as-is
        if row.group in (1, 7, 34):  # questions without a hint (the fixture has no hint column)
            assert mmbench.llava_question(row) == a["prompt"]
            checked += 1
    assert checked == 11


CHOICES = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
LONG = (
    "Option B is correct because the animal in the picture has long ears and sits in a grassy garden scene."
)


@pytest.mark.parametrize(
    "answer, old, new",
    [
        ("A", "A", "A"),
        ("B.", "B", "B"),
        ("(C)", "C", "C"),
        ("C)", "C", "C"),
        ("D: dog", "D", "D"),
        ("Answer: D", "D", "D"),
        ("A. teddy bear", "A", "A"),
        ("cat", "C", "C"),
        ("a cute teddy bear", "A", "A"),
        ("A cat", "A", "A"),
        ("a", None, None),
        ("a)", None, None),
        ("(a)", None, None),
        ("The answer is (B)", "B", "B"),
        ("B) rabbit", "B", "B"),
        ("B C", None, None),
        ("dog and cat", None, None),
        ("", None, None),
        (LONG, "B", None),
        ("The correct answer is **C**. Here's why", "C", "C"),
        ("Sorry, I can't help with images of people yet.", "Z", "Z"),
        ("Z", "Z", "Z"),
    ],
)
def test_exact_matching_as_vlmevalkit(answer, old, new):
    # quirk 12: the 2024 and 2025 rule sets differ on long answers only
    assert mmbench.infer_letter(answer, CHOICES, mmbench.MATCHING_RULES["2024"]) == old
    assert mmbench.infer_letter(answer, CHOICES, mmbench.MATCHING_RULES["2025"]) == new


def _tsv(tmp_path, rows, name="t.tsv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def _row(index, answer, options, hint=""):
    base = {
        "index": index,
        "question": "Which animal is it?",
        "hint": hint,
        "answer": answer,
        "split": "dev",
        "category": "image_topic",
        "l2-category": "coarse_perception",
    }
    return base | {letter: (options[i] if i < len(options) else "") for i, letter in enumerate("ABCD")}


def test_option_named_none_is_kept_and_nan_hint_is_no_hint(tmp_path):
    # quirk 14: pandas' default reading (LLaVA, VLMEvalKit) turns "None" into a missing value
    path = _tsv(tmp_path, [_row(1, "C", ["cat", "dog", "None"], hint="nan")])
    row = mmbench.read_tsv(path)[0]
    assert row.options == {"A": "cat", "B": "dog", "C": "None"}
    assert row.hint is None
    assert mmbench.llava_question(row) == "Which animal is it?\nA. cat\nB. dog\nC. None"
    assert pd.read_csv(path, sep="\t")["C"].isna().all()  # what the references would have read


def test_hint_goes_first(tmp_path):
    row = mmbench.read_tsv(_tsv(tmp_path, [_row(1, "A", ["cat", "dog"], hint="Look closely.")]))[0]
    assert mmbench.llava_question(row) == "Look closely.\nWhich animal is it?\nA. cat\nB. dog"


def test_answers_for_another_dev_version_are_refused(fixtures_dir, fixture_tsv, tmp_path):
    # quirk 13: answers made for one dev file scored against another
    rows = [r for r in mmbench.read_tsv(fixture_tsv) if r.group != 7]
    with pytest.raises(
        AnswerFileError, match=r"4 answers have question ids that the MMBench TSV does not contain"
    ):
        mmbench.score_answer_file(fixtures_dir / "mmbench" / "llava-v1.5-13b.answers.jsonl", rows)


def test_breakdowns_and_single_pass_accuracy(tmp_path):
    path = write_mmbench(tmp_path / "mmb.tsv", questions=3)
    rows = mmbench.read_tsv(path)
    assert mmbench.version_of(rows).startswith("unknown (9 rows, 3 questions)")

    # right on every row except question 3's last rotation
    def text(r):
        return r.answer if r.index != 2_000_003 else ("B" if r.answer == "A" else "A")

    answers = index_answers([{"question_id": r.index, "text": text(r)} for r in rows])
    m = mmbench.score_mmbench(answers, rows)
    assert m["groups"] == {"1": 1, "2": 1, "3": 0}
    assert m["score"] == pytest.approx(200 / 3)
    assert m["per_category"] == {"image_topic": {"accuracy": pytest.approx(200 / 3), "n": 3}}
    assert m["per_l2_category"]["coarse_perception"]["n"] == 3
    assert m["single_pass_accuracy_base_rows"] == 100.0
    assert m["single_pass_accuracy_all_rows"] == pytest.approx(800 / 9)


def test_test_split_without_answers_cannot_be_scored(tmp_path):
    path = _tsv(tmp_path, [{k: v for k, v in _row(1, "A", ["cat", "dog"]).items() if k != "answer"}])
    with pytest.raises(mmbench.MMBenchDataError, match="no answers .*test split"):
        mmbench.score_mmbench(index_answers([{"question_id": 1, "text": "A"}]), mmbench.read_tsv(path))


def test_malformed_rows_are_named(tmp_path):
    with pytest.raises(
        mmbench.MMBenchDataError, match=r"t.tsv:2 \(index 5\): answer 'C' is not one of the options"
    ):
        mmbench.read_tsv(_tsv(tmp_path, [_row(5, "C", ["cat", "dog"])]))
    with pytest.raises(
        mmbench.MMBenchDataError, match="circular rows without their base question row: \\[1000009\\]"
    ):
        mmbench.read_tsv(_tsv(tmp_path, [_row(1, "A", ["cat", "dog"]), _row(1_000_009, "B", ["dog", "cat"])]))


def test_judge_settles_only_unread_rows(tmp_path, judge_server, monkeypatch):
    rows = mmbench.read_tsv(
        _tsv(tmp_path, [_row(1, "B", ["cat", "dog"]), _row(1_000_001, "A", ["dog", "cat"])])
    )
    server = judge_server(
        lambda body: "B" if "the second one" in body["messages"][-1]["content"] else "nonsense"
    )
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = ChatJudge(JudgeConfig(server.url, "judge-model", api_key_env="TEST_JUDGE_KEY"))
    answers = index_answers(
        [{"question_id": 1, "text": "the second one"}, {"question_id": 1_000_001, "text": "A"}]
    )
    assert mmbench.score_mmbench(answers, rows)["score"] == 0.0  # exact matching alone cannot read row 1
    m = mmbench.score_mmbench(answers, rows, judge=judge)
    assert m["score"] == 100.0 and m["rows_judged"] == 1 and len(server.requests) == 1
    request = server.requests[0]
    assert request["model"] == "judge-model" and request["temperature"] == 0.0
    assert "A. cat\nB. dog" in request["messages"][0]["content"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    # a judge that never names an option leaves the row wrong after its attempts (no random pick)
    stubborn = ChatJudge(JudgeConfig(server.url, "judge-model"))
    unread = index_answers([{"question_id": 1, "text": "hmm"}, {"question_id": 1_000_001, "text": "A"}])
    assert mmbench.score_mmbench(unread, rows, judge=stubborn)["score"] == 0.0
    assert stubborn.calls == 3
