"""CV-Bench (Cambrian-1's vision-centric benchmark): 2638 multiple-choice questions; 2D (Count and
Relation, on ADE20K and COCO images) and 3D (Depth and Distance, on Omni3D images).

Files (Hugging Face nyu-visionx/CV-Bench): `test_2d.jsonl`, `test_3d.jsonl` and the `img/` folder
their `filename` names, or the `test*.parquet` files with the pictures inside (needs pyarrow).
Columns used: `idx` (global index), `type` ("2D"/"3D"), `task`, `prompt` (the question and its
lettered choices, pre-formatted), `answer` ("(A)" ...), `source` ("ADE20K", "COCO", "Omni3D"),
`filename` or `image`.

Prompt (Cambrian's evaluation): the `prompt` column, a newline, then the letter instruction.

Scoring (Cambrian's cv-bench evaluation script):
- an answer containing "(" is read as the first "(X)" with X an upper-case letter; any other
  answer as "(" + its first character + ")" (so "B" and "B. left" read B, "b" and "The answer
  is B" do not); an answer with "(" but no "(X)", or an empty one, is unread (the reference
  reuses the previous answer's letter there);
- accuracy per source; score = ½·(mean(acc_ADE20K, acc_COCO) + acc_Omni3D), 2D = the mean of
  ADE20K and COCO, 3D = Omni3D; also per task. Without all three sources there is no score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..prompts import LETTER_ANSWER
from ..released import check_unique, release_rows
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .registry import Benchmark, option
from .task import EvalQuestion, EvalTask

if TYPE_CHECKING:
    import numpy as np

    from . import intervals

SOURCES = ("ADE20K", "COCO", "Omni3D")
ANNOTATION_FILES = ("test_2d.jsonl", "test_3d.jsonl")
MAX_NEW_TOKENS = 128


class CVBenchDataError(ValueError):
    pass


@dataclass(frozen=True)
class CVBenchQuestion:
    idx: int
    task: str
    prompt: str
    answer: str  # "(A)" ...
    source: str
    image_path: Path | None
    image_base64: str | None
    where: str


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    if row.get(name) is None:
        raise CVBenchDataError(f"{where}: missing field {name!r}")
    return row[name]


def _question(row: Mapping[str, Any], base: Path, where: str) -> CVBenchQuestion:
    import base64

    answer = str(_field(row, "answer", where))
    if not re.fullmatch(r"\([A-Z]\)", answer):
        raise CVBenchDataError(f"{where}: answer must look like '(A)', got {answer!r}")
    source = _field(row, "source", where)
    if source not in SOURCES:
        raise CVBenchDataError(f"{where}: source must be one of {list(SOURCES)}, got {source!r}")
    image = row.get("image")
    data = image.get("bytes") if isinstance(image, Mapping) else None
    encoded = base64.b64encode(data).decode("ascii") if isinstance(data, (bytes, bytearray)) else None
    path = None if encoded else base / str(_field(row, "filename", where))
    return CVBenchQuestion(
        int(_field(row, "idx", where)),
        str(_field(row, "task", where)),
        str(_field(row, "prompt", where)),
        answer,
        source,
        path,
        encoded,
        where,
    )


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = [path / n for n in ANNOTATION_FILES if (path / n).is_file()]
    return found or sorted(path.glob("test*.parquet"))


def read_questions(path: str | Path) -> list[CVBenchQuestion]:
    expected = f"{', '.join(ANNOTATION_FILES)} or test*.parquet"
    base, rows = release_rows(path, _files, CVBenchDataError, "CV-Bench", expected)
    questions = [_question(row, base, where) for where, row in rows]
    check_unique([(q.idx, q.where) for q in questions], "idx", CVBenchDataError)
    return questions


# ---------------------------------------------------------------------------------------------
# Scoring


def read_letter(text: str) -> str | None:
    """Cambrian's reading: the first "(X)" if the answer has a "(", else its first character."""
    if "(" in text:
        match = re.search(r"\(([A-Z])\)", text)
        return f"({match.group(1)})" if match else None
    return f"({text[0]})" if text else None


def combined(accuracy: Mapping[str, float]) -> float | None:
    """½·(mean(ADE20K, COCO) + Omni3D); None without all three sources."""
    if any(s not in accuracy for s in SOURCES):
        return None
    return ((accuracy["ADE20K"] + accuracy["COCO"]) / 2 + accuracy["Omni3D"]) / 2


def composite(strata: Sequence[np.ndarray]) -> np.ndarray:
    """`combined` of each resample: the strata are (resamples, n) correctness of ADE20K, COCO and
    Omni3D, in that order (an `intervals.Statistic`)."""
    ade, coco, omni = (100.0 * d.mean(axis=1) for d in strata)
    return ((ade + coco) / 2 + omni) / 2


