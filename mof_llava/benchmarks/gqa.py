"""GQA testdev-balanced: short-answer questions about scene understanding.

Files:
- the official `testdev_balanced_questions.json` (GQA questions1.2): a JSON object keyed by
  question id (a string), each with `question`, `answer`, `imageId`, `isBalanced`, `types`
  (`structural`, `semantic`), `semantic` (the program), `groups`;
- LLaVA's converted question list `llava_gqa_testdev_balanced.jsonl`:
  `{"question_id": "201307251", "image": "n161313.jpg", "text": "<question>\\n<short-answer instruction>"}`;
- images `images/<imageId>.jpg`.

Scoring follows LLaVA's pipeline: `scripts/convert_gqa_for_eval.py` turns each answer into
`text.rstrip('.').lower()` (nothing else: no whitespace, article or other punctuation removal)
and writes `testdev_balanced_predictions.json` (`[{"questionId", "prediction"}]`, which the
official GQA `eval.py` reads); the official script, in the form LLaVA uses for testdev (no scene
graphs or choices files), counts a question correct when the prediction equals the gold answer
exactly, over the questions with `isBalanced`. Accuracy is the reported number; binary/open
split on `types.structural == "query"`; the breakdowns per structural type, semantic type,
number of reasoning steps and question length, and the distribution score (chi-square between
gold and predicted answer counts per global group, /100, lower is better) are computed the way
that script computes them. Validity and plausibility need GQA's choices file, which testdev lacks
(the official script then prints 0.00); they are not reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..prompts import SHORT_ANSWER
from ..released import read_json_object
from .answers import answer_key, answer_text, load_answer_index, read_answers
from .registry import RUNNING, Benchmark, option
from .task import EvalQuestion, EvalTask

OFFICIAL_QUESTIONS = "testdev_balanced_questions.json"
LLAVA_QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
PREDICTIONS_FILE = "testdev_balanced_predictions.json"
MAX_NEW_TOKENS = 128


class GqaDataError(ValueError):
    pass


def llava_normalize(text: str) -> str:
    """LLaVA's GQA answer normalisation: trailing periods removed, lower-cased."""
    return text.rstrip(".").lower()


