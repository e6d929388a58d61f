"""MMBench (dev / test, EN or CN): multiple-choice questions with circular evaluation.

File: the TSV OpenCompass distributes (`mmbench_dev_20230712.tsv` as LLaVA-1.5 used,
`mmbench_dev_en_20231003.tsv` = VLMEvalKit's MMBench_DEV_EN, the test files), with columns
`index, question, hint, A, B, C, D, answer, category, image (base64), source, l2-category,
comment, split`. Circular variants are rows of their own: variant k of question i has index
`i + k * 1_000_000` with the options rotated; a group is all rows with the same
`index % 1_000_000` (never synthesised: some 4-option questions have only 3 variants).

Prompt (LLaVA's model_vqa_mmbench.py): `[hint\\n]question\\nA. ..\\nB. ..[\\nC. ..][\\nD. ..]` and
the letter instruction on its own line; a hint of "nan"/"none" counts as no hint, as in LLaVA.

Scoring (VLMEvalKit's circular evaluation with exact matching, no LLM by default):
- each row's answer is read with VLMEvalKit's `can_infer`: first the letter rule (replace
  `.()[],:;!*#{}` with spaces, split on whitespace; exactly one choice letter among the tokens
  gives that letter; a known refusal sentence, or a lone "Z" token and no letter, gives "Z"),
  then the option-text rule (the one option whose lower-cased text is a substring of the
  lower-cased answer). Two rule sets: `2024` (the code of early 2024) and `2025` (adds two guards
  from August 2025: the letter must be among the last 5 tokens, and answers longer than twice the
  options' total length are not text-matched). They agree on letter-only answers;
- a group scores 1 iff every row's answer is read and equals that row's `answer`; any row read as
  a wrong letter makes it 0; a group with unread rows (and no wrong one) is 0, or is decided by the
  optional LLM judge on the unread rows;
- Overall = mean over questions (groups); also per category and per l2-category.

Differences from the references, on purpose: an option whose text is literally "None", "NA" or
"nan" is an option (pandas' default reading, which LLaVA and VLMEvalKit use, turns it into a
missing value, which truncates LLaVA's option list); only empty cells are missing. A judge that
cannot settle a row after its retries leaves the row wrong instead of picking a random option.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..prompts import LETTER_ANSWER, OPTION_LETTERS
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .judge import ChatJudge
from .registry import RUNNING, Benchmark, JudgeOptions, judge_group, make_judge, option
from .task import EvalQuestion, EvalTask

logger = logging.getLogger(__name__)

CIRCULAR_STRIDE = 1_000_000
OPTION_COLUMNS = ("A", "B", "C", "D")
MAX_NEW_TOKENS = 1024  # LLaVA model_vqa_mmbench.py
LETTER_ANSWER_CN = "请直接回答选项字母。"
INSTRUCTIONS = {"en": LETTER_ANSWER, "cn": LETTER_ANSWER_CN}  # --lang -> answer instruction

# (rows, questions) of the released files, to name the version in the metrics
KNOWN_VERSIONS = {
    (4377, 1176): "dev 20230712 (LLaVA-1.5)",
    (4329, 1164): "dev_en 20231003 (VLMEvalKit MMBench_DEV_EN)",
    (6666, 1784): "test",
}

# Answers VLMEvalKit treats as refusals (read as "Z", never correct).
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


class MMBenchDataError(ValueError):
    pass


@dataclass(frozen=True)
class MMBenchRow:
    index: int
    question: str
    hint: str | None
    options: dict[str, str]  # letter -> text, the non-empty option columns
    answer: str | None  # None on the test split
    category: str | None
    l2_category: str | None
    split: str | None
    image_base64: str | None

    @property
    def group(self) -> int:
        return self.index % CIRCULAR_STRIDE


def _is_none(value: Any) -> bool:
    """LLaVA's `is_none` for hints: missing, NaN, or the strings "nan"/"none" in any case."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip().lower() in ("nan", "none")


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if text != "" else None


