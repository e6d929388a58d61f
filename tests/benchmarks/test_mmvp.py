"""MMVP: the CSV as released (header typo, parentheses in options, label errata), the prompt
variants, pair accuracy, and answer reading: lmms-eval's reader reproduced, ours without its
false positives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mof_llava.benchmarks import mmvp
from mof_llava.benchmarks.answers import index_answers
from mof_llava.benchmarks.judge import ChatJudge, JudgeConfig
from mof_llava.prompts import model_prompt

# The two rows quoted in tsb0601/MMVP issue #14 (benchmarks.md §1.1).
ROWS = (
    "279,Is the elderly person standing or sitting in the picture?,(a) Standing (b) Sitting,(a)\n"
    "280,Is the elderly person standing or sitting in the picture?,(a) Standing (b) Sitting,(b)\n"
)


def _csv(tmp_path, header="Index,Question,Options,Correct Answer", rows=ROWS, encoding="utf-8"):
    path = tmp_path / "Questions.csv"
    path.write_text(f"{header}\n{rows}", encoding=encoding)
    return path


@pytest.mark.parametrize("header", ["Index", "lndex", "\ufeffIndex"])
def test_reads_the_released_csv_and_its_header_typo(tmp_path, header):
    # quirk 5: some copies spell the first header "lndex"
    questions = mmvp.read_questions(_csv(tmp_path, header=f"{header},Question,Options,Correct Answer"))
    assert [(q.index, q.options, q.answer, q.pair) for q in questions] == [
        (279, ("Standing", "Sitting"), "a", 139),
        (280, ("Standing", "Sitting"), "b", 139),
    ]


def test_options_with_parentheses_stay_whole():
    # quirk 4: lmms-eval's option parser returns only the first option here
    assert mmvp.parse_options("(a) The one on the left (b) The one (right)") == (
        "The one on the left",
        "The one (right)",
    )
    with pytest.raises(mmvp.MMVPDataError):
        mmvp.parse_options("Standing or sitting")


def test_bad_rows_and_lonely_pair_members_are_named(tmp_path):
    with pytest.raises(mmvp.MMVPDataError, match=r"Questions.csv:3: correct answer '\(c\)'"):
        mmvp.read_questions(_csv(tmp_path, rows=ROWS.replace(",(b)\n", ",(c)\n")))
    with pytest.raises(mmvp.MMVPDataError, match=r"without their pair partner .*\[279\]"):
        mmvp.read_questions(_csv(tmp_path, rows=ROWS.splitlines()[0] + "\n"))
    with pytest.raises(mmvp.MMVPDataError, match="first header must be 'Index'"):
        mmvp.read_questions(_csv(tmp_path, header="Id,Question,Options,Correct Answer"))


def test_label_errata_is_an_explicit_choice(tmp_path):
    # quirk 1: pairs (99,100) and (279,280) have swapped answers in the released file
    questions = mmvp.read_questions(_csv(tmp_path))
    answers = index_answers([{"question_id": 279, "text": "(a)"}, {"question_id": 280, "text": "(b)"}])
    original = mmvp.score_mmvp(answers, questions)
    corrected = mmvp.score_mmvp(answers, questions, labels="corrected")
    assert original["labels"] == "original" and original["score"] == 100.0
    assert corrected["score"] == 0.0 and corrected["question_accuracy"] == 0.0
    assert [q.answer for q in mmvp.with_labels(questions, "corrected")] == ["b", "a"]
    assert mmvp.CORRECTED_ANSWERS == {99: "b", 100: "a", 279: "b", 280: "a"}


def test_llava_letter_prompt_matches_lmms_evals_worked_example():
    q = mmvp.MMVPQuestion(
        1,
        "Are the butterfly's wings closer to being open or closed?",
        ("Open", "Closed"),
        "(a) Open (b) Closed",
        "a",
    )
    assert mmvp.question_text(q, "llava") == (
        "Are the butterfly's wings closer to being open or closed?\nA. Open\nB. Closed\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert mmvp.question_text(q, "cambrian") == (
        "Are the butterfly's wings closer to being open or closed? Options:\nA. Open\nB. Closed\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_official_prompt_uses_llava_v1_and_question_plus_options(tmp_path):
    # quirk 2: the official script's question + " " + options, llava_v1 template
    q = mmvp.read_questions(_csv(tmp_path))[0]
    text = mmvp.question_text(q, "official")
    assert text == "Is the elderly person standing or sitting in the picture? (a) Standing (b) Sitting"
    assert mmvp.PROMPTS["official"].template == "llava_v1" and mmvp.PROMPTS["llava"].template == "vicuna_v1"
    assert model_prompt(text, "llava_v1") == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\n" + text + " ASSISTANT:"
    )


def test_official_variant_crops_pictures_like_the_official_script(tmp_path):
    # quirk 2: the official script calls the CLIP preprocessor directly: no padding to a square
    path = _csv(tmp_path)
    assert mmvp.build_task(path, prompt="official").image_aspect_ratio == "crop"
    assert mmvp.build_task(path, prompt="llava").image_aspect_ratio == "pad"
    official = mmvp.build_task(path, prompt="official")
    assert (official.template, official.max_new_tokens) == ("llava_v1", 1024)


def test_default_protocol_is_llavas_letter_convention_not_the_papers(tmp_path):
    # defaults as docs/evaluation.md states them (values from the references: LLaVA's vicuna_v1,
    # pad and model_vqa_loader's 128 tokens; the MMVP script's llava_v1, crop and 1024)
    default = mmvp.build_task(_csv(tmp_path))
    assert (default.template, default.max_new_tokens, default.image_aspect_ratio) == ("vicuna_v1", 128, "pad")
    assert default.settings == {"prompt": "llava", "labels": "original", "grader": "ours"}
    assert default.questions[0].text.endswith(
        "\nAnswer with the option's letter from the given choices directly."
    )


def test_the_protocol_table_in_the_docs_says_what_the_code_does():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    picture = {"pad": "padded to a square", "crop": "resized, centre-cropped"}
    for name, variant in mmvp.PROMPTS.items():
        rows = [line for line in docs.splitlines() if line.startswith(f"| `{name}`")]
        assert len(rows) == 1, name
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert cells[0] == f"`{name}`" + (" (default)" if name == mmvp.DEFAULT_PROMPT else "")
        assert cells[2:5] == [
            variant.template,
            picture[variant.image_aspect_ratio],
            str(variant.max_new_tokens),
        ]


def test_images_follow_the_index_column_not_the_row_position(tmp_path):
    path = _csv(tmp_path, rows="".join(reversed(ROWS.splitlines(keepends=True))))
    task = mmvp.build_task(path)
    assert [(q.question_id, q.image_path.name) for q in task.questions] == [
        (280, "280.jpg"),
        (279, "279.jpg"),
    ]
    assert task.questions[0].image_path.parent.name == "MMVP Images"


# lmms-eval's reader on the responses run through it (benchmarks.md §1.4 table)
@pytest.mark.parametrize(
    "response, letter",
    [
        ("A", "A"),
        ("(b)", "B"),
        ("b.", "B"),
        ("a)", "A"),
        ("(a)", "A"),
        ("A.", "A"),
        ("A)", "A"),
        ("B) Closed", "B"),
        ("The answer is B", "B"),
        ("Option A", "A"),
        ("There is a cat", "A"),
        ("Both wings are open", "B"),
        ("I think it's (B).", ""),
        ("Closed", ""),
        ("", ""),
    ],
)
def test_lmms_eval_reader_reproduced(response, letter):
    assert mmvp.lmms_eval_letter(response) == letter


OPEN_CLOSED = ("Open", "Closed")


@pytest.mark.parametrize(
    "response, position",
    [
        ("A", 0),
        ("(b)", 1),
        ("b.", 1),
        ("a)", 0),
        ("(a)", 0),
        ("A.", 0),
        ("A)", 0),
        ("(B).", 1),
        ("b)", 1),
        ("B) Closed", 1),
        ("A. Open", 0),
        ("The answer is B", 1),
        ("The correct answer is (b).", 1),
        ("Option A", 0),
        ("Option B", 1),
        ("answer: a", 0),
        ("I think it's (B).", 1),
        ("Closed", 1),
        ("The wings are open.", 0),
        # lmms-eval's false positives and misses, read correctly or left unread
        ("There is a cat", None),
        ("Both wings are open", 0),
        ("Both wings are closed", 1),
        ("The answer is a cat", None),
        ("", None),
        ("(c)", None),
        # ambiguous or negated: no guess
        ("Open or closed, hard to say", None),
        ("The wings are not open", None),
        ("(a) Open (b) Closed", None),
    ],
)
def test_our_reader(response, position):
    assert mmvp.read_choice(response, OPEN_CLOSED) == position


def test_our_reader_prefers_the_longer_overlapping_option():
    assert mmvp.read_choice("It is red and white.", ("Red", "Red and white")) == 1
    assert mmvp.read_choice("It is red.", ("Red", "Red and white")) == 0
    assert mmvp.read_choice("The one (right)", ("The one on the left", "The one (right)")) == 1


def test_pair_accuracy_needs_both_questions(tmp_path):
    rows = ROWS + "1,Q1?,(a) Yes (b) No,(a)\n2,Q1?,(a) Yes (b) No,(b)\n"
    questions = mmvp.read_questions(_csv(tmp_path, rows=rows))
    answers = index_answers(
        [
            {"question_id": 279, "text": "A"},
            {"question_id": 280, "text": "B"},
            {"question_id": 1, "text": "Yes"},
            {"question_id": 2, "text": "Yes"},
        ]
    )
    m = mmvp.score_mmvp(answers, questions)
    assert (m["score"], m["pairs_correct"], m["pairs"], m["question_accuracy"]) == (50.0, 1, 2, 75.0)
    assert m["per_question"]["2"] == {"correct": False, "read": "a", "answer": "b"}


def test_official_script_output_format_is_accepted(tmp_path):
    # MMVP's evaluate_mllm.py writes `response` instead of `text`
    questions = mmvp.read_questions(_csv(tmp_path))
    answers_path = tmp_path / "answers.jsonl"
    answers_path.write_text(
        json.dumps(
            {"question_id": 279, "prompt": "p", "answer": "(a)", "response": "The person is standing."}
        )
        + "\n"
        + json.dumps({"question_id": 280, "prompt": "p", "answer": "(b)", "response": "Sitting."})
        + "\n"
    )
    assert mmvp.score_answer_file(answers_path, questions)["score"] == 100.0


def test_official_gpt_grader_protocol(tmp_path, judge_server):
    # quirk 3: the verdict must be exactly "yes"/"no"; "Yes." is not a yes
    questions = mmvp.read_questions(_csv(tmp_path))
    replies = {"standing": "yes", "sitting": "Yes."}
    server = judge_server(
        lambda body: next(
            v for k, v in replies.items() if k in body["messages"][-1]["content"].split("answer:")[-1]
        )
    )
    judge = ChatJudge(JudgeConfig(server.url, "gpt-4-0314", temperature=0.2))
    answers = index_answers(
        [{"question_id": 279, "text": "standing"}, {"question_id": 280, "text": "sitting"}]
    )
    m = mmvp.score_mmvp(answers, questions, grader="judge", judge=judge)
    assert [m["per_question"][k]["correct"] for k in ("279", "280")] == [True, False]
    assert m["score"] == 0.0
    system, user = server.requests[0]["messages"]
    assert system == {"role": "system", "content": mmvp.OFFICIAL_JUDGE_SYSTEM}
    assert user["content"] == (
        "Given the following question Is the elderly person standing or sitting in the picture? (a) Standing "
        "(b) Sitting, the correct answer is (a). Does the following answer correctly answers the question, "
        "answer:standing?"
    )
    assert server.requests[0]["temperature"] == 0.2


@pytest.mark.parametrize(
    "reply, correct",
    [("yes", True), ("YES", True), ("yes\n", True), ("Yes.", False), (" yes", False), ("no", False)],
)
def test_official_verdict_rule(tmp_path, judge_server, reply, correct):
    question = mmvp.read_questions(_csv(tmp_path))[0]
    server = judge_server(lambda body: reply)
    assert mmvp.judge_correct(ChatJudge(JudgeConfig(server.url, "m")), question, "standing") is correct
