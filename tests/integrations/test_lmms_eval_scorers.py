"""Our scorers against lmms-eval's own task code (POPE and MMVP, whose scoring runs offline) on the same
answers: where they agree, and the differences docs/evaluation.md explains ("lmms-eval").
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="the lmms-eval extra (scripts/setup.sh installs it)")

POPE = Path(__file__).resolve().parents[1] / "fixtures" / "pope"
LMMS_POPE_METRICS = ("accuracy", "precision", "recall", "f1_score", "yes_ratio")


def _lmms_pope(docs: list[dict], responses: list[str]) -> dict[str, float]:
    """lmms-eval's POPE metrics (fractions) of `responses`, through its process_results and aggregations."""
    from lmms_eval.tasks.pope import utils

    per_doc = [utils.pope_process_results(doc, [text]) for doc, text in zip(docs, responses)]
    return {
        m: getattr(utils, f"pope_aggregate_{m}")([r[f"pope_{m}"] for r in per_doc]) for m in LMMS_POPE_METRICS
    }


def _pope_docs(pairs) -> list[dict]:
    """lmms-lab/POPE's fields of each annotated question (the image is not read when scoring)."""
    return [{"question_id": str(q.question_id), "question": a.text, "answer": a.label} for q, a in pairs]


def test_pope_agrees_on_llavas_released_answers():
    """LLaVA-1.5-13B's answers (all "Yes"/"No"): accuracy, precision, recall and F1 agree per split;
    lmms-eval's "yes ratio" is the share of "yes" in the ground truth, ours the share answered "yes"."""
    from mof_llava.benchmarks.answers import answer_text, load_answer_index
    from mof_llava.benchmarks.pope import load_pope, score_pope

    data = load_pope(POPE / "coco", POPE / "llava_pope_test.jsonl")
    answers = load_answer_index(POPE / "answers" / "llava-v1.5-13b.jsonl")
    ours = score_pope(answers, data)["splits"]
    for split, pairs in data.labels.items():
        responses = [answer_text(answers[str(q.question_id)], "answers") for q, _ in pairs]
        theirs = _lmms_pope(_pope_docs(pairs), responses)
        for metric, our_key in [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall")]:
            assert 100 * theirs[metric] == pytest.approx(ours[split][our_key]), (split, metric)
        assert 100 * theirs["f1_score"] == pytest.approx(ours[split]["f1"]), split
        labels = [a.label for _, a in pairs]
        assert theirs["yes_ratio"] == pytest.approx(labels.count("yes") / len(labels))
        said_yes = [text.lower() == "yes" for text in responses]
        assert ours[split]["yes_ratio"] == pytest.approx(100 * sum(said_yes) / len(said_yes))


def test_pope_differs_on_sentences():
    """A right answer in a sentence: LLaVA's parser (ours) reads it, lmms-eval's exact match counts it
    wrong and leaves it out of precision and recall."""
    from mof_llava.benchmarks.pope import confusion, llava_yes_no, rates

    docs = [{"question_id": str(i), "question": "Is there a dog?", "answer": a} for i, a in enumerate("yyn")]
    for doc in docs:
        doc["answer"] = {"y": "yes", "n": "no"}[doc["answer"]]
    responses = ["Yes, there is a dog.", "yes", "No, there is no dog."]
    theirs = _lmms_pope(docs, responses)
    ours = rates(*confusion([llava_yes_no(r) for r in responses], [d["answer"] for d in docs]))
    assert ours["accuracy"] == 1.0 and ours["f1"] == 1.0
    assert theirs["accuracy"] == pytest.approx(1 / 3)  # only the bare "yes" is right
    assert theirs["precision"] == 1.0 and theirs["recall"] == 1.0  # the sentences are not counted at all


# (response, the letter it picks): answers lmms-eval's MMVP reader and ours read alike, then apart
MMVP_ALIKE = [
    ("A", "a"),
    ("(b)", "b"),
    ("B. Closed", "b"),
    ("The answer is A", "a"),
    ("Option B", "b"),
    ("(B).", "b"),
    ("", "a"),
]
MMVP_APART = [  # (response, what lmms-eval reads, what ours reads)
    ("There is a cat", "A", None),  # the article "a" read as option A
    ("Both wings are open", "B", "a"),  # lmms-eval: the first letter; ours: the option it names
]


def _mmvp_question(index: int, answer: str):
    from mof_llava.benchmarks.mmvp import MMVPQuestion

    return MMVPQuestion(index, "Are the wings open?", ("Open", "Closed"), "(a) Open (b) Closed", answer)


def _lmms_mmvp_doc(q) -> dict:
    return {
        "Index": q.index,
        "Question": q.question,
        "Options": q.options_text,
        "Correct Answer": f"({q.answer})",
    }


def test_mmvp_lmms_eval_grader_is_lmms_evals_reader():
    from lmms_eval.tasks.mmvp import utils

    from mof_llava.benchmarks.mmvp import grade

    cases = list(MMVP_ALIKE) + [(r, "a") for r, _, _ in MMVP_APART] + [(r, "b") for r, _, _ in MMVP_APART]
    for i, (response, answer) in enumerate(cases, start=1):
        q = _mmvp_question(i, answer)
        theirs = utils.mmvp_process_results(_lmms_mmvp_doc(q), [response])["mmvp_accuracy"]
        ok, letter = grade(q, response, grader="lmms-eval")
        assert (ok, (letter or "").upper()) == (theirs["is_correct"], theirs["pred_letter"]), response


def test_mmvp_default_grader_differs_only_where_documented():
    from lmms_eval.tasks.mmvp import utils

    from mof_llava.benchmarks.mmvp import read_choice

    options = ("Open", "Closed")
    for response, letter in MMVP_ALIKE[:-1]:
        assert read_choice(response, options) == "ab".index(letter)
    assert read_choice("", options) is None and utils._extract_answer_letter("") == ""
    for response, lmms_reads, ours_reads in MMVP_APART:
        assert utils._extract_answer_letter(response) == lmms_reads
        position = read_choice(response, options)
        assert (None if position is None else "ab"[position]) == ours_reads, response


def test_mmvp_prompt_is_lmms_evals():
    """Our default MMVP prompt ("llava") is lmms-eval's doc_to_text with its default post_prompt."""
    from lmms_eval.tasks.mmvp import utils
    from lmms_eval.utils import load_yaml_config

    from mof_llava.benchmarks.mmvp import question_text

    template = load_yaml_config(str(Path(utils.__file__).parent / "_default_template_yaml"), mode="simple")
    kwargs = template["lmms_eval_specific_kwargs"]["default"]
    q = _mmvp_question(1, "a")
    assert utils.mmvp_doc_to_text(_lmms_mmvp_doc(q), kwargs) == question_text(q, "llava")
