"""MMVP: 150 pairs of "CLIP-blind" images, one question per image with two options; a pair counts
only when both of its questions are answered correctly (pair accuracy; guessing gives 25%).

Files (Hugging Face `MMVP/MMVP`): `Questions.csv` with columns `Index,Question,Options,Correct
Answer` (some copies spell the first header `lndex`), options as one string `"(a) Open (b)
Closed"`, the answer as `"(a)"`/`"(b)"`; images `MMVP Images/<Index>.jpg`. Questions 2k-1 and 2k
form pair k. We take image ids and pairs from the `Index` column (the official script uses the
row position, which only agrees while the rows stay in order).

Labels: pairs (99, 100) and (279, 280) have their answers swapped in the released file (MMVP
issues #14/#30). `labels="original"` (default) scores against the file as released, which is
what the paper's numbers used; `labels="corrected"` uses the fixed answers.

Prompts (`PROMPTS`): `llava` (default) is LLaVA-1.5's multiple-choice convention applied to MMVP
(options re-lettered "A. X\nB. Y", the letter instruction, vicuna_v1, padded pictures, 128 tokens),
the form of the MMVP issue #8 reproduction and of lmms-eval; it is not the paper's protocol.
`official` is the MMVP repo's `question + " " + options` with llava_v1 and, like that script,
pictures resized and centre-cropped instead of padded to a square (the script also samples at
temperature 0.2 and grades with GPT-4; we decode greedily), `cambrian` is Cambrian's form.
Why `llava` is the default: it is greedy and read without an LLM, so a score is reproducible
offline; the paper's own numbers were made with sampling and gpt-4-0314 and have not been
reproduced by others (MMVP issues #9, #27). docs/evaluation.md has the table of the variants.

Graders:
- `read_choice` (default): our reader of the option an answer picks; it accepts letters in their
  usual dress ("B", "(b)", "b)", "(B).", "Option B", "The answer is B", "A. Open") and answers that
  name exactly one option's text, and refuses to guess otherwise: unlike lmms-eval's reader,
  "There is a cat" is not option A and "Both wings are closed" is not option B by its first letter.
- `lmms_eval_letter`: lmms-eval's MMVP letter reader, false positives included, for comparison
  with numbers made by lmms-eval.
- a judge: the official GPT grader's protocol (its system and user messages; the verdict must be
  exactly "yes" or "no") sent to an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..prompts import LETTER_ANSWER, lettered_options
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .judge import ChatJudge
from .registry import RUNNING, Benchmark, JudgeOptions, judge_group, make_judge, option
from .task import EvalQuestion, EvalTask

QUESTIONS_CSV = "Questions.csv"
IMAGE_DIR = "MMVP Images"
LABEL_SETS = ("original", "corrected")
# The corrected answers of the two mislabelled pairs.
CORRECTED_ANSWERS = {99: "b", 100: "a", 279: "b", 280: "a"}


class MMVPDataError(ValueError):
    pass


@dataclass(frozen=True)
class MMVPQuestion:
    index: int
    question: str
    options: tuple[str, ...]
    options_text: str  # as written in the CSV: "(a) Open (b) Closed"
    answer: str  # option letter, lower case: "a" or "b"

    @property
    def pair(self) -> int:
        return (self.index - 1) // 2

    @property
    def answer_position(self) -> int:
        return ord(self.answer) - ord("a")


# ---------------------------------------------------------------------------------------------
# Reading the CSV


def parse_options(text: str) -> tuple[str, ...]:
    """`"(a) X (b) Y"` -> `("X", "Y")`. Markers are found in order, so an option that contains
    parentheses, e.g. "The one (right)", stays whole."""
    markers = []
    start = 0
    for letter in "abcdefgh":
        position = text.find(f"({letter})", start)
        if position < 0:
            break
        markers.append(position)
        start = position + 3
    if len(markers) < 2 or text[: markers[0]].strip():
        raise MMVPDataError(f"options {text!r} are not of the form '(a) ... (b) ...'")
    ends = markers[1:] + [len(text)]
    return tuple(text[m + 3 : e].strip() for m, e in zip(markers, ends))


def _answer_letter(value: str) -> str | None:
    match = re.fullmatch(r"\s*\(?([a-hA-H])\)?\s*", value)
    return match.group(1).lower() if match else None


def read_questions(csv_path: str | Path) -> list[MMVPQuestion]:
    path = Path(csv_path)
    if not path.is_file():
        raise MMVPDataError(f"{path}: MMVP Questions.csv not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise MMVPDataError(f"{path}: empty file")
    header = [h.strip().lower() for h in rows[0]]
    if not header or header[0] not in ("index", "lndex"):
        raise MMVPDataError(f"{path}: the first header must be 'Index' (or 'lndex'), got {rows[0][:1]}")
    wanted = {"question": "Question", "options": "Options", "correct answer": "Correct Answer"}
    cols = {}
    for key, name in wanted.items():
        if key not in header:
            raise MMVPDataError(f"{path}: no {name!r} column (header: {rows[0]})")
        cols[key] = header.index(key)
    questions = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        try:
            index = int(row[0])
            question, options_text, answer = (row[cols[k]] for k in ("question", "options", "correct answer"))
        except (ValueError, IndexError):
            raise MMVPDataError(
                f"{where}: expected Index,Question,Options,Correct Answer, got {row}"
            ) from None
        try:
            options = parse_options(options_text)
        except MMVPDataError as err:
            raise MMVPDataError(f"{where}: {err}") from None
        letter = _answer_letter(answer)
        if letter is None or ord(letter) - ord("a") >= len(options):
            raise MMVPDataError(f"{where}: correct answer {answer!r} is not one of the options' letters")
        questions.append(MMVPQuestion(index, question.strip(), options, options_text.strip(), letter))
    _check_pairs(questions, path)
    return questions


def _check_pairs(questions: Sequence[MMVPQuestion], path: Path) -> None:
    indices = [q.index for q in questions]
    if len(set(indices)) != len(indices):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise MMVPDataError(f"{path}: Index values appear more than once: {dup[:5]}")
    present = set(indices)
    lonely = [i for i in indices if (i + 1 if i % 2 else i - 1) not in present]
    if lonely:
        raise MMVPDataError(
            f"{path}: questions without their pair partner (pairs are 2k-1, 2k): {lonely[:5]}"
        )


def with_labels(questions: Sequence[MMVPQuestion], labels: str) -> list[MMVPQuestion]:
    """The questions with the chosen answer set ("original" or "corrected")."""
    if labels not in LABEL_SETS:
        raise ValueError(f"labels must be one of {LABEL_SETS}, got {labels!r}")
    if labels == "original":
        return list(questions)
    return [
        replace(q, answer=CORRECTED_ANSWERS[q.index]) if q.index in CORRECTED_ANSWERS else q
        for q in questions
    ]


def find_files(data: str | Path) -> tuple[Path, Path]:
    """(Questions.csv, image folder) from the benchmark folder or the CSV itself."""
    data = Path(data)
    csv_path = data if data.is_file() else data / QUESTIONS_CSV
    return csv_path, csv_path.parent / IMAGE_DIR


# ---------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class PromptVariant:
    template: str
    max_new_tokens: int
    image_aspect_ratio: str  # "pad" (LLaVA's evaluation) or "crop" (the official script: no padding)


DEFAULT_PROMPT = "llava"  # reasons in the module docstring
PROMPTS = {
    "llava": PromptVariant("vicuna_v1", 128, "pad"),
    "official": PromptVariant("llava_v1", 1024, "crop"),
    "cambrian": PromptVariant("vicuna_v1", 512, "pad"),
}


def question_text(q: MMVPQuestion, variant: str = DEFAULT_PROMPT) -> str:
    if variant == "llava":
        return f"{q.question}\n{lettered_options(q.options)}\n{LETTER_ANSWER}"
    if variant == "official":
        return f"{q.question} {q.options_text}"
    if variant == "cambrian":
        return f"{q.question} Options:\n{lettered_options(q.options)}\n{LETTER_ANSWER}"
    raise ValueError(f"unknown MMVP prompt {variant!r}; choose one of {sorted(PROMPTS)}")


# ---------------------------------------------------------------------------------------------
# Reading the chosen option out of an answer

_LETTER_ALONE = re.compile(
    r"(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*:?\s*)?\(?([a-z])\)?\s*[.:!]?",
    re.IGNORECASE,
)
_LEADING_MARKED = re.compile(r"(?:\(([a-z])\)|([a-z])[.):])(?=[\s.,:;!]|$)", re.IGNORECASE)
_STATED = re.compile(
    r"\b(?:answer|option|choice)(?:\s+is)?\s*:?\s*(\(([a-z])\)|([a-z])\b)(?P<after>\s*\S?)", re.IGNORECASE
)
_BRACKETED = re.compile(r"\(([a-z])\)", re.IGNORECASE)
_NEGATED = re.compile(r"(?:\bnot|\bno|n't|\bnever)\s+$", re.IGNORECASE)


def _letter_position(letter: str, n_options: int) -> int | None:
    position = ord(letter.lower()) - ord("a")
    return position if 0 <= position < n_options else None


def _stated_letter(text: str, n_options: int) -> int | None:
    """ "answer is B", "Option (b)", "choice: a." — a lower-case "a" must not be followed by a word
    (so "the answer is a cat" stays unread)."""
    found = set()
    for match in _STATED.finditer(text):
        if match.group(2):
            letter = match.group(2)
        else:
            letter = match.group(3)
            if letter == "a" and re.match(r"\s*\w", match.group("after")):
                continue
        position = _letter_position(letter, n_options)
        if position is not None:
            found.add(position)
    return found.pop() if len(found) == 1 else None


def _option_mentions(text: str, options: Sequence[str]) -> set[int]:
    """Options whose text the answer mentions as whole words, not negated ("not open"), and not
    only as part of a longer option's text ("red" inside "red and white")."""
    lowered = " ".join(text.lower().split())
    spans: list[tuple[int, int, int]] = []
    for i, choice in enumerate(options):
        needle = " ".join(choice.lower().strip(" .").split())
        if not needle:
            continue
        for match in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", lowered):
            if not _NEGATED.search(lowered[: match.start()]):
                spans.append((match.start(), match.end(), i))
    kept = set()
    for start, end, i in spans:
        inside_longer = any(
            s <= start and end <= e and (e - s) > (end - start) and j != i for s, e, j in spans
        )
        if not inside_longer:
            kept.add(i)
    return kept


