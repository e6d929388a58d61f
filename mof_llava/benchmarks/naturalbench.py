"""NaturalBench (NeurIPS 2024): natural adversarial samples, each two images x two questions whose
answers differ across the images, so a model that ignores the image cannot do better than chance.

File: the Hugging Face dataset BaiqiL/NaturalBench (split `train`, 1900 samples), one row per
sample with columns `Index, Source, Question_Type ("yes_no" | "multiple_choice"), Question_0,
Question_1, Image_0, Image_1, Image_0_Question_0, Image_1_Question_0, Image_0_Question_1,
Image_1_Question_1` (the answers: "Yes"/"No", or the option letters "A"/"B"); an early version
spelled the type column `Question Type`. Read from its parquet files (needs pyarrow) or from a
JSON Lines file with the same columns, an image being `{"bytes": <base64>}`, `{"path": ...}` or a
path (relative to the file).

Prompt (the official example.py): the question with the type's instruction appended, "Please
answer Yes or No." or "Please output the letter corresponding to the correct option.", directly
after the question text (`official`) or after a space as lmms-eval does (`lmms-eval`).

Scoring follows the official `extract_answer` / `get_scores`:
- an answer is read as yes/A or no/B by whichever of the two words ("yes"/"no", or "A"/"B")
  appears first as a whole word, case-insensitively; neither: unread (never correct);
- Acc: the share of the 4 question-image answers that are right; Q-Acc: of the 2 questions, the
  share right on both images; I-Acc: of the 2 images, the share with both questions right;
  G-Acc: the share of samples with all 4 right. The score is G-Acc, the paper's headline.

One difference, on purpose: the official `get_scores` does not read the answer columns; it takes
every sample's answers to be (q0 i0, q0 i1, q1 i0, q1 i1) = (yes/A, no/B, no/B, yes/A). Here each
answer is compared with its column; metrics count the samples whose columns are not in that
layout (`samples_off_official_layout`), on which the official scorer would grade differently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..released import check_unique, release_rows
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .registry import RUNNING, Benchmark, option
from .task import EvalQuestion, EvalTask

TYPES = ("yes_no", "multiple_choice")
INSTRUCTIONS = {
    "yes_no": "Please answer Yes or No.",
    "multiple_choice": "Please output the letter corresponding to the correct option.",
}
PROMPTS = ("official", "lmms-eval")
WORDS = {"yes_no": ("yes", "no"), "multiple_choice": ("A", "B")}  # (read as 1, read as 0)
# the four answers of a sample, in the official order: (question, image)
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))
OFFICIAL_LAYOUT = (1, 0, 0, 1)  # the answers get_scores assumes for CELLS
MAX_NEW_TOKENS = 128


class NaturalBenchDataError(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    base64: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class Sample:
    index: int | str
    kind: str  # "yes_no" or "multiple_choice"
    questions: tuple[str, str]
    images: tuple[ImageRef, ImageRef]
    answers: tuple[int, int, int, int]  # per CELLS: 1 = yes/A, 0 = no/B
    source: str | None
    where: str  # "file:line" or "file row N", for messages

    def question_id(self, question: int, image: int) -> str:
        return f"{self.index}_q{question}_i{image}"


def _cell(row: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in row or row[name] is None:
        raise NaturalBenchDataError(f"{where}: missing column {name!r}")
    return row[name]


def _image(value: Any, base: Path, where: str) -> ImageRef:
    import base64

    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)):
            return ImageRef(base64=base64.b64encode(data).decode("ascii"))
        if isinstance(data, str) and data:
            return ImageRef(base64=data)
        value = path
    if isinstance(value, str) and value:
        return ImageRef(path=base / value)
    raise NaturalBenchDataError(f"{where}: an image must be {{'bytes': ...}}, {{'path': ...}} or a path")


def _gold(value: Any, kind: str, where: str) -> int:
    text = str(value).strip().lower()
    one, zero = (w.lower() for w in WORDS[kind])
    if text not in (one, zero):
        raise NaturalBenchDataError(
            f"{where}: a {kind} answer must be {WORDS[kind][0]!r} or {WORDS[kind][1]!r}, got {value!r}"
        )
    return 1 if text == one else 0


def sample_from_row(row: Mapping[str, Any], base: Path, where: str) -> Sample:
    kind = row.get("Question_Type", row.get("Question Type"))
    if kind not in TYPES:
        raise NaturalBenchDataError(f"{where}: Question_Type must be one of {list(TYPES)}, got {kind!r}")
    answers = tuple(
        _gold(_cell(row, f"Image_{i}_Question_{q}", where), kind, f"{where} Image_{i}_Question_{q}")
        for q, i in CELLS
    )
    return Sample(
        index=_cell(row, "Index", where),
        kind=kind,
        questions=(str(_cell(row, "Question_0", where)), str(_cell(row, "Question_1", where))),
        images=tuple(_image(_cell(row, f"Image_{i}", where), base, f"{where} Image_{i}") for i in (0, 1)),
        answers=answers,
        source=row.get("Source"),
        where=where,
    )


def _files(path: Path) -> list[Path]:
    return sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]


def read_samples(path: str | Path) -> list[Sample]:
    base, rows = release_rows(path, _files, NaturalBenchDataError, "NaturalBench", "*.parquet or one .jsonl")
    samples = [sample_from_row(row, base, where) for where, row in rows]
    if not samples:
        raise NaturalBenchDataError(f"{path}: no samples")
    check_unique([(s.index, s.where) for s in samples], "Index", NaturalBenchDataError)
    return samples


def question_text(sample: Sample, question: int, prompt: str = "official") -> str:
    if prompt not in PROMPTS:
        raise ValueError(f"unknown NaturalBench prompt {prompt!r}; choose one of {list(PROMPTS)}")
    joiner = "" if prompt == "official" else " "
    return f"{sample.questions[question]}{joiner}{INSTRUCTIONS[sample.kind]}"


# ---------------------------------------------------------------------------------------------
# Scoring


def read_answer(text: str, kind: str) -> int:
    """1 (yes / A), 0 (no / B) or -1 (neither): the word that appears first, as a whole word."""
    positions = []
    for word in WORDS[kind]:
        match = re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE)
        positions.append(match.start() if match else None)
    first, second = positions
    if first is None and second is None:
        return -1
    if first is not None and (second is None or first < second):
        return 1
    return 0


def sample_scores(correct: Sequence[bool]) -> dict[str, float]:
    """A sample's shares right (CELLS order): cells, questions on both images, images on both
    questions, all four."""
    q = [correct[0] and correct[1], correct[2] and correct[3]]
    i = [correct[0] and correct[2], correct[1] and correct[3]]
    return {"acc": sum(correct) / 4, "q_acc": sum(q) / 2, "i_acc": sum(i) / 2, "g_acc": float(all(correct))}


METRICS = ("acc", "q_acc", "i_acc", "g_acc")


def score_naturalbench(
    answers: Mapping[str, Mapping[str, Any]],
    samples: Sequence[Sample],
    answers_path: Path | str = "<answers>",
) -> dict:
    from . import intervals

    ids = [s.question_id(q, i) for s in samples for q, i in CELLS]
    check_coverage(answers, ids, answers_path, "the NaturalBench file")
    per_sample, unread = [], 0
    by_type: dict[str, list[dict[str, float]]] = {}
    for s in samples:
        read = [
            read_answer(answer_text(answers[answer_key(s.question_id(q, i))], answers_path), s.kind)
            for q, i in CELLS
        ]
        unread += read.count(-1)
        scores = sample_scores([r == g for r, g in zip(read, s.answers)])
        per_sample.append(scores)
        by_type.setdefault(s.kind, []).append(scores)

    def means(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
        return {m: 100.0 * sum(r[m] for r in rows) / len(rows) for m in METRICS}

    overall = means(per_sample)
    cis = {f"{m}_ci95": intervals.mean_interval([r[m] for r in per_sample]) for m in METRICS}
    return {
        "benchmark": "naturalbench",
        "score": overall["g_acc"],
        "metric": "G-Acc: samples with all four answers right (percent)",
        **overall,
        "samples": len(samples),
        "questions": len(ids),  # question-image pairs answered
        "unread": unread,
        "samples_off_official_layout": sum(s.answers != OFFICIAL_LAYOUT for s in samples),
        "per_type": {k: {**means(v), "samples": len(v)} for k, v in sorted(by_type.items())},
        "score_ci95": cis["g_acc_ci95"],
        **cis,
        "bootstrap": intervals.describe("sample (2 images x 2 questions)"),
        # per sample G-Acc (0/1), the unit a paired bootstrap between two models resamples
        "per_sample": {str(s.index): r["g_acc"] for s, r in zip(samples, per_sample)},
    }


def score_answer_file(answers_path: str | Path, samples: Sequence[Sample]) -> dict:
    return score_naturalbench(load_answer_index(answers_path), samples, answers_path)


# ---------------------------------------------------------------------------------------------
# Running and registration (mof-llava eval naturalbench)


def build_task(
    data: str | Path,
    prompt: str = "official",
    template: str = "vicuna_v1",
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> EvalTask:
    samples = read_samples(data)
    questions = []
    for s in samples:
        for q, i in CELLS:
            image = s.images[i]
            questions.append(
                EvalQuestion(
                    s.question_id(q, i),
                    question_text(s, q, prompt),
                    image_path=image.path,
                    image_base64=image.base64,
                )
            )
    return EvalTask(
        benchmark="naturalbench",
        questions=questions,
        template=template,
        max_new_tokens=max_new_tokens,
        settings={"prompt": prompt, "parser": "naturalbench_extract_answer"},
        data_files={"data": str(data)},
        score=lambda path: score_answer_file(path, samples),
    )


@dataclass(frozen=True, kw_only=True)
class NaturalBenchOptions:
    data: Path = option(
        help="the dataset: its parquet file(s) or folder, or a JSON Lines file with its columns"
    )
    prompt: str = option(
        "official",
        "instruction after the question: official (example.py: appended directly) or lmms-eval (after a space)",
        choices=PROMPTS,
        actions=RUNNING,
    )


def _task(o: NaturalBenchOptions, max_new_tokens: int | None) -> EvalTask:
    return build_task(o.data, o.prompt, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS)


def _score(o: NaturalBenchOptions, answers: Path) -> dict:
    return score_answer_file(answers, read_samples(o.data))


BENCHMARK = Benchmark(
    name="naturalbench",
    description="NaturalBench: 2 images x 2 questions per sample; Acc, Q-Acc, I-Acc, G-Acc (score)",
    options=NaturalBenchOptions,
    score=_score,
    build_task=_task,
)
