"""Answer files in LLaVA's answer format: one JSON object per line.

    {"question_id": ..., "prompt": ..., "text": ..., "answer_id": ..., "model_id": ..., "metadata": {}}

MMBench lines also carry `round_id`, `options` and `option_char`. Files written by LLaVA's own
scripts read here unchanged, and ours read in LLaVA's scorers.

Writing is crash-safe: a batch of complete lines goes out in one `write` followed by `fsync`, so
after a crash the file holds every finished batch and at most one torn last line, which
`recover_answer_file` detects and cuts off before a resumed run appends to it. Merged files are
written to a temporary name and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import decode_utf8

logger = logging.getLogger(__name__)

# Field order of LLaVA's answer lines (model_vqa_loader.py / model_vqa_mmbench.py).
_FIELD_ORDER = (
    "question_id",
    "round_id",
    "prompt",
    "text",
    "options",
    "option_char",
    "answer_id",
    "model_id",
    "metadata",
)


class AnswerFileError(ValueError):
    """An answer file is malformed or does not match the benchmark. The message names the file."""


def answer_key(question_id: Any) -> str:
    """Key used to match answers with questions: LLaVA writes POPE/MMBench ids as ints and GQA ids as
    strings; other tools are not consistent, so `1` and `"1"` name the same question."""
    return str(question_id)


def make_answer(
    question_id: Any,
    prompt: str,
    text: str,
    model_id: str,
    extra: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One answer line, fields in LLaVA's order. `extra` holds benchmark fields (MMBench's
    round_id/options/option_char)."""
    fields = {
        "question_id": question_id,
        "prompt": prompt,
        "text": text,
        "answer_id": uuid.uuid4().hex,
        "model_id": model_id,
        "metadata": dict(metadata or {}),
        **dict(extra or {}),
    }
    ordered = {k: fields[k] for k in _FIELD_ORDER if k in fields}
    ordered.update({k: v for k, v in fields.items() if k not in ordered})
    return ordered


def _parse_line(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise AnswerFileError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict) or "question_id" not in record:
        raise AnswerFileError(f"{path}:{lineno}: an answer line must be a JSON object with a 'question_id'")
    return record


def _decode(data: bytes, path: Path) -> str:
    return decode_utf8(data, str(path), AnswerFileError, "; an answer file is JSON lines")


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """Read a finished answer file. Blank lines are skipped; a torn last line (no newline and not
    valid JSON, the trace of an interrupted run) is an error: resume the run to finish it."""
    path = Path(path)
    if not path.is_file():
        raise AnswerFileError(f"{path}: answer file not found")
    raw = _decode(path.read_bytes(), path)
    records = []
    lines = raw.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if lineno == len(lines) and not _is_json(line):
            raise AnswerFileError(
                f"{path}:{lineno}: the file ends in an incomplete line; the run that wrote it was "
                "interrupted (resume it with the same command to finish the file)"
            )
        records.append(_parse_line(line, path, lineno))
    return records


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def answer_text(record: Mapping[str, Any], path: Path | str = "<answers>") -> str:
    """The model's answer of one line: LLaVA's `text`, or `response` as MMVP's official script writes it."""
    for field in ("text", "response"):
        if field in record:
            value = record[field]
            return "" if value is None else str(value)
    raise AnswerFileError(f"{path}: answer for question {record.get('question_id')!r} has no 'text' field")


def index_answers(
    records: Iterable[Mapping[str, Any]], path: Path | str = "<answers>"
) -> dict[str, dict[str, Any]]:
    """Answers keyed by `answer_key(question_id)`; two answers to one question are an error."""
    indexed: dict[str, dict[str, Any]] = {}
    for record in records:
        key = answer_key(record["question_id"])
        if key in indexed:
            raise AnswerFileError(f"{path}: question_id {record['question_id']!r} is answered more than once")
        indexed[key] = dict(record)
    return indexed


def load_answer_index(path: str | Path) -> dict[str, dict[str, Any]]:
    return index_answers(read_answers(path), path)


def check_coverage(
    answers: Mapping[str, Any], question_ids: Sequence[Any], path: Path | str, what: str
) -> None:
    """Refuse answer files that miss questions or answer questions the benchmark does not have
    (the usual sign of a file made for another version of the benchmark)."""
    expected = [answer_key(q) for q in question_ids]
    expected_set = set(expected)
    missing = [q for q in expected if q not in answers]
    unknown = [q for q in answers if q not in expected_set]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {len(expected)} questions have no answer (first: {', '.join(missing[:5])})"
        )
    if unknown:
        problems.append(
            f"{len(unknown)} answers have question ids that {what} does not contain (first: {', '.join(unknown[:5])})"
        )
    if problems:
        raise AnswerFileError(f"{path}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Writing, resuming and merging


def recover_answer_file(path: str | Path) -> list[dict[str, Any]]:
    """Read an answer file a previous (possibly crashed) run was appending to, and make it safe to
    append to again: a torn last line is cut off (with a warning) so the question is answered anew."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        torn = data[end:]
        logger.warning(
            "%s: dropping an incomplete last line (%d bytes) left by an interrupted run; its question is answered again",
            path,
            len(torn),
        )
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for lineno, line in enumerate(_decode(data[:end], path).split("\n"), start=1):
        if line.strip():
            records.append(_parse_line(line, path, lineno))
    return records


def read_complete_lines(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of an answer file another process may still be appending to (read-only)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    return [
        _parse_line(line, path, i)
        for i, line in enumerate(_decode(data, path).split("\n"), 1)
        if line.strip()
    ]


class AnswerWriter:
    """Appends answer lines durably: each `write` call is one complete batch on disk (flushed and
    fsynced) before it returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._handle.write(payload)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AnswerWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_answers_atomic(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def merge_answers(
    sources: Sequence[Sequence[Mapping[str, Any]]],
    question_ids: Sequence[Any],
    source_names: Sequence[str],
) -> list[dict[str, Any]]:
    """Merge answer lists (one per shard file) into question order. A question answered in two
    sources, an answer to an unknown question, or an unanswered question is an error."""
    where: dict[str, str] = {}
    merged: dict[str, dict[str, Any]] = {}
    for records, name in zip(sources, source_names, strict=True):
        for record in records:
            key = answer_key(record["question_id"])
            if key in merged:
                raise AnswerFileError(
                    f"question_id {record['question_id']!r} is answered twice: in {where[key]} and in {name}"
                )
            merged[key] = dict(record)
            where[key] = name
    check_coverage(merged, question_ids, " + ".join(source_names) or "<no answer files>", "the benchmark")
    return [merged[answer_key(q)] for q in question_ids]
