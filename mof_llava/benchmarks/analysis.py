"""Visual-pattern analysis (the paper's section on MMVP patterns): how an MLLM does on each of the
nine CLIP-blind patterns, and whether its per-pattern scores follow those of CLIP models.

- MMVP questions are assigned to patterns by a mapping file the user provides (the paper
  re-categorised MMVP's questions by hand; MMVP-VLM's own images are a different set). Accepted:
  a CSV with an `Index` column and a `Pattern` (or `Type`/`Category`) column, or a JSON object
  `{"<index>": "<pattern>"}` or `{"<pattern>": [indices]}`. Pattern names may be the MMVP-VLM
  folder names ("Color") or the long names ("Color and Appearance"); both map to the long names.
- Per-pattern MLLM accuracy is pair accuracy within the pattern (both questions of a pair must
  have the same pattern).
- The correlation is Pearson's r between the MLLM's and a CLIP model's per-pattern scores over
  the patterns both have.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..released import read_json_object
from .mmvp_vlm import PATTERNS

_LONG_NAMES = {name.lower(): name for name in PATTERNS.values()}
_SHORT_NAMES = {short.lower(): name for short, name in PATTERNS.items()}


class PatternMapError(ValueError):
    pass


def canonical_pattern(name: str) -> str:
    """The long pattern name for a short or long spelling; other names are kept as written."""
    key = " ".join(name.strip().lower().split())
    return _SHORT_NAMES.get(key) or _LONG_NAMES.get(key) or name.strip()


def read_pattern_map(path: str | Path) -> dict[int, str]:
    """MMVP question index -> pattern."""
    path = Path(path)
    if not path.is_file():
        raise PatternMapError(f"{path}: pattern mapping file not found")
    if path.suffix.lower() == ".json":
        data = read_json_object(path, PatternMapError, "a JSON object")
        mapping: dict[int, str] = {}
        for key, value in data.items():
            # {"pattern": [indices]} or {"index": "pattern"}
            pairs = [(index, key) for index in value] if isinstance(value, list) else [(key, value)]
            for index, pattern in pairs:
                mapping[_question_index(index, f"{path}: entry {key!r}")] = canonical_pattern(str(pattern))
        return mapping
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PatternMapError(f"{path}: empty mapping")
    columns = {c.strip().lower(): c for c in rows[0]}
    index_col = next(
        (columns[c] for c in ("index", "lndex", "question_id", "question id") if c in columns), None
    )
    pattern_col = next((columns[c] for c in ("pattern", "type", "category") if c in columns), None)
    if index_col is None or pattern_col is None:
        raise PatternMapError(f"{path}: needs an Index column and a Pattern column, got {list(rows[0])}")
    mapping = {}
    for line, row in enumerate(rows, start=2):
        pattern = row[pattern_col]
        if pattern is None or not pattern.strip():
            raise PatternMapError(f"{path}:{line}: no pattern for index {row[index_col]!r}")
        mapping[_question_index(row[index_col], f"{path}:{line}")] = canonical_pattern(pattern)
    return mapping


def _question_index(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PatternMapError(f"{where}: question index {value!r} is not an integer") from None


def per_pattern_pair_accuracy(correct: Mapping[int, bool], patterns: Mapping[int, str]) -> dict[str, Any]:
    """Pair accuracy per pattern from per-question correctness (MMVP metrics' `per_question`)."""
    pairs: dict[int, list[int]] = {}
    for index in correct:
        pairs.setdefault((index - 1) // 2, []).append(index)
    by_pattern: dict[str, list[bool]] = {}
    unmapped = 0
    for members in pairs.values():
        names = {patterns.get(i) for i in members}
        if names == {None}:
            unmapped += 1
            continue
        if len(names) != 1 or None in names:
            raise PatternMapError(
                f"questions {sorted(members)} form a pair but map to patterns {sorted(map(str, names))}"
            )
        by_pattern.setdefault(names.pop(), []).append(all(correct[i] for i in members))
    order = [p for p in PATTERNS.values() if p in by_pattern] + sorted(
        p for p in by_pattern if p not in PATTERNS.values()
    )
    return {
        "per_pattern": {
            p: {"accuracy": 100.0 * sum(by_pattern[p]) / len(by_pattern[p]), "pairs": len(by_pattern[p])}
            for p in order
        },
        "unmapped_pairs": unmapped,
    }


def mmvp_correctness(metrics: Mapping[str, Any], source: str = "<metrics>") -> dict[int, bool]:
    """Per-question correctness from an MMVP metrics file (`mof-llava eval run/score mmvp`)."""
    if metrics.get("benchmark") != "mmvp" or "per_question" not in metrics:
        raise PatternMapError(
            f"{source}: not an MMVP metrics file (needs benchmark 'mmvp' and 'per_question')"
        )
    return {int(k): bool(v["correct"]) for k, v in metrics["per_question"].items()}


def vlm_pattern_scores(metrics: Mapping[str, Any], source: str = "<metrics>") -> dict[str, float]:
    """Per-pattern accuracy from an MMVP-VLM metrics file."""
    if metrics.get("benchmark") != "mmvp-vlm":
        raise PatternMapError(f"{source}: not an MMVP-VLM metrics file")
    return {canonical_pattern(p): v["accuracy"] for p, v in metrics["per_pattern"].items()}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r, or None when undefined (fewer than 2 points or a constant series)."""
    if len(x) != len(y) or len(x) < 2:
        return None
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def correlate(mllm: Mapping[str, float], clip: Mapping[str, float]) -> dict[str, Any]:
    common = [p for p in mllm if p in clip]
    return {
        "pearson_r": pearson([mllm[p] for p in common], [clip[p] for p in common]),
        "patterns": common,
    }


def analyze(
    mllm_metrics: Mapping[str, Mapping[str, Any]],
    clip_metrics: Mapping[str, Mapping[str, Any]],
    patterns: Mapping[int, str],
) -> dict[str, Any]:
    """Per-pattern scores of each MLLM (name -> MMVP metrics) and each CLIP model (name -> MMVP-VLM
    metrics), and the correlation of every (MLLM, CLIP) combination."""
    mllm = {
        name: per_pattern_pair_accuracy(mmvp_correctness(m, name), patterns)
        for name, m in mllm_metrics.items()
    }
    clip = {name: vlm_pattern_scores(m, name) for name, m in clip_metrics.items()}
    mllm_scores = {name: {p: v["accuracy"] for p, v in r["per_pattern"].items()} for name, r in mllm.items()}
    return {
        "mllm": mllm,
        "clip": {name: {p: {"accuracy": s} for p, s in scores.items()} for name, scores in clip.items()},
        "correlations": [
            {"mllm": m, "clip": c, **correlate(mllm_scores[m], clip[c])} for m in mllm_scores for c in clip
        ],
    }