def read_official_questions(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise GqaDataError(f"{path}: GQA questions file not found")
    data = read_json_object(path, GqaDataError, "GQA's question file (a JSON object keyed by question id)")
    for qid, q in data.items():
        for field in ("question", "answer", "imageId", "isBalanced", "types"):
            if field not in q:
                raise GqaDataError(f"{path}: question {qid} has no {field!r} field")
    return data


@dataclass(frozen=True)
class LlavaQuestion:
    question_id: str
    image: str
    text: str


def read_llava_questions(path: str | Path) -> list[LlavaQuestion]:
    path = Path(path)
    out = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(LlavaQuestion(str(row["question_id"]), row["image"], row["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise GqaDataError(f"{path}:{lineno}: not a LLaVA question line ({err})") from None
        # caught here, not after hours of generation when the merge finds two answers to one id
        qid = out[-1].question_id
        if qid in first_line:
            raise GqaDataError(
                f"{path}:{lineno}: question_id {qid} already appears on line {first_line[qid]}"
            )
        first_line[qid] = lineno
    return out


def questions_from_official(questions: Mapping[str, Mapping[str, Any]]) -> list[LlavaQuestion]:
    """The prompts LLaVA's converted file holds, built from the official file (balanced questions)."""
    return [
        LlavaQuestion(qid, f"{q['imageId']}.jpg", f"{q['question']}\n{SHORT_ANSWER}")
        for qid, q in questions.items()
        if q["isBalanced"]
    ]


# ---------------------------------------------------------------------------------------------
# Scoring


def predictions(records: Sequence[Mapping[str, Any]], path: Path | str = "<answers>") -> list[dict[str, str]]:
    """What LLaVA's converter writes: one `{"questionId", "prediction"}` per answer, in file order."""
    return [
        {"questionId": str(r["question_id"]), "prediction": llava_normalize(answer_text(r, path))}
        for r in records
    ]


def write_predictions(answers_path: str | Path, out_path: str | Path) -> None:
    """Write `testdev_balanced_predictions.json` for GQA's official eval.py."""
    write_json_atomic(out_path, predictions(read_answers(answers_path), answers_path))


def reasoning_steps(question: Mapping[str, Any]) -> int:
    """Program length without the existence / name-query / name-choice operations (GQA eval.py)."""
    skip = ("exist", "query: name", "choose name")
    return sum(
        not any(s in f"{op['operation']}: {op['argument']}" for s in skip)
        for op in question.get("semantic", [])
    )


def distribution_score(
    gold: Mapping[str, Mapping[str, int]], predicted: Mapping[str, Mapping[str, int]]
) -> float:
    """Chi-square of predicted vs gold answer counts per global group, weighted by group size."""
    total_score, total_count = 0.0, 0
    for group, gold_counts in gold.items():
        score = sum((predicted.get(group, {}).get(ans, 0) - n) ** 2 / n for ans, n in gold_counts.items())
        count = sum(gold_counts.values())
        total_score += score * count
        total_count += count
    return total_score / total_count if total_count else 0.0


def _mean(values: Sequence[bool]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def _breakdown(groups: Mapping[Any, Sequence[bool]]) -> dict[str, dict[str, float | int]]:
    return {
        str(k): {"accuracy": _mean(v), "n": len(v)} for k, v in sorted(groups.items(), key=lambda kv: kv[0])
    }


def score_gqa(
    answers: Mapping[str, Mapping[str, Any]],
    questions: Mapping[str, Mapping[str, Any]],
    answers_path: Path | str = "<answers>",
) -> dict:
    unknown = [k for k in answers if k not in questions]
    if unknown:
        raise GqaDataError(
            f"{answers_path}: {len(unknown)} answers have question ids not in the GQA questions file "
            f"(first: {', '.join(unknown[:5])})"
        )
    balanced = [qid for qid, q in questions.items() if q["isBalanced"]]
    missing = [qid for qid in balanced if answer_key(qid) not in answers]
    if missing:
        raise GqaDataError(
            f"{answers_path}: {len(missing)} of {len(balanced)} balanced questions have no answer "
            f"(first: {', '.join(missing[:5])})"
        )
    correct_all: list[bool] = []
    per_question: dict[str, bool] = {}  # what the paired bootstrap of `tables --baseline` resamples
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_structural: dict[str, list[bool]] = defaultdict(list)
    by_semantic: dict[str, list[bool]] = defaultdict(list)
    by_steps: dict[int, list[bool]] = defaultdict(list)
    by_length: dict[int, list[bool]] = defaultdict(list)
    gold_dist: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pred_dist: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for qid in balanced:
        q = questions[qid]
        prediction = llava_normalize(answer_text(answers[answer_key(qid)], answers_path))
        correct = prediction == q["answer"]
        correct_all.append(correct)
        per_question[answer_key(qid)] = correct
        structural = q["types"]["structural"]
        by_kind["open" if structural == "query" else "binary"].append(correct)
        by_structural[structural].append(correct)
        by_semantic[q["types"]["semantic"]].append(correct)
        by_steps[reasoning_steps(q)].append(correct)
        by_length[len(q["question"].split())].append(correct)
        group = (q.get("groups") or {}).get("global")
        if group is not None:
            gold_dist[group][q["answer"]] += 1
            pred_dist[group][prediction] += 1
    accuracy = _mean(correct_all)
    return {
        "benchmark": "gqa",
        "score": accuracy,
        "metric": "accuracy on testdev-balanced (percent)",
        "accuracy": accuracy,
        "binary": _mean(by_kind["binary"]),
        "open": _mean(by_kind["open"]),
        "n": len(correct_all),
        "correct": sum(correct_all),
        "distribution": distribution_score(gold_dist, pred_dist) / 100,
        "per_structural_type": _breakdown(by_structural),
        "per_semantic_type": _breakdown(by_semantic),
        "per_steps": _breakdown(by_steps),
        "per_question_length": _breakdown(by_length),
        **_intervals(correct_all, by_kind),
        "per_question": per_question,
    }


def _intervals(correct: Sequence[bool], by_kind: Mapping[str, Sequence[bool]]) -> dict[str, Any]:
    """Bootstrap intervals of accuracy (and of binary / open accuracy), resampling questions."""
    from . import intervals

    accuracy = intervals.mean_interval(correct)
    kinds = {f"{k}_ci95": intervals.mean_interval(by_kind[k]) for k in ("binary", "open") if by_kind[k]}
    return {
        "score_ci95": accuracy,
        "accuracy_ci95": accuracy,
        **kinds,
        "bootstrap": intervals.describe("question"),
    }


def score_answer_file(answers_path: str | Path, questions: Mapping[str, Mapping[str, Any]]) -> dict:
    return score_gqa(load_answer_index(answers_path), questions, answers_path)


# ---------------------------------------------------------------------------------------------
# Files and running


@dataclass(frozen=True)
class GqaPaths:
    official: Path | None  # testdev_balanced_questions.json (gold answers)
    questions: Path | None  # LLaVA's converted question list
    images: Path | None


def find_official(data: str | Path) -> Path:
    """`data` is the official questions file, or a folder holding it (directly or in `data/`)."""
    data = Path(data)
    if data.is_file():
        return data
    for candidate in (data / OFFICIAL_QUESTIONS, data / "data" / OFFICIAL_QUESTIONS):
        if candidate.is_file():
            return candidate
    raise GqaDataError(f"{data}: no {OFFICIAL_QUESTIONS} here or in {data / 'data'}")


def resolve_paths(
    data: str | Path | None, questions: str | Path | None = None, images: str | Path | None = None
) -> GqaPaths:
    """Fill in LLaVA's layout (`llava_gqa_testdev_balanced.jsonl`, `data/images/`,
    `data/testdev_balanced_questions.json` under `data`) where not given explicitly."""
    root = Path(data) if data is not None else None
    official = None
    if root is not None:
        try:
            official = find_official(root)
        except GqaDataError:
            if questions is None:
                raise
    if root is not None and root.is_dir():
        if questions is None and (root / LLAVA_QUESTIONS).is_file():
            questions = root / LLAVA_QUESTIONS
        if images is None:
            images = next((p for p in (root / "images", root / "data" / "images") if p.is_dir()), None)
    return GqaPaths(official, Path(questions) if questions else None, Path(images) if images else None)


def build_task(
    paths: GqaPaths, template: str = "vicuna_v1", max_new_tokens: int = MAX_NEW_TOKENS
) -> EvalTask:
    gold = read_official_questions(paths.official) if paths.official else None
    if paths.questions is not None:
        listed = read_llava_questions(paths.questions)
    elif gold is not None:
        listed = questions_from_official(gold)
    else:
        raise GqaDataError("GQA needs the official questions file or LLaVA's question list")
    if paths.images is None:
        raise GqaDataError("GQA needs the image folder (--images, or images/ inside --data)")
    files = {"images": str(paths.images)}
    if paths.official:
        files["gold"] = str(paths.official)
    if paths.questions:
        files["questions"] = str(paths.questions)

    def score(answers_path: Path) -> dict:
        if gold is None:
            return {"benchmark": "gqa", "score": None, "note": f"no {OFFICIAL_QUESTIONS} given: not scored"}
        return score_answer_file(answers_path, gold)

    return EvalTask(
        benchmark="gqa",
        questions=[EvalQuestion(q.question_id, q.text, image_path=paths.images / q.image) for q in listed],
        template=template,
        max_new_tokens=max_new_tokens,
        settings={"normalisation": "llava (rstrip('.').lower())"},
        data_files=files,
        score=score,
        exports={PREDICTIONS_FILE: write_predictions},
    )


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval gqa)


@dataclass(frozen=True, kw_only=True)
class GqaOptions:
    data: Path | None = option(None, "GQA folder in LLaVA's layout, or testdev_balanced_questions.json")
    questions: Path | None = option(None, "LLaVA's llava_gqa_testdev_balanced.jsonl", actions=RUNNING)
    images: Path | None = option(None, "GQA image folder", actions=RUNNING)
    predictions: Path | None = option(
        None, "also write testdev_balanced_predictions.json here", actions=frozenset({"score"})
    )


def _task(o: GqaOptions, max_new_tokens: int | None) -> EvalTask:
    paths = resolve_paths(o.data, o.questions, o.images)
    return build_task(paths, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS)


def _score(o: GqaOptions, answers: Path) -> dict:
    if o.data is None:
        raise SystemExit("scoring GQA needs --data (testdev_balanced_questions.json or its folder)")
    return score_answer_file(answers, read_official_questions(find_official(o.data)))


def _after_score(o: GqaOptions, answers: Path, metrics: dict) -> None:
    if o.predictions:
        write_predictions(answers, o.predictions)


BENCHMARK = Benchmark(
    name="gqa",
    description="GQA testdev-balanced: short answers; accuracy",
    options=GqaOptions,
    score=_score,
    build_task=_task,
    after_score=_after_score,
    export=lambda answers, data, output: write_predictions(answers, output),
)
