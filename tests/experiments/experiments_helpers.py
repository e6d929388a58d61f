"""Planting run folders and metrics files the way the job scripts and `mof-llava eval run` leave them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mof_llava.experiments.layout import RunLayout, RunRecord

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "configs" / "experiments"

QUESTIONS_SHA = {
    "mmvp": "a" * 64,
    "pope": "b" * 64,
    "mmbench": "c" * 64,
    "gqa": "d" * 64,
}


def plant_run(
    root: Path, run: str, group: str, arm: str, seed: int | None = None, benchmarks=("mmvp",)
) -> Path:
    folder = root / run
    RunRecord(
        sweep="planted",
        run=run,
        group=group,
        arm=arm,
        seed=seed,
        benchmarks=list(benchmarks),
        steps=RunLayout(folder).steps(list(benchmarks)),
    ).save(folder)
    return folder


def metrics(
    benchmark: str,
    score: float | None,
    mode: str = "none",
    alpha: float = 0.0,
    towers=("clip",),
    per_question: dict | None = None,
    **run_changes,
) -> dict:
    """A metrics.json as the evaluation runner writes it (the fields tables read)."""
    run = {
        "model": "/somewhere/stage2/model",
        "model_id": "planted",
        "model_config": {
            "mixer": {
                "mode": mode,
                "alpha": alpha,
                "adapter": "mlp2x_gelu",
                "grid": None,
                "additive_projection": False,
            },
            "vision_towers": [{"name": t} for t in towers],
        },
        "template": "vicuna_v1",
        "max_new_tokens": 128,
        "image_aspect_ratio": "pad",
        "decoding": "greedy",
        "settings": {"prompt": "llava", "labels": "original", "grader": "ours"}
        if benchmark == "mmvp"
        else {},
        "data_files": {
            "questions": {
                "path": f"/data/{benchmark}/questions",
                "bytes": 10,
                "sha256": QUESTIONS_SHA[benchmark],
            },
            "images": {"path": f"/data/{benchmark}/images", "kind": "folder"},
        },
        "questions": 300,
        "limit": None,
    }
    run.update(run_changes)
    out = {"benchmark": benchmark, "score": score, "run": run}
    if per_question is not None:
        out["per_question"] = per_question
    return out


def write_metrics(run_folder: Path, content: dict) -> Path:
    path = run_folder / "eval" / content["benchmark"] / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def write_sweep(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path