def read_choice(response: str, options: Sequence[str]) -> int | None:
    """The position of the option `response` picks, or None when it picks none or is ambiguous.

    In order: the whole answer is a letter ("B", "(b).", "Option A"); an explicit statement
    ("the answer is (B)"); a marked letter at the start ("B) Closed", "a. open"); exactly one
    bracketed letter anywhere ("I think it's (B)."); exactly one option's text mentioned.
    """
    text = response.strip()
    n = len(options)
    whole = _LETTER_ALONE.fullmatch(text)
    if whole:
        return _letter_position(whole.group(1), n)
    stated = _stated_letter(text, n)
    if stated is not None:
        return stated
    bracketed = {p for m in _BRACKETED.finditer(text) if (p := _letter_position(m.group(1), n)) is not None}
    leading = _LEADING_MARKED.match(text)
    if leading:
        position = _letter_position(leading.group(1) or leading.group(2), n)
        if position is not None and bracketed <= {position}:  # not an echo of all the options
            return position
    if len(bracketed) == 1:
        return bracketed.pop()
    mentioned = _option_mentions(text, options)
    return mentioned.pop() if len(mentioned) == 1 else None


_LMMS_RULES = [
    re.compile(r"^\s*\(?([AB])\)?\.?\s*$", re.IGNORECASE),
    re.compile(r"^\s*\(?([AB])\)?[\.\s]", re.IGNORECASE),
    re.compile(r"answer\s+is\s+\(?([AB])\)?", re.IGNORECASE),
    re.compile(r"option\s+\(?([AB])\)?", re.IGNORECASE),
    re.compile(r"\(?([AB])\)?(?:\s|$)", re.IGNORECASE),
]


