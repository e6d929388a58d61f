"""`mof-llava eval`: run a checkpoint on a benchmark, re-score answer files, analyse MMVP patterns.

    mof-llava eval run BENCH --model DIR --data PATH [--output-dir DIR]   generate answers and score them
    mof-llava eval score BENCH --answers FILE <benchmark files>          score any LLaVA-format answer file
    mof-llava eval merge BENCH --output-dir DIR <benchmark files>        merge the shards of a sharded run
    mof-llava eval export gqa --answers FILE --output FILE                GQA predictions for the official eval.py
    mof-llava eval export mmbench --answers FILE --data TSV --output F.xlsx  MMBench upload for OpenCompass
    mof-llava eval analyze --patterns MAP --mllm NAME=METRICS --clip NAME=METRICS --output-dir DIR

BENCH is one of {benchmarks}. Under torchrun, `run` shards the questions
over the processes (see eval/run.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mof_llava.benchmarks import registry
from mof_llava.benchmarks.registry import option
from mof_llava.benchmarks.run_options import MllmRunFlags
from mof_llava.commands.dataclass_args import add_arguments, from_args
from mof_llava.data.images import DEFAULT_IMAGE_LOADING

# Per-item tables and run provenance kept out of the printed summary (they are in the --output /
# metrics.json file).
_BULKY_KEYS = ("groups", "per_question", "per_pair", "run")


@dataclass(frozen=True, kw_only=True)
class _ScoreFlags:
    answers: Path = option(help="answer file in LLaVA's answer format (JSONL)")
    output: Path | None = option(None, "also write the full metrics (per-item tables included) here")


@dataclass(frozen=True, kw_only=True)
class _MergeFlags:
    output_dir: Path = option(help="the folder of the sharded run")


# ---------------------------------------------------------------------------------------------
# Arguments: each benchmark's flags come from its registry entry (mof_llava/benchmarks/registry.py)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on MMVP, MMVP-VLM, POPE, MMBench, GQA; re-score answer files",
        description=__doc__.format(benchmarks=", ".join(registry.names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="eval_action", metavar="ACTION", required=True)
    entries = registry.benchmarks()
    for action, help_text, func in (
        ("run", "generate a benchmark's answers with a model, then score them", _cmd_run),
        ("score", "score an answer file in LLaVA's answer format", _cmd_score),
        ("merge", "merge the part files of a sharded run and score", _cmd_merge),
    ):
        benches = actions.add_parser(action, help=help_text).add_subparsers(
            dest="benchmark", metavar="BENCH", required=True
        )
        for bench in entries:
            sub = benches.add_parser(bench.name, help=bench.description, description=bench.description)
            # the benchmark's files and settings, the action's flags, then this action's extras
            add_arguments(sub, bench.options, action, only_this_action=False)
            add_arguments(sub, _action_flags(bench, action), action)
            add_arguments(sub, bench.options, action, only_this_action=True)
            sub.set_defaults(func=func)

    export = actions.add_parser(
        "export",
        help="write what an official grader reads: GQA's testdev_balanced_predictions.json, MMBench's .xlsx",
    )
    export.add_argument("benchmark", choices=sorted(b.name for b in entries if b.export is not None))
    export.add_argument("--answers", type=Path, required=True)
    export.add_argument("--data", type=Path, help="mmbench: the TSV the answers are for")
    export.add_argument(
        "--output", type=Path, required=True, help="e.g. testdev_balanced_predictions.json, or submission.xlsx"
    )
    export.set_defaults(func=_cmd_export)
    _add_analyze(actions)


def _action_flags(bench: registry.Benchmark, action: str) -> type:
    """The flags every benchmark has for `action`: the model's for run, the answer file's for score."""
    return {"run": bench.run_flags or MllmRunFlags, "score": _ScoreFlags, "merge": _MergeFlags}[action]


def _add_analyze(actions) -> None:
    analyze = actions.add_parser("analyze", help="per-pattern MMVP analysis, CLIP correlation and plots")
    analyze.add_argument(
        "--patterns", type=Path, required=True, help="MMVP question -> pattern map (CSV or JSON)"
    )
    analyze.add_argument(
        "--mllm",
        action="append",
        default=[],
        metavar="NAME=METRICS",
        help="an MMVP metrics.json (repeatable)",
    )
    analyze.add_argument(
        "--clip",
        action="append",
        default=[],
        metavar="NAME=METRICS",
        help="an MMVP-VLM metrics.json (repeatable)",
    )
    analyze.add_argument("--output-dir", type=Path, required=True)
    analyze.set_defaults(func=_cmd_analyze)


def build_task(args: argparse.Namespace):
    """The `EvalTask` for `run`/`merge` from the parsed arguments."""
    bench = registry.get(args.benchmark)
    if bench.build_task is None:
        raise SystemExit(f"no generation task for {bench.name}")
    task = bench.build_task(from_args(bench.options, args), getattr(args, "max_new_tokens", None))
    task.image_loading = getattr(args, "image_loading", DEFAULT_IMAGE_LOADING)
    return task


# ---------------------------------------------------------------------------------------------
# Commands


def _setup_logging() -> None:
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")


def _cpu_threads(threads: int | None, device: str) -> None:
    if device.startswith("cpu"):
        from mof_llava.threads import apply_cpu_threads

        apply_cpu_threads(threads, "--threads")


def _print_summary(metrics: dict[str, Any]) -> None:
    summary = {k: v for k, v in metrics.items() if k not in _BULKY_KEYS}
    print(json.dumps(summary, indent=1, ensure_ascii=False))


def _cmd_score(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic

    _setup_logging()
    bench = registry.get(args.benchmark)
    options = from_args(bench.options, args)
    metrics = bench.score(options, args.answers)
    metrics["answers"] = str(args.answers)
    if args.output:
        write_json_atomic(args.output, metrics, indent=1, ensure_ascii=False)
    if bench.after_score is not None:
        bench.after_score(options, args.answers, metrics)
    _print_summary(metrics)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mof_llava.benchmarks.runner import default_output_dir
    from mof_llava.paths import check_model_path

    check_model_path(args.model, "--model")
    _setup_logging()
    bench = registry.get(args.benchmark)
    output_dir = args.output_dir or default_output_dir(args.model, args.benchmark)
    if bench.run is not None:  # not through the runner (MMVP-VLM)
        flags = from_args(bench.run_flags or MllmRunFlags, args)
        metrics = bench.run(from_args(bench.options, args), flags, output_dir)
    else:
        metrics = _generate(args, output_dir)
    if metrics is not None:
        print(f"answers and metrics in {output_dir}", file=sys.stderr)
        _print_summary(metrics)
    return 0


def _generate(args: argparse.Namespace, output_dir: Path) -> dict[str, Any] | None:
    """The runner's path: sharded under torchrun, resumable, one mof-llava checkpoint."""
    from mof_llava.benchmarks.generation import load_model, make_generate_fn, model_info, pick_device
    from mof_llava.benchmarks.runner import Distributed, RunOptions, result_name, run_task

    flags = from_args(MllmRunFlags, args)
    dist = Distributed.from_env()
    task = build_task(args)
    device = pick_device(flags.device, dist.local_rank)
    _cpu_threads(flags.threads, device)
    options = RunOptions(
        output_dir=output_dir,
        model=str(flags.model),
        model_id=flags.model_id or result_name(flags.model),
        batch_size=flags.batch_size,
        limit=flags.limit,
        progress=not flags.no_progress,
        model_info=model_info(flags.model, device, flags.dtype),
    )

    def load_generator():
        model, processor = load_model(flags.model, device, flags.dtype)
        return make_generate_fn(model, processor, task.max_new_tokens, task.image_aspect_ratio)

    return run_task(task, load_generator, options, dist)


