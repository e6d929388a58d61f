"""The evaluation verbs: one call each, a typed config in, a typed result out.

    evaluate(EvalConfig(benchmark="pope", options=PopeOptions(data=...), model=DIR)) -> EvalResult
    score(ScoreConfig(benchmark="pope", options=..., answers=FILE)) -> metrics
    merge(MergeConfig(benchmark="pope", options=..., output_dir=DIR)) -> EvalResult
    export(ExportConfig(benchmark="gqa", answers=FILE, output=FILE))  what a grader reads
    analyze_patterns(patterns, mllm, clip, output_dir)  per-pattern MMVP analysis and figures

Any benchmark of the registry (registry.py) runs through the one runner (runner.py): sharded under
torchrun, resumable, with the same run signature and provenance. `mof-llava eval` is these verbs
behind flags generated from the same dataclasses (mof_llava/commands/eval.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..data.images import DEFAULT_IMAGE_LOADING
from . import registry
from .registry import Answerer, option
from .run_options import MllmRunFlags
from .runner import Distributed


class EvalConfigError(ValueError):
    """An evaluation config that cannot run (wrong options type, a verb the benchmark lacks)."""


_RUN = frozenset({"run"})


@dataclass(frozen=True, kw_only=True)
class EvalConfig(MllmRunFlags):
    """One evaluation: the benchmark, its options (the dataclass its registry entry names), and
    the model and runner settings of `MllmRunFlags` (model, output_dir, device, batch_size ...).
    `ablate_tower` evaluates with one tower's contribution removed (mixer.TowerAblation)."""

    benchmark: str
    options: Any  # an instance of `registry.get(benchmark).options`
    dist: Distributed | None = None  # this process's shard (default: torchrun's environment)
    ablate_tower: str | None = option(
        None,
        "per-tower attribution: evaluate with this tower's contribution removed (e.g. dinov2); the "
        "answers go to <bench>-without-<tower>-<mode> by default",
        actions=_RUN,
    )
    ablation: str = option(
        "zero",
        "how --ablate-tower removes it: zero (its tokens, or its features before a shared adapter), "
        "drop (its interleaved tokens; fewer per image) or blank (a blank image's in their place)",
        actions=_RUN,
    )
    tags_file: Path | None = option(
        None,
        "for a model trained with LION's tag soft prompt: the images' tags, a precomputed tags file "
        "({image: [tags]} JSON or {\"image\", \"tags\"} JSONL, see `mof-llava tags`; keys may be any tail of "
        "the image paths)",
        actions=_RUN,
    )
    no_tags: bool = option(
        False, "evaluate a model trained with the tag soft prompt without tags", actions=_RUN
    )

    def tower_ablation(self):
        """The `mixer.TowerAblation` asked for, or None."""
        if self.ablate_tower is None:
            return None
        from ..model.mixer import TowerAblation

        return TowerAblation(self.ablate_tower, self.ablation)


@dataclass(frozen=True)
class EvalResult:
    benchmark: str
    output_dir: Path
    answers: Path
    metrics_file: Path
    metrics: dict[str, Any] | None  # None on the ranks other than 0 of a sharded run


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    benchmark: str
    options: Any
    answers: Path = option(help="answer file in LLaVA's answer format (JSONL)")
    output: Path | None = option(None, "also write the full metrics (per-item tables included) here")


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    benchmark: str
    options: Any
    output_dir: Path = option(help="the folder of the sharded run")


_EXPORT = frozenset({"export"})


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    benchmark: str
    answers: Path = option(help="answer file in LLaVA's answer format (JSONL)", actions=_EXPORT)
    data: Path | None = option(None, "mmbench: the TSV the answers are for", actions=_EXPORT)
    output: Path = option(help="e.g. testdev_balanced_predictions.json, or submission.xlsx", actions=_EXPORT)


def _entry(benchmark: str, options: Any) -> registry.Benchmark:
    bench = registry.get(benchmark)
    if not isinstance(options, bench.options):
        raise EvalConfigError(
            f"{benchmark}: options must be a {bench.options.__name__}, got {type(options).__name__}"
        )
    return bench


def build_task(bench: registry.Benchmark, options: Any, max_new_tokens: int | None, image_loading: str):
    if bench.build_task is None:
        raise EvalConfigError(f"{bench.name} has no task for the runner (it only scores answer files)")
    task = bench.build_task(options, max_new_tokens)
    task.image_loading = image_loading
    return task


