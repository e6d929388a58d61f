"""VSR, Visual Spatial Reasoning (Liu et al., TACL 2023): is a caption's spatial relation true of
the picture? Image-level, true/false; LION reports it (72.96 / 73.77 for LION-4B / 12B).

Files (cambridgeltl/visual-spatial-reasoning, `data/splits/{random,zeroshot}/{train,dev,test}.jsonl`,
also on Hugging Face as cambridgeltl/vsr_random and vsr_zeroshot): one JSON object per line with
`image` (a COCO 2017 file name), `caption`, `label` (1 true, 0 false), `relation`,
and annotator fields that are not used; `--data` is such a file, or a folder holding `test.jsonl`;
`--images` the folder of the pictures. A caption's id is its 0-based line number among the rows.

Prompt (ours; the references' zero-shot prompt for an instruction-tuned model is not released):
`Is the following statement about the image true or false? <caption>` and a line asking for true
or false. The answer reads as the first of the words true / yes (1) or false / no (0), any case;
an answer with none is unread and wrong.

Scoring as the release's analysis scripts: accuracy overall (`score`), per relation, and per
meta-category (Adjacency, Directional, Orientation, Projective, Proximity, Topological,
Unallocated; `among` is listed under both Topological and Unallocated and, as the script reads the
list line by line, counts as Unallocated). A relation outside the list is counted under
`uncategorised`. The interval resamples captions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..released import release_rows
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .registry import Benchmark, option
from .task import EvalQuestion, EvalTask

MAX_NEW_TOKENS = 8
QUESTION = "Is the following statement about the image true or false? {caption}\nAnswer with true or false."

# The release's relation -> meta-category list (analysis_scripts/rel_meta_category_dict.txt), in its
# order; a relation listed twice ("among") keeps the later category, as the release's script does.
META_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (category, tuple(r.strip() for r in relations.split(",")))
    for category, relations in (
        ("Adjacency", "adjacent to, alongside, at the side of, at the right side of, at the left side of, "
         "attached to, at the back of, ahead of, against, at the edge of"),
        ("Directional", "off, past, toward, down, deep down, up, away from, along, around, from, into, to, "
         "across, across from, through, down from"),
        ("Orientation", "facing, facing away from, parallel to, perpendicular to"),
        ("Projective", "on top of, beneath, beside, behind, left of, right of, under, in front of, below, "
         "above, over, in the middle of"),
        ("Proximity", "by, close to, near, far from, far away from"),
        ("Topological", "connected to, detached from, has as a part, part of, contains, within, at, on, in, "
         "with, surrounding, among, consists of, out of, between, inside, outside, touching"),
        ("Unallocated", "beyond, next to, opposite to, after, among, enclosed by"),
    )
)  # fmt: skip
RELATION_CATEGORY: dict[str, str] = {rel: cat for cat, rels in META_CATEGORIES for rel in rels}
UNCATEGORISED = "uncategorised"

_VERDICT = re.compile(r"\b(true|yes|false|no)\b", re.IGNORECASE)


class VsrDataError(ValueError):
    pass


@dataclass(frozen=True)
class VsrCaption:
    index: int
    caption: str
    label: int
    relation: str
    image_path: Path | None  # None when scoring only
    where: str


def _caption(index: int, row: Mapping[str, Any], images: Path | None, where: str) -> VsrCaption:
    for name in ("image", "caption", "label", "relation"):
        if row.get(name) is None:
            raise VsrDataError(f"{where}: missing field {name!r}")
    if row["label"] not in (0, 1) or isinstance(row["label"], bool):
        raise VsrDataError(f"{where}: label must be 1 (true) or 0 (false), got {row['label']!r}")
    path = images / str(row["image"]) if images is not None else None
    return VsrCaption(index, str(row["caption"]), int(row["label"]), str(row["relation"]), path, where)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [path / "test.jsonl"] if (path / "test.jsonl").is_file() else sorted(path.glob("test*.parquet"))


def read_captions(data: str | Path, images: str | Path | None = None) -> list[VsrCaption]:
    _, rows = release_rows(data, _files, VsrDataError, "VSR", "test.jsonl or test*.parquet")
    if not rows:
        raise VsrDataError(f"{data}: the VSR file holds no rows")
    folder = Path(images) if images is not None else None
    return [_caption(i, row, folder, where) for i, (where, row) in enumerate(rows)]


def read_verdict(text: str) -> int | None:
    """1 for true / yes, 0 for false / no (the first such word), None without one."""
    match = _VERDICT.search(text)
    if match is None:
        return None
    return int(match.group(1).lower() in ("true", "yes"))


def _table(groups: Mapping[str, Sequence[bool]]) -> dict[str, dict[str, Any]]:
    return {k: {"accuracy": 100.0 * sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}


def score_vsr(
    answers: Mapping[str, Mapping[str, Any]],
    captions: Sequence[VsrCaption],
    answers_path: Path | str = "<answers>",
) -> dict[str, Any]:
    from . import intervals

    check_coverage(answers, [c.index for c in captions], answers_path, "the VSR data")
    verdicts = [read_verdict(answer_text(answers[answer_key(c.index)], answers_path)) for c in captions]
    right = [v == c.label for v, c in zip(verdicts, captions)]
    by_relation: dict[str, list[bool]] = {}
    by_category: dict[str, list[bool]] = {}
    for c, ok in zip(captions, right):
        by_relation.setdefault(c.relation, []).append(ok)
        by_category.setdefault(RELATION_CATEGORY.get(c.relation, UNCATEGORISED), []).append(ok)
    return {
        "benchmark": "vsr",
        "score": 100.0 * sum(right) / len(right) if right else 0.0,
        "metric": "accuracy (percent)",
        "score_ci95": intervals.mean_interval(right),
        "per_meta_category": _table(by_category),
        "per_relation": _table(by_relation),
        "questions": len(captions),
        "unread": sum(v is None for v in verdicts),
        "bootstrap": intervals.describe("caption"),
    }


def score_answer_file(answers_path: str | Path, captions: Sequence[VsrCaption]) -> dict[str, Any]:
    return score_vsr(load_answer_index(answers_path), captions, answers_path)


# ---------------------------------------------------------------------------------------------
# Running and registration (mof-llava eval vsr)


def build_task(data: str | Path, images: str | Path | None, max_new_tokens: int = MAX_NEW_TOKENS) -> EvalTask:
    if images is None:
        raise VsrDataError("--images is needed to run VSR: the folder of the COCO 2017 pictures")
    captions = read_captions(data, images)
    return EvalTask(
        benchmark="vsr",
        questions=[
            EvalQuestion(c.index, QUESTION.format(caption=c.caption), image_path=c.image_path)
            for c in captions
        ],
        template="vicuna_v1",
        max_new_tokens=max_new_tokens,
        settings={"prompt": "ours", "reader": "first true/yes/false/no"},
        data_files={"data": str(data), "images": str(images)},
        score=lambda path: score_answer_file(path, captions),
    )


@dataclass(frozen=True, kw_only=True)
class VsrOptions:
    data: Path = option(
        help="a VSR split file (e.g. data/splits/zeroshot/test.jsonl) or a folder holding test.jsonl"
    )
    images: Path | None = option(
        None, "folder of the COCO 2017 pictures the rows name (needed to run, not to score)"
    )


def _task(o: VsrOptions, max_new_tokens: int | None) -> EvalTask:
    return build_task(o.data, o.images, max_new_tokens or MAX_NEW_TOKENS)


def _score(o: VsrOptions, answers: Path) -> dict:
    return score_answer_file(answers, read_captions(o.data, o.images))


BENCHMARK = Benchmark(
    name="vsr",
    description="VSR: true/false spatial relations of captions; accuracy, per relation and meta-category",
    options=VsrOptions,
    score=_score,
    build_task=_task,
)