def read_tsv(path: str | Path) -> list[MMBenchRow]:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MMBenchDataError(f"{path}: MMBench TSV not found")
    try:
        frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise MMBenchDataError(f"{path}: not a readable TSV ({err})") from None
    columns = {c.lower(): c for c in frame.columns}  # HF copies spell it L2-category
    for required in ("index", "question", "a", "b"):
        if required not in columns:
            raise MMBenchDataError(f"{path}: no {required!r} column (columns: {list(frame.columns)})")
    rows = []
    for line, record in enumerate(frame.to_dict("records"), start=2):

        def get(name: str, record: dict = record) -> str | None:
            return _cell(record[columns[name]]) if name in columns else None

        try:
            index = int(get("index"))
        except (TypeError, ValueError):
            raise MMBenchDataError(f"{path}:{line}: index {get('index')!r} is not an integer") from None
        options = {letter: get(letter.lower()) for letter in OPTION_COLUMNS}
        present = [letter for letter in OPTION_COLUMNS if options[letter] is not None]
        if len(present) < 2 or present != list(OPTION_COLUMNS[: len(present)]):
            raise MMBenchDataError(
                f"{path}:{line} (index {index}): options must fill A, B[, C[, D]] without gaps, got {present}"
            )
        answer = get("answer")
        if answer is not None and answer not in present:
            raise MMBenchDataError(
                f"{path}:{line} (index {index}): answer {answer!r} is not one of the options {present}"
            )
        hint = get("hint")
        rows.append(
            MMBenchRow(
                index=index,
                question=get("question") or "",
                hint=None if _is_none(hint) else hint,
                options={k: options[k] for k in present},
                answer=answer,
                category=get("category"),
                l2_category=get("l2-category"),
                split=get("split"),
                image_base64=get("image"),
            )
        )
    _check_groups(rows, path)
    return rows


def _check_groups(rows: Sequence[MMBenchRow], path: Path) -> None:
    seen: set[int] = set()
    for row in rows:
        if row.index in seen:
            raise MMBenchDataError(f"{path}: index {row.index} appears twice")
        seen.add(row.index)
    orphans = sorted(r.index for r in rows if r.group not in seen)
    if orphans:
        raise MMBenchDataError(f"{path}: circular rows without their base question row: {orphans[:5]}")


def version_of(rows: Sequence[MMBenchRow]) -> str:
    questions = sum(r.index < CIRCULAR_STRIDE for r in rows)
    return KNOWN_VERSIONS.get((len(rows), questions), f"unknown ({len(rows)} rows, {questions} questions)")


# ---------------------------------------------------------------------------------------------
# Prompt


def llava_question(row: MMBenchRow) -> str:
    """The question text LLaVA records in `prompt`: hint, question, lettered options."""
    text = row.question if row.hint is None else f"{row.hint}\n{row.question}"
    for letter, choice in row.options.items():
        text += f"\n{letter}. {choice}"
    return text


# ---------------------------------------------------------------------------------------------
# Reading a letter out of an answer (VLMEvalKit's exact matching)


@dataclass(frozen=True)
class MatchingRules:
    name: str
    letter_in_last_tokens: int | None = None  # the letter must be among the last N tokens
    max_text_match_ratio: float | None = None  # no text matching for answers longer than ratio x options


MATCHING_RULES = {
    "2024": MatchingRules("2024"),
    "2025": MatchingRules("2025", letter_in_last_tokens=5, max_text_match_ratio=2.0),
}
DEFAULT_MATCHING = "2024"

_STRIPPED = re.compile(r"[.()\[\],:;!*#{}]")