def eval_task(config: EvalConfig):
    """The `EvalTask` the runner answers for `config`: the benchmark's questions and settings."""
    bench = _entry(config.benchmark, config.options)
    return build_task(bench, config.options, config.max_new_tokens, config.image_loading)


def _mllm_describe(config: EvalConfig, device: str) -> dict[str, Any]:
    from . import generation  # looked up at call time: tests stand in a fake model here

    info = generation.model_info(config.model, device, config.dtype)
    ablation = config.tower_ablation()
    if ablation is not None:  # refused here, before answers are recorded, when it cannot apply
        from ..model.configuration import MixerSpec
        from ..model.mixer import check_ablation

        saved = info.get("model_config") or {}
        names = [t["name"] for t in saved.get("vision_towers") or ()]
        check_ablation(ablation, MixerSpec.from_dict(saved.get("mixer") or {}), names)
    return info


def _mllm_load(task, config: EvalConfig, device: str):
    from . import generation

    model, processor = generation.load_model(config.model, device, config.dtype)
    ablation = config.tower_ablation()
    if ablation is not None:
        from ..model.mixer import ablate_tower

        ablate_tower(model, ablation)
        processor.num_image_tokens = model.mixer.num_visual_tokens  # fewer after a drop
    # task ids only for a model with MoA (lion.py): without one the call is the one it always was
    routing = {} if task.moa_task is None else {"moa_task": task.moa_task}
    return generation.make_generate_fn(
        model, processor, task.max_new_tokens, task.image_aspect_ratio, **routing
    )


def apply_lion_options(
    task, config: EvalConfig, bench: registry.Benchmark, model_info: dict[str, Any]
) -> None:
    """Set `task` up for the LION parts the saved model has (benchmarks/lion.py): the MoA task that
    answers, and the tag sentence in front of every question. Refuses, before any answer is made,
    an evaluation that cannot be made as the model was trained."""
    from . import lion

    if bench.answerer is not None:
        if config.tags_file is not None or config.no_tags:
            raise EvalConfigError(f"{bench.name}: --tags-file and --no-tags apply to mof-llava checkpoints")
        return
    saved = model_info.get("model_config") or {}
    task.moa_task = lion.moa_task(saved, bench.moa_task, bench.name)
    task.tags = lion.tag_source(saved, config.tags_file, config.no_tags)
    if isinstance(task.tags, dict):
        task.questions = lion.tagged_questions(task.questions, config.tags_file)


MLLM = Answerer(describe=_mllm_describe, load=_mllm_load)  # a mof-llava checkpoint, greedy decoding


def evaluate(config: EvalConfig) -> EvalResult:
    """Answer the benchmark's questions still unanswered in the output folder (this process's
    shard), merge the shards and score. A finished folder is re-scored without loading the model."""
    from ..paths import check_model_path
    from ..threads import apply_cpu_threads
    from .generation import pick_device
    from .runner import ANSWERS_FILE, METRICS_FILE, RunOptions, default_output_dir, result_name, run_task

    bench = _entry(config.benchmark, config.options)
    check_model_path(config.model, "--model")  # errors name the field by its flag, as the CLI shows it
    ablation = config.tower_ablation()
    if ablation is not None and bench.answerer is not None:
        raise EvalConfigError(f"{bench.name}: --ablate-tower applies to mof-llava checkpoints, not to this benchmark's models")
    folder = bench.name if ablation is None else f"{bench.name}-{ablation.label}"
    output_dir = Path(config.output_dir or default_output_dir(config.model, folder))
    task = eval_task(config)
    dist = config.dist or Distributed.from_env()
    device = pick_device(config.device, dist.local_rank)
    if device.startswith("cpu"):
        apply_cpu_threads(config.threads, "--threads")
    answerer = bench.answerer or MLLM
    model_info = answerer.describe(config, device)
    apply_lion_options(task, config, bench, model_info)
    options = RunOptions(
        output_dir=output_dir,
        model=str(config.model),
        model_id=config.model_id or result_name(config.model),
        batch_size=config.batch_size,
        limit=config.limit,
        progress=not config.no_progress,
        model_info=model_info,
        ablation=ablation.to_dict() if ablation is not None else None,
    )
    metrics = run_task(task, lambda: answerer.load(task, config, device), options, dist)
    return EvalResult(bench.name, output_dir, output_dir / ANSWERS_FILE, output_dir / METRICS_FILE, metrics)


