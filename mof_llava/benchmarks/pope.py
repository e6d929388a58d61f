"""POPE (object hallucination): yes/no questions "Is there a X in the image?" on COCO val2014, in
three splits (random, popular, adversarial).

Files:
- annotations `coco_pope_{adversarial,popular,random}.json` from AoiDragon/POPE: JSON Lines
  despite the extension, `{"question_id", "image", "text", "label": "yes"|"no"}`. Two released
  versions: e3e39262 (pinned by LLaVA-1.5; random has 2910 questions) and later ones (3000 each).
- LLaVA's question file `llava_pope_test.jsonl`: the three files concatenated (adversarial,
  random, popular) with ids offset by 0 / 1e7 / 2e7, the short-answer instruction appended and a
  `category` field. Without it we build the same list from the annotations.

Scoring follows LLaVA's eval_pope.py (same as POPE's own evaluate.py):
- an answer counts as "no" when its first sentence (text before the first '.'), with commas
  removed and split on single spaces, contains the word "No", "no" or "not"; everything else,
  including an empty answer, "NO" or "Nope", counts as "yes";
- per split TP/FP/TN/FN with "yes" as the positive class, accuracy, precision, recall, F1 and the
  share of "yes" predictions;
- the number LLaVA-1.5 reports is the mean F1 of the three splits.

One deliberate difference: the reference pairs answers with labels by position, so an answer file
in another order, or questions from one POPE version scored against annotations of another,
silently shift every label. Here answers are matched to questions by `question_id`, questions to
annotations by position *with a check* that image and question text agree, and any mismatch is an
error. Where the reference divides by zero (a split with no "yes" predictions) precision is 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..prompts import SHORT_ANSWER
from .answers import answer_key, answer_text, check_coverage, load_answer_index
from .registry import RUNNING, Benchmark, option
from .task import EvalQuestion, EvalTask

if TYPE_CHECKING:
    import numpy as np

    from . import intervals

SPLITS = ("adversarial", "random", "popular")  # order of LLaVA's question file
# question_id offsets LLaVA's question file adds per split
LLAVA_ID_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
ANNOTATION_PREFIX, ANNOTATION_SUFFIX = "coco_pope_", ".json"
LLAVA_QUESTION_FILE = "llava_pope_test.jsonl"
MAX_NEW_TOKENS = 128  # LLaVA model_vqa_loader


class PopeDataError(ValueError):
    pass


@dataclass(frozen=True)
class PopeLine:
    """A line of an annotation file or of LLaVA's question file."""

    question_id: int | str
    image: str
    text: str
    category: str
    label: str | None  # "yes"/"no" in annotation files, None in question files
    source: str  # "file:line", for error messages


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            raise PopeDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in row:
        raise PopeDataError(f"{where}: missing field {name!r}")
    return row[name]


def find_annotation_files(annotation_dir: str | Path) -> dict[str, Path]:
    """split -> annotation file, for every `coco_pope_<split>.json` in the folder (other files are
    ignored, unlike the reference which fails on them)."""
    annotation_dir = Path(annotation_dir)
    if not annotation_dir.is_dir():
        raise PopeDataError(f"{annotation_dir}: POPE annotation folder not found")
    files = {
        p.name[len(ANNOTATION_PREFIX) : -len(ANNOTATION_SUFFIX)]: p
        for p in sorted(annotation_dir.glob(f"{ANNOTATION_PREFIX}*{ANNOTATION_SUFFIX}"))
    }
    if not files:
        raise PopeDataError(f"{annotation_dir}: no {ANNOTATION_PREFIX}<split>{ANNOTATION_SUFFIX} files")
    return files


def read_annotations(path: str | Path, split: str) -> list[PopeLine]:
    path = Path(path)
    lines = []
    for lineno, row in _read_jsonl(path):
        where = f"{path}:{lineno}"
        label = _field(row, "label", where)
        if label not in ("yes", "no"):
            raise PopeDataError(f"{where}: label must be 'yes' or 'no', got {label!r}")
        lines.append(
            PopeLine(
                _field(row, "question_id", where),
                _field(row, "image", where),
                _field(row, "text", where),
                split,
                label,
                where,
            )
        )
    if not lines:
        raise PopeDataError(f"{path}: empty annotation file")
    return lines