def lmms_eval_letter(response: str) -> str:
    """lmms-eval's MMVP letter reader (returns "A", "B" or ""): the first of five patterns that
    matches, else the first character if it is a/b in any case. Kept for comparing with lmms-eval
    numbers; it reads "There is a cat" as A and "Both wings are open" as B."""
    text = response.strip()
    for rule in _LMMS_RULES:
        match = rule.search(text)
        if match:
            return match.group(1).upper()
    return text[0].upper() if text and text[0].upper() in "AB" else ""


# Messages of the official MMVP GPT grader (scripts/gpt_grader.py), kept verbatim so verdicts
# compare with the official protocol.
OFFICIAL_JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer. Please answer in only yes or no."


def official_judge_message(question: MMVPQuestion, response: str) -> str:
    return (
        f"Given the following question {question.question} {question.options_text}, the correct answer is "
        f"({question.answer}). Does the following answer correctly answers the question, answer:{response}?"
    )


def judge_correct(judge: ChatJudge, question: MMVPQuestion, response: str) -> bool:
    """The official grader's verdict: correct only if the judge replies exactly "yes"."""
    reply = judge.ask(official_judge_message(question, response), system=OFFICIAL_JUDGE_SYSTEM)
    verdict = re.match(r"^(yes|no)$", reply, re.IGNORECASE)  # the official check, anchors and all
    return verdict is not None and verdict.group(1).lower() == "yes"