def infer_letter_option(answer: str, choices: Mapping[str, str], rules: MatchingRules) -> str | None:
    """VLMEvalKit's letter rule (`can_infer_option`)."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return "Z"
    tokens = _STRIPPED.sub(" ", answer).split()
    found = [letter for letter in choices if letter in tokens]
    if len(found) == 1:
        letter = found[0]
        window = rules.letter_in_last_tokens
        if window is None or tokens.index(letter) > len(tokens) - window:
            return letter
        return None
    if not found and "Z" in tokens:
        return "Z"
    return None


def infer_letter_text(answer: str, choices: Mapping[str, str], rules: MatchingRules) -> str | None:
    """VLMEvalKit's option-text rule (`can_infer_text`)."""
    lowered = answer.lower()
    ratio = rules.max_text_match_ratio
    if ratio is not None and len(lowered) > ratio * sum(len(str(v)) for v in choices.values()):
        return None
    hits = [letter for letter, text in choices.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def infer_letter(
    answer: str, choices: Mapping[str, str], rules: MatchingRules = MATCHING_RULES[DEFAULT_MATCHING]
) -> str | None:
    """The option an answer picks under VLMEvalKit's exact matching ("Z" = refusal), or None."""
    return infer_letter_option(answer, choices, rules) or infer_letter_text(answer, choices, rules)


# ---------------------------------------------------------------------------------------------
# Optional LLM judge for answers exact matching cannot read

JUDGE_PROMPT = (
    "You will see a multiple-choice question, its options and a free-form answer someone gave. "
    "Decide which single option the answer chooses. Reply with that option's letter only. "
    "Reply Z if the answer chooses no option, several options, or refuses.\n\n"
    "Question: {question}\nOptions:\n{options}\nAnswer: {answer}\nLetter:"
)


def judge_letter(
    judge: ChatJudge, row: MMBenchRow, answer: str, rules: MatchingRules, attempts: int = 3
) -> str | None:
    options = "\n".join(f"{k}. {v}" for k, v in row.options.items())
    prompt = JUDGE_PROMPT.format(question=row.question, options=options, answer=answer)
    for _ in range(attempts):
        reply = judge.ask(prompt)
        letter = infer_letter_option(reply, row.options, rules)
        if letter:
            return letter
        logger.warning("judge reply %r names no single option of question %s", reply, row.index)
    return None


# ---------------------------------------------------------------------------------------------
# Circular scoring


@dataclass
class GroupResult:
    hit: int
    letters: dict[int, str | None] = field(default_factory=dict)  # row index -> letter read
    judged: int = 0


def score_group(
    rows: Sequence[MMBenchRow],
    answers: Mapping[int, str],
    rules: MatchingRules,
    judge: ChatJudge | None = None,
) -> GroupResult:
    letters = {r.index: infer_letter(answers[r.index], r.options, rules) for r in rows}
    if any(letters[r.index] is not None and letters[r.index] != r.answer for r in rows):
        return GroupResult(0, letters)
    unread = [r for r in rows if letters[r.index] is None]
    if not unread:
        return GroupResult(1, letters)
    if judge is None:
        return GroupResult(0, letters)
    for r in unread:
        letters[r.index] = judge_letter(judge, r, answers[r.index], rules)
        if letters[r.index] != r.answer:
            return GroupResult(0, letters, judged=len(unread))
    return GroupResult(1, letters, judged=len(unread))


def _mean(values: Sequence[int]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def score_mmbench(
    answers: Mapping[str, Mapping[str, Any]],
    rows: Sequence[MMBenchRow],
    answers_path: Path | str = "<answers>",
    matching: str = DEFAULT_MATCHING,
    judge: ChatJudge | None = None,
) -> dict:
    if any(r.answer is None for r in rows):
        raise MMBenchDataError(
            "this MMBench file has no answers (the test split): submit predictions to the OpenCompass server instead"
        )
    check_coverage(answers, [r.index for r in rows], answers_path, "the MMBench TSV")
    rules = MATCHING_RULES[matching]
    texts = {r.index: answer_text(answers[answer_key(r.index)], answers_path) for r in rows}
    groups: dict[int, list[MMBenchRow]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r)
    main_rows = [r for r in rows if r.index < CIRCULAR_STRIDE]
    results = {m.index: score_group(groups[m.index], texts, rules, judge) for m in main_rows}
    hits = {i: res.hit for i, res in results.items()}

    def breakdown(key: str) -> dict[str, dict[str, float | int]]:
        by: dict[str, list[int]] = defaultdict(list)
        for m in main_rows:
            value = getattr(m, key)
            if value is not None:
                by[value].append(hits[m.index])
        return {k: {"accuracy": _mean(v), "n": len(v)} for k, v in sorted(by.items())}

    exact = {r.index: infer_letter(texts[r.index], r.options, rules) == r.answer for r in rows}
    overall = _mean(list(hits.values()))
    return {
        "benchmark": "mmbench",
        "score": overall,
        "metric": "circular accuracy over questions (percent)",
        "overall": overall,
        "questions": len(main_rows),
        "rows": len(rows),
        "correct": sum(hits.values()),
        "version": version_of(rows),
        "matching": matching,
        "judge_calls": judge.calls if judge else 0,
        "rows_judged": sum(res.judged for res in results.values()),
        "per_split": breakdown("split"),
        "per_l2_category": breakdown("l2_category"),
        "per_category": breakdown("category"),
        "single_pass_accuracy_base_rows": _mean([exact[m.index] for m in main_rows]),
        "single_pass_accuracy_all_rows": _mean(list(exact.values())),
        "groups": {str(i): h for i, h in hits.items()},
        **_intervals(list(hits.values())),
    }


def _intervals(hits: Sequence[int]) -> dict[str, Any]:
    """Bootstrap interval of Overall, resampling questions (a question's circular rows are one
    unit: they share the question and the image)."""
    from . import intervals

    overall = intervals.mean_interval(hits)
    return {"score_ci95": overall, "overall_ci95": overall, "bootstrap": intervals.describe("circular group")}


def score_answer_file(
    answers_path: str | Path,
    rows: Sequence[MMBenchRow],
    matching: str = DEFAULT_MATCHING,
    judge: ChatJudge | None = None,
) -> dict:
    return score_mmbench(load_answer_index(answers_path), rows, answers_path, matching, judge)


def submission_frame(answers: Mapping[str, Mapping[str, Any]], rows: Sequence[MMBenchRow], answers_path: Path | str):
    """The table the OpenCompass server grades: one line per TSV row with the model's raw answer in
    `prediction` (the server reads the letter itself), beside the question and its options; the
    `answer` and `split` columns are kept where the TSV has them. Every row must be answered."""
    import pandas as pd

    check_coverage(answers, [r.index for r in rows], answers_path, "the MMBench TSV")
    table = []
    for r in rows:
        line: dict[str, Any] = {"index": r.index, "question": r.question}
        line.update({letter: r.options.get(letter) for letter in OPTION_COLUMNS})
        line["prediction"] = answer_text(answers[answer_key(r.index)], answers_path)
        line["answer"], line["split"] = r.answer, r.split
        table.append(line)
    frame = pd.DataFrame(table)
    return frame.drop(columns=[c for c in ("answer", "split") if frame[c].isna().all()])


def write_submission(answers_path: str | Path, rows: Sequence[MMBenchRow], out_path: str | Path) -> None:
    """Write the `.xlsx` to upload for MMBench test (or dev) from an answer file (written atomically)."""
    frame = submission_frame(load_answer_index(answers_path), rows, answers_path)
    with atomic_path(out_path) as tmp:
        frame.to_excel(tmp, index=False, engine="openpyxl")


# ---------------------------------------------------------------------------------------------
# Running


def build_task(
    tsv: str | Path,
    template: str = "vicuna_v1",
    max_new_tokens: int = MAX_NEW_TOKENS,
    lang: str = "en",
    matching: str = DEFAULT_MATCHING,
    judge: ChatJudge | None = None,
) -> EvalTask:
    rows = read_tsv(tsv)
    suffix = INSTRUCTIONS[lang]
    questions = []
    for r in rows:
        if r.image_base64 is None:
            raise MMBenchDataError(f"{tsv}: index {r.index} has no image")
        record_prompt = llava_question(r)
        questions.append(
            EvalQuestion(
                r.index,
                f"{record_prompt}\n{suffix}",
                image_base64=r.image_base64,
                record_prompt=record_prompt,
                answer_fields={
                    "round_id": 0,
                    "options": list(r.options.values()),
                    "option_char": list(OPTION_LETTERS[: len(r.options)]),
                },
            )
        )
    has_answers = all(r.answer is not None for r in rows)

    def score(answers_path: Path) -> dict:
        if not has_answers:
            return {"benchmark": "mmbench", "score": None, "note": "test split: no answers in the TSV"}
        return score_answer_file(answers_path, rows, matching, judge)

    settings: dict[str, Any] = {"lang": lang, "matching": matching, "version": version_of(rows)}
    if judge is not None:
        settings["judge"] = judge.config.describe()
    return EvalTask("mmbench", questions, template, max_new_tokens, settings, {"tsv": str(tsv)}, score)


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval mmbench)


@dataclass(frozen=True, kw_only=True)
class MMBenchOptions:
    data: Path = option(help="the MMBench TSV (dev or test)")
    matching: str = option(
        DEFAULT_MATCHING,
        "VLMEvalKit exact-matching rule set (default 2024; they agree on letter answers)",
        choices=MATCHING_RULES,
    )
    judge: JudgeOptions = judge_group()
    lang: str = option("en", "answer instruction language", choices=INSTRUCTIONS, actions=RUNNING)


def _task(o: MMBenchOptions, max_new_tokens: int | None) -> EvalTask:
    judge = make_judge(o.judge)
    return build_task(
        o.data, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS, lang=o.lang, matching=o.matching, judge=judge
    )


def _score(o: MMBenchOptions, answers: Path) -> dict:
    rows = read_tsv(o.data)
    return score_answer_file(answers, rows, o.matching, make_judge(o.judge))


def _export(answers: Path, data: Path | None, output: Path) -> None:
    if data is None:
        raise SystemExit("mof-llava eval export mmbench: --data (the MMBench TSV) is required")
    write_submission(answers, read_tsv(data), output)


BENCHMARK = Benchmark(
    name="mmbench",
    description="MMBench: multiple choice, circular evaluation; accuracy",
    options=MMBenchOptions,
    score=_score,
    build_task=_task,
    export=_export,
)
