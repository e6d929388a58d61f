"""`mof-llava eval`: run a checkpoint on a benchmark, re-score answer files, analyse MMVP patterns.

    mof-llava eval run BENCH --model DIR --data PATH [--output-dir DIR]   generate answers and score them
    mof-llava eval score BENCH --answers FILE <benchmark files>          score any LLaVA-format answer file
    mof-llava eval merge BENCH --output-dir DIR <benchmark files>        merge the shards of a sharded run
    mof-llava eval export gqa --answers FILE --output FILE                GQA predictions for the official eval.py
    mof-llava eval export mmbench --answers FILE --data TSV --output F.xlsx  MMBench upload for OpenCompass
    mof-llava eval analyze --patterns MAP --mllm NAME=METRICS --clip NAME=METRICS --output-dir DIR

BENCH is one of {benchmarks}. Under torchrun, `run` shards the questions
over the processes (see benchmarks/runner.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mof_llava.benchmarks import registry
from mof_llava.commands.dataclass_args import add_arguments, from_args, name_values

# Per-item tables and run provenance kept out of the printed summary (they are in the --output /
# metrics.json file).
_BULKY_KEYS = ("groups", "per_question", "per_pair", "per_sample", "run")


def add_parser(subparsers) -> None:
    from mof_llava.benchmarks import evaluate as verbs

    parser = subparsers.add_parser(
        "eval",
        help="evaluate on MMVP, MMVP-VLM, POPE, MMBench, GQA; re-score answer files",
        description=__doc__.format(benchmarks=", ".join(registry.names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="eval_action", metavar="ACTION", required=True)
    entries = registry.benchmarks()
    for action, help_text, kind, verb in (
        (
            "run",
            "generate a benchmark's answers with a model, then score them",
            verbs.EvalConfig,
            verbs.evaluate,
        ),
        ("score", "score an answer file in LLaVA's answer format", verbs.ScoreConfig, verbs.score),
        ("merge", "merge the part files of a sharded run and score", verbs.MergeConfig, verbs.merge),
    ):
        benches = actions.add_parser(action, help=help_text).add_subparsers(
            dest="benchmark", metavar="BENCH", required=True
        )
        for bench in entries:
            sub = benches.add_parser(bench.name, help=bench.description, description=bench.description)
            # the benchmark's files and settings, the action's flags, then this action's extras
            add_arguments(sub, bench.options, action, only_this_action=False)
            add_arguments(sub, (action == "run" and bench.run_flags) or kind, action)
            add_arguments(sub, bench.options, action, only_this_action=True)
            sub.set_defaults(func=functools.partial(_cmd_verb, kind, verb))
    _add_export(actions, entries)
    _add_analyze(actions)


def _add_export(actions, entries) -> None:
    from mof_llava.benchmarks.evaluate import ExportConfig, exportable

    export = actions.add_parser(
        "export",
        help="write what an official grader reads: GQA's testdev_balanced_predictions.json, MMBench's .xlsx",
    )
    export.add_argument("benchmark", choices=exportable())
    add_arguments(export, ExportConfig, "export")
    export.set_defaults(func=_cmd_export)


def _add_analyze(actions) -> None:
    analyze = actions.add_parser("analyze", help="per-pattern MMVP analysis, CLIP correlation and plots")
    analyze.add_argument(
        "--patterns", type=Path, required=True, help="MMVP question -> pattern map (CSV or JSON)"
    )
    for flag, what in (("--mllm", "an MMVP metrics.json"), ("--clip", "an MMVP-VLM metrics.json")):
        analyze.add_argument(
            flag, action="append", default=[], metavar="NAME=METRICS", help=f"{what} (repeatable)",
            required=flag == "--mllm",
        )  # fmt: skip
    analyze.add_argument("--output-dir", type=Path, required=True)
    analyze.set_defaults(func=_cmd_analyze)


def config_from_args(kind: type, args: argparse.Namespace) -> Any:
    """A verb's config (`EvalConfig`, `ScoreConfig` ...) from the parsed flags, with the
    benchmark's options dataclass from its own flags."""
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    options = from_args(registry.get(args.benchmark).options, args)
    return from_args(kind, argparse.Namespace(**vars(args), options=options))


def _print_summary(metrics: dict[str, Any]) -> None:
    summary = {k: v for k, v in metrics.items() if k not in _BULKY_KEYS}
    print(json.dumps(summary, indent=1, ensure_ascii=False))


def _cmd_verb(kind: type, verb, args: argparse.Namespace) -> int:
    """`run`, `score`, `merge`: the verb on its config; the metrics' summary printed."""
    result = verb(config_from_args(kind, args))
    metrics = result if isinstance(result, dict) else result.metrics
    if metrics is not None:  # None: a process other than rank 0 of a sharded run
        if not isinstance(result, dict):
            print(f"answers and metrics in {result.output_dir}", file=sys.stderr)
        _print_summary(metrics)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mof_llava.benchmarks.evaluate import ExportConfig, export

    print(f"wrote {export(from_args(ExportConfig, args))}", file=sys.stderr)
    return 0


def _named_files(values: list[str], flag: str) -> dict[str, Path]:
    named = name_values(values, flag, malformed="{flag} takes NAME=PATH, got {item!r}")
    return {name: Path(path) for name, path in named.items()}


def _cmd_analyze(args: argparse.Namespace) -> int:
    from mof_llava.benchmarks.evaluate import analyze_patterns

    mllm, clip = _named_files(args.mllm, "--mllm"), _named_files(args.clip, "--clip")
    print(json.dumps(analyze_patterns(args.patterns, mllm, clip, args.output_dir), indent=1))
    return 0