def _cmd_merge(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic
    from mof_llava.benchmarks.runner import METRICS_FILE, RUN_FILE, merge_parts

    _setup_logging()
    bench = registry.get(args.benchmark)
    if bench.build_task is None:
        raise SystemExit(f"{bench.name} runs are not sharded; nothing to merge")
    task = build_task(args)
    answers_path = merge_parts(args.output_dir, task.questions)
    for name, export in task.exports.items():
        export(answers_path, args.output_dir / name)
    metrics = task.score(answers_path)
    metrics["answers"] = str(answers_path)
    run_file = args.output_dir / RUN_FILE
    recorded = json.loads(run_file.read_text()).get("provenance") if run_file.is_file() else None
    if recorded:  # how the answers were made, as the interrupted run recorded it
        metrics["run"] = {**recorded, "merged_by": "mof-llava eval merge", "answers": str(answers_path)}
    write_json_atomic(args.output_dir / METRICS_FILE, metrics, indent=1)
    _print_summary(metrics)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    registry.get(args.benchmark).export(args.answers, args.data, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _named_files(values: list[str], flag: str) -> dict[str, dict[str, Any]]:
    named = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} takes NAME=PATH, got {value!r}")
        named[name] = json.loads(Path(path).read_text(encoding="utf-8"))
    return named


def _cmd_analyze(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic
    from mof_llava.benchmarks import plots
    from mof_llava.benchmarks.analysis import analyze, read_pattern_map

    if not args.mllm:
        raise SystemExit("analyze needs at least one --mllm NAME=METRICS (an MMVP metrics.json)")
    result = analyze(
        _named_files(args.mllm, "--mllm"), _named_files(args.clip, "--clip"), read_pattern_map(args.patterns)
    )
    out = args.output_dir
    write_json_atomic(out / "patterns.json", result, indent=1)
    mllm = {n: {p: v["accuracy"] for p, v in r["per_pattern"].items()} for n, r in result["mllm"].items()}
    clip = {n: {p: v["accuracy"] for p, v in r.items()} for n, r in result["clip"].items()}
    figures = [
        plots.radar_chart(mllm, out / "mmvp_patterns_radar.png", "MMVP accuracy per visual pattern"),
        plots.bar_chart(mllm, out / "mmvp_patterns_bar.png", "MMVP accuracy per visual pattern"),
    ]
    if clip:
        figures.append(
            plots.radar_chart(clip, out / "mmvp_vlm_patterns_radar.png", "MMVP-VLM accuracy per pattern")
        )
        points = [
            (f"{c['mllm']} vs {c['clip']}", clip[c["clip"]], mllm[c["mllm"]], c["pearson_r"])
            for c in result["correlations"]
        ]
        figures.append(
            plots.correlation_scatter(points, out / "correlation_scatter.png", "Per-pattern scores")
        )
    print(
        json.dumps({"correlations": result["correlations"], "figures": [str(f) for f in figures]}, indent=1)
    )
    return 0