GRADERS = ("ours", "lmms-eval", "judge")


# ---------------------------------------------------------------------------------------------
# Scoring


def grade(
    question: MMVPQuestion, response: str, grader: str = "ours", judge: ChatJudge | None = None
) -> tuple[bool, str | None]:
    """(correct, option letter read or None)."""
    if grader == "ours":
        position = read_choice(response, question.options)
        letter = None if position is None else chr(ord("a") + position)
        return letter == question.answer, letter
    if grader == "lmms-eval":
        letter = lmms_eval_letter(response).lower() or None
        return letter == question.answer, letter
    if grader == "judge":
        if judge is None:
            raise ValueError("the judge grader needs a judge (--judge-url and --judge-model)")
        return judge_correct(judge, question, response), None
    raise ValueError(f"unknown grader {grader!r}; choose one of {GRADERS}")


def pair_accuracy(correct: Mapping[int, bool]) -> tuple[float, int, int]:
    """(percent, pairs with both questions correct, pairs) from per-question correctness."""
    pairs: dict[int, list[bool]] = {}
    for index, ok in correct.items():
        pairs.setdefault((index - 1) // 2, []).append(ok)
    both = sum(len(v) == 2 and all(v) for v in pairs.values())
    return (100.0 * both / len(pairs) if pairs else 0.0), both, len(pairs)


def pair_intervals(correct: Mapping[int, bool]) -> dict[str, Any]:
    """Bootstrap intervals of pair and question accuracy, resampling pairs (a pair's two
    questions share their images, so they are not independent)."""
    from . import intervals

    pairs: dict[int, list[bool]] = {}
    for index, ok in sorted(correct.items()):
        pairs.setdefault((index - 1) // 2, []).append(ok)
    both = [float(len(v) == 2 and all(v)) for v in pairs.values()]
    share = [sum(v) / len(v) for v in pairs.values()]
    return {
        "pair_accuracy_ci95": intervals.mean_interval(both),
        "question_accuracy_ci95": intervals.mean_interval(share),
        "bootstrap": intervals.describe("pair"),
    }


def score_mmvp(
    answers: Mapping[str, Mapping[str, Any]],
    questions: Sequence[MMVPQuestion],
    answers_path: Path | str = "<answers>",
    grader: str = "ours",
    labels: str = "original",
    judge: ChatJudge | None = None,
) -> dict:
    check_coverage(answers, [q.index for q in questions], answers_path, "the MMVP questions file")
    per_question = {}
    correct = {}
    for q in with_labels(questions, labels):
        ok, letter = grade(q, answer_text(answers[answer_key(q.index)], answers_path), grader, judge)
        correct[q.index] = ok
        per_question[str(q.index)] = {"correct": ok, "read": letter, "answer": q.answer}
    accuracy, both, n_pairs = pair_accuracy(correct)
    cis = pair_intervals(correct)
    return {
        "benchmark": "mmvp",
        "score": accuracy,
        "metric": "pair accuracy (percent)",
        "pair_accuracy": accuracy,
        "pairs_correct": both,
        "pairs": n_pairs,
        "question_accuracy": 100.0 * sum(correct.values()) / len(correct),
        "unread": sum(v["read"] is None for v in per_question.values()) if grader != "judge" else None,
        "grader": grader,
        "labels": labels,
        "per_question": per_question,
        "score_ci95": cis["pair_accuracy_ci95"],
        **cis,
    }


def score_answer_file(answers_path: str | Path, questions: Sequence[MMVPQuestion], **kwargs: Any) -> dict:
    return score_mmvp(load_answer_index(answers_path), questions, answers_path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Running


def build_task(
    data: str | Path,
    prompt: str = DEFAULT_PROMPT,
    labels: str = "original",
    grader: str = "ours",
    judge: ChatJudge | None = None,
    template: str | None = None,
    max_new_tokens: int | None = None,
) -> EvalTask:
    csv_path, image_dir = find_files(data)
    questions = read_questions(csv_path)
    with_labels(questions, labels)  # validates the choice before a long run
    if prompt not in PROMPTS:
        raise ValueError(f"unknown MMVP prompt {prompt!r}; choose one of {sorted(PROMPTS)}")
    variant = PROMPTS[prompt]
    settings: dict[str, Any] = {"prompt": prompt, "labels": labels, "grader": grader}
    if judge is not None:
        settings["judge"] = judge.config.describe()
    return EvalTask(
        benchmark="mmvp",
        questions=[
            EvalQuestion(q.index, question_text(q, prompt), image_path=image_dir / f"{q.index}.jpg")
            for q in questions
        ],
        template=template or variant.template,
        max_new_tokens=max_new_tokens or variant.max_new_tokens,
        settings=settings,
        data_files={"questions": str(csv_path), "images": str(image_dir)},
        score=lambda path: score_answer_file(path, questions, grader=grader, labels=labels, judge=judge),
        image_aspect_ratio=variant.image_aspect_ratio,
    )


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval mmvp)


@dataclass(frozen=True, kw_only=True)
class MMVPOptions:
    data: Path = option(help="folder with Questions.csv and 'MMVP Images/'")
    labels: str = option(
        "original",
        "answers of pairs (99,100), (279,280): as released (default, as in the paper) or corrected",
        choices=LABEL_SETS,
    )
    grader: str = option(
        "ours",
        "how an answer is read (default: ours; lmms-eval: its letter regexes; judge: the official GPT protocol)",
        choices=GRADERS,
    )
    judge: JudgeOptions = judge_group()
    prompt: str = option(
        DEFAULT_PROMPT,
        "llava (default): LLaVA-1.5's multiple-choice convention (options re-lettered A./B., "
        "'Answer with the option's letter...'), vicuna_v1, padded, 128 tokens, not the paper's "
        "protocol; official: the MMVP script's question + options, llava_v1, centre-cropped, "
        "1024 tokens (the paper's, with --grader judge; greedy here); cambrian: Cambrian's "
        "letter prompt, vicuna_v1, padded, 512 tokens. Table in docs/evaluation.md",
        choices=PROMPTS,
        actions=RUNNING,
    )


def _task(o: MMVPOptions, max_new_tokens: int | None) -> EvalTask:
    judge = make_judge(o.judge, o.grader)
    return build_task(o.data, o.prompt, o.labels, o.grader, judge, max_new_tokens=max_new_tokens)


def _score(o: MMVPOptions, answers: Path) -> dict:
    questions = read_questions(find_files(o.data)[0])
    judge = make_judge(o.judge, o.grader)
    return score_answer_file(answers, questions, grader=o.grader, labels=o.labels, judge=judge)


BENCHMARK = Benchmark(
    name="mmvp",
    description="MMVP: 150 CLIP-blind image pairs, two-option questions; pair accuracy",
    options=MMVPOptions,
    score=_score,
    build_task=_task,
)