def _intervals(by_source: Mapping[str, Sequence[bool]]) -> dict[str, Any]:
    """Interval of the score, resampling questions within each source (the sources are fixed in
    size and weighted by the formula, not by their number of questions)."""
    import numpy as np

    from . import intervals

    if any(s not in by_source for s in SOURCES):
        return {}
    drawn = intervals.draw([np.asarray(by_source[s], dtype=float) for s in SOURCES])
    ci = intervals.percentile_interval(composite(drawn))
    return {"score_ci95": ci, "bootstrap": intervals.describe("question, within each source")}


def paired_units(metrics: Mapping[str, Any]) -> intervals.Units | None:
    """The questions of each source as correctness, with `composite` as their statistic; None for
    metrics written before `per_question` was kept, or without all three sources (no score)."""
    from . import intervals

    kept = metrics.get("per_question")
    if not isinstance(kept, dict):
        return None
    strata: dict[str, dict[str, bool]] = {s: {} for s in SOURCES}
    for idx, entry in kept.items():
        strata[entry["source"]][idx] = bool(entry["correct"])
    if not all(strata.values()):
        return None
    return intervals.Units.of(strata, composite, dtype=bool)


def score_cvbench(
    answers: Mapping[str, Mapping[str, Any]],
    questions: Sequence[CVBenchQuestion],
    answers_path: Path | str = "<answers>",
) -> dict:
    check_coverage(answers, [q.idx for q in questions], answers_path, "the CV-Bench questions")
    by_source: dict[str, list[bool]] = {}
    by_task: dict[str, list[bool]] = {}
    per_question: dict[str, dict[str, Any]] = {}  # what the paired bootstrap of `tables --baseline` resamples
    unread = 0
    for q in questions:
        letter = read_letter(answer_text(answers[answer_key(q.idx)], answers_path))
        unread += letter is None
        by_source.setdefault(q.source, []).append(letter == q.answer)
        by_task.setdefault(q.task, []).append(letter == q.answer)
        per_question[answer_key(q.idx)] = {"correct": letter == q.answer, "source": q.source, "task": q.task}
    accuracy = {s: 100.0 * sum(v) / len(v) for s, v in by_source.items()}
    score = combined(accuracy)
    two_d = [accuracy[s] for s in ("ADE20K", "COCO") if s in accuracy]
    return {
        "benchmark": "cvbench",
        "score": score,
        "metric": "½·(mean(ADE20K, COCO) + Omni3D) accuracy (percent)",
        "accuracy_2d": sum(two_d) / 2 if len(two_d) == 2 else None,
        "accuracy_3d": accuracy.get("Omni3D"),
        "per_source": {
            s: {"accuracy": accuracy[s], "n": len(by_source[s])} for s in SOURCES if s in accuracy
        },
        "per_task": {
            t: {"accuracy": 100.0 * sum(v) / len(v), "n": len(v)} for t, v in sorted(by_task.items())
        },
        "questions": len(questions),
        "unread": unread,
        **({} if score is not None else {"note": f"no score without questions from all of {list(SOURCES)}"}),
        **_intervals(by_source),
        "per_question": per_question,
    }


def score_answer_file(answers_path: str | Path, questions: Sequence[CVBenchQuestion]) -> dict:
    return score_cvbench(load_answer_index(answers_path), questions, answers_path)


# ---------------------------------------------------------------------------------------------
# Running and registration (mof-llava eval cvbench)


def build_task(
    data: str | Path, template: str = "vicuna_v1", max_new_tokens: int = MAX_NEW_TOKENS
) -> EvalTask:
    questions = read_questions(data)
    return EvalTask(
        benchmark="cvbench",
        questions=[
            EvalQuestion(
                q.idx, f"{q.prompt}\n{LETTER_ANSWER}", image_path=q.image_path, image_base64=q.image_base64
            )
            for q in questions
        ],
        template=template,
        max_new_tokens=max_new_tokens,
        settings={"parser": "cambrian_cvbench"},
        data_files={"data": str(data)},
        score=lambda path: score_answer_file(path, questions),
    )


@dataclass(frozen=True, kw_only=True)
class CVBenchOptions:
    data: Path = option(
        help="folder with test_2d.jsonl, test_3d.jsonl and img/ (or test*.parquet), or one such file"
    )


def _task(o: CVBenchOptions, max_new_tokens: int | None) -> EvalTask:
    return build_task(o.data, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS)


def _score(o: CVBenchOptions, answers: Path) -> dict:
    return score_answer_file(answers, read_questions(o.data))


BENCHMARK = Benchmark(
    name="cvbench",
    description="CV-Bench: 2D/3D vision-centric multiple choice; ½·(mean(ADE20K, COCO) + Omni3D)",
    options=CVBenchOptions,
    score=_score,
    build_task=_task,
)
