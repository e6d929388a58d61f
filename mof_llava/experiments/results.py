"""Evaluation results: the metrics files that `mof-llava eval run` writes, read into comparable rows.

Each `metrics.json` (benchmark, `score`, and under `run` the model's saved config and the settings
and data files of the evaluation) becomes a `Result`. Which table row it belongs to comes from the
run's `experiment.json` (written by `mof-llava sweep plan` and by the demo): runs that differ only by
seed share a `group`. A metrics file outside such a run folder forms a group of its own, named by
the answers' model id. What the model *is* (mixer, alpha, towers) is read from the model's own saved
config, never from folder names.

Scores of one benchmark are only comparable when they were made the same way: same question files
(sha256), prompts, decoding, labels and grader. `check_comparable` refuses to put different ones in
one column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import find_record

DEFAULT_PROXY = "mmbench"  # the instruction-following score `tables` plots against alpha

METRICS_FILE = "metrics.json"
# The paper's column order; other benchmarks follow by name.
BENCHMARK_ORDER = ("mmvp", "pope", "mmbench", "gqa")
BENCHMARK_TITLES = {
    "mmvp": "MMVP",
    "pope": "POPE",
    "mmbench": "MMBench",
    "gqa": "GQA",
    "mmvp-vlm": "MMVP-VLM",
}


class ResultsError(ValueError):
    pass


@dataclass
class Result:
    path: Path  # the metrics file
    benchmark: str
    score: float | None
    run: str  # one trained model
    group: str  # the table row: runs that differ only by seed
    arm: str | None
    seed: int | None
    mixer_mode: str | None
    alpha: float | None
    towers: tuple[str, ...]
    signature: dict[str, Any]  # what must agree within a benchmark's column
    metrics: dict[str, Any] = field(repr=False, default_factory=dict)
    ablation: dict[str, str] | None = None  # a tower ablated at inference (evaluation.md, attribution)
    base_group: str | None = None  # the group of the same model without the ablation
    tuned_from: str | None = None  # a preference run's: the group of the model it was trained from


@dataclass
class Collection:
    results: list[Result]
    skipped: list[str]  # metrics-looking files that are not evaluation metrics, with the reason


def collect(paths: Iterable[str | Path]) -> Collection:
    """Every metrics.json under the given folders (or the given files)."""
    results, skipped = [], []
    for given in paths:
        given = Path(given)
        if given.is_file():
            files = [given]
        elif given.is_dir():
            files = sorted(given.rglob(METRICS_FILE))
        else:
            raise ResultsError(f"{given}: no such file or folder")
        for path in files:
            try:
                results.append(read_result(path))
            except ResultsError as err:
                skipped.append(str(err))
    _check_unique(results)
    return Collection(results, skipped)


def read_result(path: Path) -> Result:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(metrics, dict) or "benchmark" not in metrics or "score" not in metrics:
        raise ResultsError(f"{path}: not an evaluation metrics file (needs `benchmark` and `score`)")
    run_info = metrics.get("run") or {}
    model_config = run_info.get("model_config") or {}
    mixer = model_config.get("mixer") or {}
    found = find_record(path)  # the run folder holding the file, however the file was given
    if found is not None:
        _, record = found
        run, group, arm, seed = record.run, record.group, record.arm, record.seed
        tuned_from = record.base
    else:
        run = group = str(run_info.get("model_id") or path.parent.name)
        arm, seed, tuned_from = None, None, None
    ablation, base_group = run_info.get("ablation"), group
    if ablation:  # the same model with a tower removed is a row of its own, never pooled with it
        run, group = f"{run}/{ablation['label']}", f"{group}/{ablation['label']}"
    score = metrics["score"]
    return Result(
        path=path,
        benchmark=str(metrics["benchmark"]),
        score=float(score) if score is not None else None,
        run=run,
        group=group,
        arm=arm,
        seed=seed,
        mixer_mode=mixer.get("mode"),
        alpha=float(mixer["alpha"]) if mixer.get("mode") == "additive" and "alpha" in mixer else None,
        towers=tuple(t.get("name", "?") for t in model_config.get("vision_towers") or ()),
        signature=signature(metrics),
        metrics=metrics,
        ablation=ablation or None,
        base_group=base_group if ablation else None,
        tuned_from=tuned_from,
    )


def signature(metrics: dict[str, Any]) -> dict[str, Any]:
    """How the score was made, as far as the metrics file records it."""
    run = metrics.get("run") or {}
    files = {}
    for role, entry in (run.get("data_files") or {}).items():
        if entry.get("kind") == "folder":
            continue  # image folders are not hashed; the question files name the images
        files[role] = entry.get("sha256") or f"{entry.get('bytes')} bytes"
    return {
        "settings": run.get("settings"),
        "template": run.get("template"),
        "max_new_tokens": run.get("max_new_tokens"),
        "image_aspect_ratio": run.get("image_aspect_ratio"),
        "decoding": run.get("decoding"),
        "questions": run.get("questions"),
        "limit": run.get("limit"),
        "data_files": files or None,
        # scorer settings that some benchmarks record at the top level
        **{k: metrics.get(k) for k in ("grader", "labels", "matching", "version") if k in metrics},
    }


def check_comparable(results: list[Result]) -> None:
    """Every benchmark's scores were made the same way, or an error naming what differs and where."""
    by_benchmark: dict[str, list[Result]] = {}
    for result in results:
        by_benchmark.setdefault(result.benchmark, []).append(result)
    for benchmark, group in by_benchmark.items():
        variants: dict[str, list[Result]] = {}
        for result in group:
            variants.setdefault(json.dumps(result.signature, sort_keys=True), []).append(result)
        if len(variants) > 1:
            first, *others = list(variants.values())
            differing = sorted(
                k
                for other in others
                for k in first[0].signature
                if first[0].signature[k] != other[0].signature.get(k)
            )
            listing = "; ".join(f"{[r.run for r in members]}" for members in variants.values())
            raise ResultsError(
                f"{benchmark}: the runs were evaluated differently ({', '.join(dict.fromkeys(differing))} differ) "
                f"and cannot share a column: {listing}. Evaluate them again the same way, or pass --allow-mixed"
            )


def _check_unique(results: list[Result]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for result in results:
        key = (result.run, result.benchmark)
        if key in seen:
            raise ResultsError(
                f"two {result.benchmark} metrics files for run {result.run}: {seen[key]} and {result.path}; "
                "give only one of them"
            )
        seen[key] = result.path


def benchmark_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [b for b in BENCHMARK_ORDER if b in names] + sorted(names - set(BENCHMARK_ORDER))


def title(benchmark: str) -> str:
    return BENCHMARK_TITLES.get(benchmark, benchmark)