def read_llava_questions(path: str | Path) -> list[PopeLine]:
    """LLaVA's `llava_pope_test.jsonl` (or any question file in its format)."""
    path = Path(path)
    if not path.is_file():
        raise PopeDataError(f"{path}: POPE question file not found")
    lines = []
    for lineno, row in _read_jsonl(path):
        where = f"{path}:{lineno}"
        lines.append(
            PopeLine(
                _field(row, "question_id", where),
                _field(row, "image", where),
                _field(row, "text", where),
                _field(row, "category", where),
                None,
                where,
            )
        )
    return lines


def llava_questions_from_annotations(annotations: Mapping[str, Sequence[PopeLine]]) -> list[PopeLine]:
    """The question list LLaVA's `llava_pope_test.jsonl` holds, rebuilt from the annotation files."""
    unknown = sorted(set(annotations) - set(SPLITS))
    if unknown:
        raise PopeDataError(f"no LLaVA question-id offset for POPE split(s) {unknown}; pass a question file")
    questions = []
    for split in SPLITS:
        for ann in annotations.get(split, ()):
            questions.append(
                PopeLine(
                    int(ann.question_id) + LLAVA_ID_OFFSETS[split],
                    ann.image,
                    f"{ann.text}\n{SHORT_ANSWER}",
                    split,
                    None,
                    ann.source,
                )
            )
    return questions


@dataclass(frozen=True)
class PopeData:
    """Questions (what the model is asked, with their ids) aligned with annotations (labels)."""

    questions: list[PopeLine]
    labels: dict[str, list[tuple[PopeLine, PopeLine]]]  # split -> [(question, annotation)] in file order
    files: dict[str, str]


def load_pope(annotation_dir: str | Path, question_file: str | Path | None = None) -> PopeData:
    ann_files = find_annotation_files(annotation_dir)
    annotations = {split: read_annotations(path, split) for split, path in ann_files.items()}
    if question_file is None:
        questions = llava_questions_from_annotations(annotations)
    else:
        questions = read_llava_questions(question_file)
    labels = align(questions, annotations)
    files = {f"annotations_{s}": str(p) for s, p in ann_files.items()}
    if question_file is not None:
        files["questions"] = str(question_file)
    return PopeData(questions, labels, files)


def align(questions: Sequence[PopeLine], annotations: Mapping[str, Sequence[PopeLine]]) -> dict[str, list]:
    """Pair each question with its annotation. Questions of a split follow the annotation file's
    order (that is how LLaVA's question file was made); pairs must agree on image and question."""
    by_split: dict[str, list[PopeLine]] = {}
    for q in questions:
        by_split.setdefault(q.category, []).append(q)
    missing = sorted(set(by_split) - set(annotations))
    if missing:
        raise PopeDataError(f"questions of split(s) {missing} have no coco_pope_<split>.json annotation file")
    aligned = {}
    for split, qs in by_split.items():
        anns = annotations[split]
        if len(qs) != len(anns):
            raise PopeDataError(
                f"split {split!r}: the question file has {len(qs)} questions but {anns[0].source.rsplit(':', 1)[0]} "
                f"has {len(anns)}; they come from different POPE versions (LLaVA-1.5 pins e3e39262, whose random "
                "split has 2910 questions; later versions have 3000)"
            )
        for q, a in zip(qs, anns):
            if q.image != a.image or not (q.text == a.text or q.text.startswith(a.text + "\n")):
                raise PopeDataError(
                    f"split {split!r}: {q.source} (question_id {q.question_id}) asks {q.text.splitlines()[0]!r} "
                    f"about {q.image} but the matching annotation {a.source} asks {a.text!r} about {a.image}; "
                    "the question file and the annotations do not line up (different POPE versions?)"
                )
        aligned[split] = list(zip(qs, anns))
    return aligned


# ---------------------------------------------------------------------------------------------
# Scoring


def llava_yes_no(text: str) -> str:
    """LLaVA's POPE answer parser: "no" iff the first sentence holds the word No/no/not."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def confusion(predictions: Sequence[str], labels: Sequence[str]) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) with "yes" as the positive class."""
    pairs = list(zip(predictions, labels))
    return (
        sum(p == "yes" and g == "yes" for p, g in pairs),
        sum(p == "yes" and g == "no" for p, g in pairs),
        sum(p == "no" and g == "no" for p, g in pairs),
        sum(p == "no" and g == "yes" for p, g in pairs),
    )


def rates(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio as fractions, computed with the reference's
    order of operations (so the floats print identically)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = tp + fp + tn + fn
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
    }


