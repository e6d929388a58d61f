"""Referring expression comprehension (RefCOCO, RefCOCO+, RefCOCOg): the model names the box of
the object an expression describes; a hit is IoU >= 0.5 with the annotated box, per split.

Files: a release folder in the layout of `lmms-lab/RefCOCO` (read by `mof_llava.data.rec`; one
dataset per folder, splits by file name: refcoco and refcoco+ val/testA/testB, refcocog val/test),
and `--images` for rows that carry no picture bytes. One question per referring expression.

Prompt (`--prompt`): `lion` (default) LION's region-level question, the one the training records
of `mof-llava data rec` ask (`data/rec.py`); `lmms-eval` lmms-eval's RefCOCO bbox_rec instruction
followed by the expression.

Scoring: the first box in the answer (`data/boxes.parse_box`), read in the model's input frame
(`--frame`, default pad: normalised to the padded square the model saw; `image`: normalised to
the picture itself, as LION and lmms-eval's answers are), mapped back to picture pixels and
compared with the annotated box. No box (`unread`) and a box outside [0, 1], empty or reversed
(`improper`) are misses. Per split: accuracy (Acc@0.5), mean IoU; `score` = the mean of the split
accuracies (LION averages its splits so). Intervals resample objects (an object's expressions
share its picture and box) within each split.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import boxes
from ..data.rec import REC_QUESTION, RecSample, read_rec_samples
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .registry import Benchmark, option
from .task import EvalQuestion, EvalTask

THRESHOLD = 0.5
MAX_NEW_TOKENS = 64
LMMS_EVAL_INSTRUCTION = (
    "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, "
    "bottom-right y). All values are floating point numbers bounded between 0 and 1. Please provide "
    "the bounding box coordinate of the region this sentence describes: "
)
PROMPTS = ("lion", "lmms-eval")


class RecOptionsError(ValueError):
    """REC options that cannot run; the message names the option."""


def question_text(expression: str, prompt: str = "lion") -> str:
    if prompt == "lmms-eval":
        return LMMS_EVAL_INSTRUCTION + expression
    if prompt == "lion":
        return REC_QUESTION.format(expression=expression)
    raise RecOptionsError(f"prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")


def iou(a: boxes.Box, b: boxes.Box) -> float:
    inter = boxes.area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = boxes.area(a) + boxes.area(b) - inter
    return inter / union if union > 0 else 0.0


def read_answer(text: str, sample: RecSample, frame: boxes.BoxFrame) -> tuple[str, float]:
    """("hit" | "miss" | "unread" | "improper", IoU) of one answer."""
    box = boxes.parse_box(text)
    if box is None:
        return "unread", 0.0
    if not boxes.is_proper(box):
        return "improper", 0.0
    seen = boxes.to_model_input(sample.width, sample.height, frame).invert(box)
    overlap = iou(seen, sample.box)
    return ("hit" if overlap >= THRESHOLD else "miss"), overlap


def _objects(samples: Sequence[RecSample], hits: Sequence[bool]) -> dict[str, np.ndarray]:
    """split -> [objects, 2] array of (hits, expressions), an object being one source row."""
    by_split: dict[str, dict[str, list[int]]] = {}
    for s, hit in zip(samples, hits):
        counts = by_split.setdefault(s.split, {}).setdefault(s.sample_id.rsplit(":", 1)[0], [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
    return {split: np.asarray(list(objs.values()), dtype=float) for split, objs in by_split.items()}


def _intervals(objects: Mapping[str, np.ndarray]) -> tuple[dict[str, list[float]], list[float]]:
    from . import intervals

    splits = list(objects)
    drawn = intervals.draw([objects[s] for s in splits])
    accuracy = [100.0 * d[..., 0].sum(axis=1) / d[..., 1].sum(axis=1) for d in drawn]
    per_split = {s: intervals.percentile_interval(a) for s, a in zip(splits, accuracy)}
    return per_split, intervals.percentile_interval(np.mean(accuracy, axis=0))


def score_rec(
    answers: Mapping[str, Mapping[str, Any]],
    samples: Sequence[RecSample],
    frame: boxes.BoxFrame = "pad",
    answers_path: Path | str = "<answers>",
) -> dict[str, Any]:
    from . import intervals

    check_coverage(answers, [s.sample_id for s in samples], answers_path, "the REC data")
    readings = [
        read_answer(answer_text(answers[answer_key(s.sample_id)], answers_path), s, frame) for s in samples
    ]
    hits = [kind == "hit" for kind, _ in readings]
    per_split: dict[str, dict[str, Any]] = {}
    for s, (kind, overlap) in zip(samples, readings):
        row = per_split.setdefault(s.split, {"n": 0, "hits": 0, "iou": 0.0, "unread": 0, "improper": 0})
        row["n"] += 1
        row["hits"] += kind == "hit"
        row["iou"] += overlap
        if kind in ("unread", "improper"):
            row[kind] += 1
    split_ci, score_ci = _intervals(_objects(samples, hits))
    table = {
        split: {
            "accuracy": 100.0 * r["hits"] / r["n"],
            "accuracy_ci95": split_ci[split],
            "mean_iou": r["iou"] / r["n"],
            "n": r["n"],
            "unread": r["unread"],
            "improper": r["improper"],
        }
        for split, r in per_split.items()
    }
    return {
        "benchmark": "rec",
        "score": float(np.mean([t["accuracy"] for t in table.values()])),
        "metric": f"Acc@IoU>={THRESHOLD} (percent), mean over the splits",
        "score_ci95": score_ci,
        "frame": frame,
        "per_split": table,
        "questions": len(samples),
        "unread": sum(t["unread"] for t in table.values()),
        "improper": sum(t["improper"] for t in table.values()),
        "bootstrap": intervals.describe("object (its expressions together), within each split"),
    }


def score_answer_file(
    answers_path: str | Path, samples: Sequence[RecSample], frame: boxes.BoxFrame = "pad"
) -> dict:
    return score_rec(load_answer_index(answers_path), samples, frame, answers_path)


# ---------------------------------------------------------------------------------------------
# Running and registration (mof-llava eval rec)


def _question(sample: RecSample, prompt: str) -> EvalQuestion:
    encoded = base64.b64encode(sample.image_bytes).decode("ascii") if sample.image_bytes else None
    return EvalQuestion(
        sample.sample_id,
        question_text(sample.expression, prompt),
        image_path=sample.image_path,
        image_base64=encoded,
        answer_fields={"split": sample.split},
    )


def build_task(
    data: str | Path,
    images: str | Path | None = None,
    prompt: str = "lion",
    frame: boxes.BoxFrame = "pad",
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> EvalTask:
    if frame == "image":
        raise RecOptionsError(
            "--frame image scores other codebases' answers; a mof-llava model sees the pad or crop frame"
        )
    samples = read_rec_samples(data, images)
    return EvalTask(
        benchmark="rec",
        questions=[_question(s, prompt) for s in samples],
        template="vicuna_v1",
        max_new_tokens=max_new_tokens,
        settings={"prompt": prompt, "frame": frame, "threshold": THRESHOLD},
        data_files={"data": str(data), **({"images": str(images)} if images else {})},
        score=lambda path: score_answer_file(path, samples, frame),
        image_aspect_ratio=frame,
    )


@dataclass(frozen=True, kw_only=True)
class RecOptions:
    data: Path = option(
        help="RefCOCO-style release folder (<split>-*.parquet or <split>.jsonl, lmms-lab layout) or one file"
    )
    images: Path | None = option(
        None, "folder holding the rows' file_name pictures (rows without image bytes)"
    )
    prompt: str = option(
        "lion", "question wording: lion (LION's region question) or lmms-eval", choices=PROMPTS
    )
    frame: str = option(
        "pad",
        "frame the answers' boxes are in: pad (the padded square the model sees, default), crop, "
        "or image (normalised to the picture; scoring only)",
        choices=boxes.BOX_FRAMES,
    )


def _task(o: RecOptions, max_new_tokens: int | None) -> EvalTask:
    return build_task(o.data, o.images, o.prompt, o.frame, max_new_tokens or MAX_NEW_TOKENS)  # type: ignore[arg-type]


def _score(o: RecOptions, answers: Path) -> dict:
    return score_answer_file(answers, read_rec_samples(o.data, o.images), o.frame)  # type: ignore[arg-type]


BENCHMARK = Benchmark(
    name="rec",
    description="RefCOCO/+/g referring expressions: Acc@IoU>=0.5 per split, mean over splits",
    options=RecOptions,
    score=_score,
    build_task=_task,
    moa_task="region",  # referring expressions are LION's region-level task
)