def score(config: ScoreConfig) -> dict[str, Any]:
    """Score an answer file made anywhere (LLaVA's answer format); with `output`, also write the
    full metrics there."""
    bench = _entry(config.benchmark, config.options)
    metrics = bench.score(config.options, Path(config.answers))
    metrics["answers"] = str(config.answers)
    if config.output:
        write_json_atomic(config.output, metrics, indent=1, ensure_ascii=False)
    if bench.after_score is not None:
        bench.after_score(config.options, Path(config.answers), metrics)
    return metrics


def merge(config: MergeConfig) -> EvalResult:
    """Finish a sharded run by hand (its processes died after answering): merge the part files in
    question order, write the exports and metrics.json with the run's recorded provenance."""
    from .runner import METRICS_FILE, RUN_FILE, merge_parts

    bench = _entry(config.benchmark, config.options)
    output_dir = Path(config.output_dir)
    task = build_task(bench, config.options, None, DEFAULT_IMAGE_LOADING)  # answers exist: loads no image
    answers_path = merge_parts(output_dir, task.questions)
    for name, write in task.exports.items():
        write(answers_path, output_dir / name)
    metrics = task.score(answers_path)
    metrics["answers"] = str(answers_path)
    run_file = output_dir / RUN_FILE
    recorded = json.loads(run_file.read_text()).get("provenance") if run_file.is_file() else None
    if recorded:  # how the answers were made, as the interrupted run recorded it
        metrics["run"] = {**recorded, "merged_by": "mof-llava eval merge", "answers": str(answers_path)}
    write_json_atomic(output_dir / METRICS_FILE, metrics, indent=1)
    return EvalResult(bench.name, output_dir, answers_path, output_dir / METRICS_FILE, metrics)


def export(config: ExportConfig) -> Path:
    """Write what the benchmark's official grader reads (GQA's predictions, MMBench's .xlsx)."""
    bench = registry.get(config.benchmark)
    if bench.export is None:
        raise EvalConfigError(f"{config.benchmark} has no export; {', '.join(exportable())} do")
    bench.export(config.answers, config.data, config.output)
    return Path(config.output)


def exportable() -> list[str]:
    return sorted(b.name for b in registry.benchmarks() if b.export is not None)


def analyze_patterns(
    patterns: Path,
    mllm: Mapping[str, Path],
    clip: Mapping[str, Path],
    output_dir: Path,
) -> dict[str, Any]:
    """Per-pattern MMVP accuracy of MLLM runs (their MMVP metrics.json by name), its correlation
    with CLIP models' MMVP-VLM scores, and the figures; writes patterns.json and the PNGs into
    `output_dir`. Returns {"correlations": [...], "figures": [paths]}."""
    from . import plots
    from .analysis import analyze, read_pattern_map

    if not mllm:
        raise EvalConfigError("analyze needs at least one MLLM run (an MMVP metrics.json)")
    result = analyze(_read_metrics(mllm), _read_metrics(clip), read_pattern_map(patterns))
    out = Path(output_dir)
    write_json_atomic(out / "patterns.json", result, indent=1)
    per_mllm = {n: {p: v["accuracy"] for p, v in r["per_pattern"].items()} for n, r in result["mllm"].items()}
    per_clip = {n: {p: v["accuracy"] for p, v in r.items()} for n, r in result["clip"].items()}
    title = "MMVP accuracy per visual pattern"
    figures = [
        plots.radar_chart(per_mllm, out / "mmvp_patterns_radar.png", title),
        plots.bar_chart(per_mllm, out / "mmvp_patterns_bar.png", title),
    ]
    if per_clip:
        figures.append(
            plots.radar_chart(per_clip, out / "mmvp_vlm_patterns_radar.png", "MMVP-VLM accuracy per pattern")
        )
        points = [
            (f"{c['mllm']} vs {c['clip']}", per_clip[c["clip"]], per_mllm[c["mllm"]], c["pearson_r"])
            for c in result["correlations"]
        ]
        figures.append(
            plots.correlation_scatter(points, out / "correlation_scatter.png", "Per-pattern scores")
        )
    return {"correlations": result["correlations"], "figures": [str(f) for f in figures]}


def _read_metrics(named: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: json.loads(Path(path).read_text(encoding="utf-8")) for name, path in named.items()}