def _f1_accuracy(drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percent F1 and accuracy of each resample; `drawn` is (resamples, n, 2) of (said yes, is yes)."""
    import numpy as np

    said, truth = drawn[..., 0], drawn[..., 1]
    tp, fp, fn = (said & truth).sum(1), (said & ~truth).sum(1), (~said & truth).sum(1)
    zeros = np.zeros(len(tp))
    precision = np.divide(tp, tp + fp, out=zeros.copy(), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=zeros.copy(), where=tp + fn > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=zeros, where=precision + recall > 0)
    return 100 * f1, 100 * (said == truth).mean(1)


def mean_f1(strata: Sequence[np.ndarray]) -> np.ndarray:
    """The score of each resample: percent F1 per split, averaged over the splits (an
    `intervals.Statistic`; each stratum is (resamples, n, 2) of (said yes, is yes))."""
    import numpy as np

    return np.mean([_f1_accuracy(d)[0] for d in strata], axis=0)


def add_intervals(splits: dict[str, dict[str, Any]], outcomes: Mapping[str, Sequence]) -> dict[str, Any]:
    """Per-split F1 / accuracy intervals (written into `splits`) and those of the means over the
    splits; questions are resampled within each split. `outcomes`: split -> [(said yes, is yes)]."""
    import numpy as np

    from . import intervals

    names = list(outcomes)
    drawn = intervals.draw([np.asarray(outcomes[n], dtype=bool) for n in names])
    per_split = {name: _f1_accuracy(d) for name, d in zip(names, drawn)}
    for name, (f1, acc) in per_split.items():
        splits[name]["f1_ci95"] = intervals.percentile_interval(f1)
        splits[name]["accuracy_ci95"] = intervals.percentile_interval(acc)
    return {
        "mean_f1_ci95": intervals.percentile_interval(mean_f1(drawn)),
        "mean_accuracy_ci95": intervals.percentile_interval(
            np.mean([a for _, a in per_split.values()], axis=0)
        ),
        "bootstrap": intervals.describe("question, within each split"),
    }


def per_question(
    predictions: Sequence[str], pairs: Sequence[tuple[PopeLine, PopeLine]]
) -> dict[str, list[str]]:
    """A split's question id -> [prediction, label], what the paired bootstrap resamples."""
    return {answer_key(q.question_id): [p, a.label] for p, (q, a) in zip(predictions, pairs)}


def paired_units(metrics: Mapping[str, Any]) -> intervals.Units | None:
    """The questions of each split as (said yes, is yes), with `mean_f1` as their statistic; None
    for metrics written before `per_question` was kept."""
    from . import intervals

    kept = metrics.get("per_question")
    if not isinstance(kept, dict):
        return None
    strata = {  # splits sorted: the mean over them does not depend on the order files list them in
        split: {qid: (said == "yes", label == "yes") for qid, (said, label) in kept[split].items()}
        for split in sorted(kept)
    }
    return intervals.Units.of(strata, mean_f1, dtype=bool)


def score_pope(
    answers: Mapping[str, Mapping[str, Any]], data: PopeData, answers_path: Path | str = "<answers>"
) -> dict:
    """Metrics of an answer index (see `answers.load_answer_index`). Rates in the result are percent."""
    check_coverage(answers, [q.question_id for q in data.questions], answers_path, "the POPE question file")
    splits, outcomes, kept = {}, {}, {}
    for split, pairs in data.labels.items():
        preds = [
            llava_yes_no(answer_text(answers[answer_key(q.question_id)], answers_path)) for q, _ in pairs
        ]
        labels = [a.label for _, a in pairs]
        tp, fp, tn, fn = confusion(preds, labels)
        percent = {k: 100 * v for k, v in rates(tp, fp, tn, fn).items()}
        splits[split] = {"n": len(preds), "tp": tp, "fp": fp, "tn": tn, "fn": fn, **percent}
        outcomes[split] = [(p == "yes", g == "yes") for p, g in zip(preds, labels)]
        kept[split] = per_question(preds, pairs)
    mean = {
        m: sum(s[m] for s in splits.values()) / len(splits) for m in ("f1", "accuracy", "precision", "recall")
    }
    cis = add_intervals(splits, outcomes)
    return {
        "benchmark": "pope",
        "score": mean["f1"],
        "metric": "mean F1 of the splits (percent)",
        "mean_f1": mean["f1"],
        "mean_accuracy": mean["accuracy"],
        "mean_precision": mean["precision"],
        "mean_recall": mean["recall"],
        "splits": splits,
        "questions_per_split": {s: len(p) for s, p in data.labels.items()},
        "score_ci95": cis["mean_f1_ci95"],
        **cis,
        "per_question": kept,
    }


def score_answer_file(answers_path: str | Path, data: PopeData) -> dict:
    return score_pope(load_answer_index(answers_path), data, answers_path)


def llava_report(metrics: Mapping[str, Any]) -> str:
    """The text LLaVA's eval_pope.py prints, from our metrics (for comparing logs side by side)."""
    out = []
    for split, m in metrics["splits"].items():
        r = rates(m["tp"], m["fp"], m["tn"], m["fn"])
        acc, prec, rec, f1, yes = (r[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
        out += [
            f"Category: {split}, # samples: {m['n']}",
            "TP\tFP\tTN\tFN\t",
            f"{m['tp']}\t{m['fp']}\t{m['tn']}\t{m['fn']}",
            f"Accuracy: {acc}",
            f"Precision: {prec}",
            f"Recall: {rec}",
            f"F1 score: {f1}",
            f"Yes ratio: {yes}",
            f"{f1:.3f}, {acc:.3f}, {prec:.3f}, {rec:.3f}, {yes:.3f}",
            "====================================",
        ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class PopePaths:
    annotations: Path
    questions: Path | None
    images: Path | None


def resolve_paths(
    data: str | Path | None,
    questions: str | Path | None = None,
    annotations: str | Path | None = None,
    images: str | Path | None = None,
) -> PopePaths:
    """Fill in the files of LLaVA's layout (`llava_pope_test.jsonl`, `coco/`, `val2014/` inside
    `data`) that were not given explicitly."""
    root = Path(data) if data is not None else None
    if annotations is None:
        if root is None:
            raise PopeDataError("POPE needs --annotations (the folder with coco_pope_*.json) or --data")
        annotations = root / "coco" if (root / "coco").is_dir() else root
    if questions is None and root is not None and (root / LLAVA_QUESTION_FILE).is_file():
        questions = root / LLAVA_QUESTION_FILE
    if images is None and root is not None and (root / "val2014").is_dir():
        images = root / "val2014"
    return PopePaths(
        Path(annotations), Path(questions) if questions else None, Path(images) if images else None
    )


def build_task(
    paths: PopePaths, template: str = "vicuna_v1", max_new_tokens: int = MAX_NEW_TOKENS
) -> EvalTask:
    data = load_pope(paths.annotations, paths.questions)
    if paths.images is None:
        raise PopeDataError("POPE needs the COCO val2014 image folder (--images, or val2014/ inside --data)")
    questions = [
        EvalQuestion(q.question_id, q.text, image_path=paths.images / q.image) for q in data.questions
    ]
    return EvalTask(
        benchmark="pope",
        questions=questions,
        template=template,
        max_new_tokens=max_new_tokens,
        settings={"parser": "llava_eval_pope"},
        data_files={**data.files, "images": str(paths.images)},
        score=lambda answers_path: score_answer_file(answers_path, data),
    )


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval pope)


@dataclass(frozen=True, kw_only=True)
class PopeOptions:
    data: Path | None = option(None, "folder in LLaVA's layout: llava_pope_test.jsonl, coco/, val2014/")
    questions: Path | None = option(
        None,
        "LLaVA's question file llava_pope_test.jsonl "
        "(default: built from the annotations the way LLaVA built it)",
    )
    annotations: Path | None = option(None, "folder with coco_pope_{adversarial,popular,random}.json")
    images: Path | None = option(None, "COCO val2014 image folder", actions=RUNNING)
    llava_report: bool = option(
        False, "also print eval_pope.py's text report to stderr", actions=frozenset({"score"})
    )


def _task(o: PopeOptions, max_new_tokens: int | None) -> EvalTask:
    paths = resolve_paths(o.data, o.questions, o.annotations, o.images)
    return build_task(paths, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS)


def _score(o: PopeOptions, answers: Path) -> dict:
    paths = resolve_paths(o.data, o.questions, o.annotations)
    return score_answer_file(answers, load_pope(paths.annotations, paths.questions))


def _after_score(o: PopeOptions, answers: Path, metrics: dict) -> None:
    if o.llava_report:
        print(llava_report(metrics), file=sys.stderr, end="")


BENCHMARK = Benchmark(
    name="pope",
    description="POPE: object hallucination yes/no questions on COCO; mean F1 of 3 splits",
    options=PopeOptions,
    score=_score,
    build_task=_task,
    after_score=_after_score,
)
