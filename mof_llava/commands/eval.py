"""`mof-llava eval`: run a checkpoint on a benchmark, re-score answer files, analyse MMVP patterns.

    mof-llava eval run BENCH --model DIR --data PATH [--output-dir DIR]   generate answers and score them
    mof-llava eval score BENCH --answers FILE <benchmark files>          score any LLaVA-format answer file
    mof-llava eval merge BENCH --output-dir DIR <benchmark files>        merge the shards of a sharded run
    mof-llava eval export gqa --answers FILE --output FILE                GQA predictions for the official eval.py
    mof-llava eval export mmbench --answers FILE --data TSV --output F.xlsx  MMBench upload for OpenCompass
    mof-llava eval analyze --patterns MAP --mllm NAME=METRICS --clip NAME=METRICS --output-dir DIR

BENCH is one of mmvp, mmvp-vlm, pope, mmbench, gqa. Under torchrun, `run` shards the questions
over the processes (see eval/run.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mof_llava.benchmarks import BENCHMARKS
from mof_llava.data.images import DEFAULT_IMAGE_LOADING, IMAGE_LOADINGS

# Per-item tables and run provenance kept out of the printed summary (they are in the --output /
# metrics.json file).
_BULKY_KEYS = ("groups", "per_question", "per_pair", "run")

# One line per benchmark in `--help` (the headline `score` of each).
_BENCH_HELP = {
    "mmvp": "MMVP: 150 CLIP-blind image pairs, two-option questions; pair accuracy",
    "mmvp-vlm": "MMVP-VLM: CLIP-family models on 135 image pairs, 9 patterns; pair accuracy",
    "pope": "POPE: object hallucination yes/no questions on COCO; mean F1 of 3 splits",
    "mmbench": "MMBench: multiple choice, circular evaluation; accuracy",
    "gqa": "GQA testdev-balanced: short answers; accuracy",
}


# ---------------------------------------------------------------------------------------------
# Arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on MMVP, MMVP-VLM, POPE, MMBench, GQA; re-score answer files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="eval_action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="generate a benchmark's answers with a model, then score them")
    score = actions.add_parser("score", help="score an answer file in LLaVA's answer format")
    merge = actions.add_parser("merge", help="merge the part files of a sharded run and score")
    for action, func in ((run, _cmd_run), (score, _cmd_score), (merge, _cmd_merge)):
        benches = action.add_subparsers(dest="benchmark", metavar="BENCH", required=True)
        for bench in BENCHMARKS:
            sub = benches.add_parser(bench, help=_BENCH_HELP[bench], description=_BENCH_HELP[bench])
            _add_data_args(sub, bench, action=action.prog.split()[-1])
            if action is run:
                _add_run_args(sub, bench)
            elif action is score:
                _add_score_args(sub, bench)
            else:
                sub.add_argument(
                    "--output-dir", type=Path, required=True, help="the folder of the sharded run"
                )
            sub.set_defaults(func=func)

    export = actions.add_parser(
        "export",
        help="write what an official grader reads: GQA's testdev_balanced_predictions.json, MMBench's .xlsx",
    )
    export.add_argument("benchmark", choices=["gqa", "mmbench"])
    export.add_argument("--answers", type=Path, required=True)
    export.add_argument("--data", type=Path, help="mmbench: the TSV the answers are for")
    export.add_argument(
        "--output", type=Path, required=True, help="e.g. testdev_balanced_predictions.json, or submission.xlsx"
    )
    export.set_defaults(func=_cmd_export)

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


def _add_data_args(p: argparse.ArgumentParser, bench: str, action: str) -> None:
    from mof_llava.benchmarks import mmbench, mmvp  # light: the heavy imports sit inside their functions

    running = action in ("run", "merge")
    if bench == "mmvp":
        p.add_argument(
            "--data", type=Path, required=True, help="folder with Questions.csv and 'MMVP Images/'"
        )
        p.add_argument(
            "--labels",
            choices=mmvp.LABEL_SETS,
            default="original",
            help="answers of pairs (99,100), (279,280): as released (default, as in the paper) or corrected",
        )
        p.add_argument(
            "--grader",
            choices=mmvp.GRADERS,
            default="ours",
            help="how an answer is read (default: ours; lmms-eval: its letter regexes; judge: the official GPT protocol)",
        )
        _add_judge_args(p)
        if running:
            p.add_argument(
                "--prompt",
                choices=list(mmvp.PROMPTS),
                default=mmvp.DEFAULT_PROMPT,
                help="llava (default): LLaVA-1.5's multiple-choice convention (options re-lettered A./B., "
                "'Answer with the option's letter...'), vicuna_v1, padded, 128 tokens, not the paper's "
                "protocol; official: the MMVP script's question + options, llava_v1, centre-cropped, "
                "1024 tokens (the paper's, with --grader judge; greedy here); cambrian: Cambrian's "
                "letter prompt, vicuna_v1, padded, 512 tokens. Table in docs/evaluation.md",
            )
    elif bench == "mmvp-vlm":
        p.add_argument(
            "--data", type=Path, required=True, help="folder with Questions.csv and 'MLLM_VLM Images/'"
        )
    elif bench == "pope":
        p.add_argument(
            "--data", type=Path, help="folder in LLaVA's layout: llava_pope_test.jsonl, coco/, val2014/"
        )
        p.add_argument(
            "--questions",
            type=Path,
            help="LLaVA's question file llava_pope_test.jsonl "
            "(default: built from the annotations the way LLaVA built it)",
        )
        p.add_argument(
            "--annotations", type=Path, help="folder with coco_pope_{adversarial,popular,random}.json"
        )
        if running:
            p.add_argument("--images", type=Path, help="COCO val2014 image folder")
    elif bench == "mmbench":
        p.add_argument("--data", type=Path, required=True, help="the MMBench TSV (dev or test)")
        p.add_argument(
            "--matching",
            choices=list(mmbench.MATCHING_RULES),
            default=mmbench.DEFAULT_MATCHING,
            help="VLMEvalKit exact-matching rule set (default 2024; they agree on letter answers)",
        )
        _add_judge_args(p)
        if running:
            p.add_argument(
                "--lang", choices=list(mmbench.INSTRUCTIONS), default="en", help="answer instruction language"
            )
    elif bench == "gqa":
        p.add_argument(
            "--data", type=Path, help="GQA folder in LLaVA's layout, or testdev_balanced_questions.json"
        )
        if running:
            p.add_argument("--questions", type=Path, help="LLaVA's llava_gqa_testdev_balanced.jsonl")
            p.add_argument("--images", type=Path, help="GQA image folder")


def _add_judge_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM judge (off unless --judge-url is given)")
    g.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    g.add_argument("--judge-model", help="model name sent to the judge endpoint")
    g.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
    g.add_argument(
        "--judge-temperature",
        type=_non_negative_float,
        default=0.0,
        help="sampling temperature of the judge (default 0; the official MMVP grader used 0.2)",
    )


def _add_run_args(p: argparse.ArgumentParser, bench: str) -> None:
    clip = bench == "mmvp-vlm"
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="CLIP or SigLIP folder" if clip else "mof-llava checkpoint folder",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        help="default: eval_results/<name>/<bench>, <name> being the model folder's name, or for a "
        "training stage's model/ folder the run's: runs/imof-7b/stage2/model -> imof-7b-stage2",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="image pairs per batch" if clip else "questions per batch"
    )
    p.add_argument(
        "--device", default="auto", help="auto (cuda:<local rank> if available, else cpu), cpu, cuda:0 ..."
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads per process on CPU (default: this process's share of the idle cores)",
    )
    if clip:
        return
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights and activations (default auto: bfloat16 on a GPU that supports it, else float32)",
    )
    p.add_argument(
        "--image-loading",
        choices=IMAGE_LOADINGS,
        default=DEFAULT_IMAGE_LOADING,
        help="how image files become RGB: reference (default): PIL's convert('RGB') as LLaVA and MMVP "
        "do; viewer: EXIF orientation applied, transparency over white. Use the training setting",
    )
    p.add_argument("--max-new-tokens", type=_positive_int, help="default: the benchmark's reference setting")
    p.add_argument("--limit", type=int, help="only the first N questions (smoke runs; not scored)")
    p.add_argument(
        "--model-id", help="model_id written into answer lines (default: <name> of the output folder)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_score_args(p: argparse.ArgumentParser, bench: str) -> None:
    p.add_argument("--answers", type=Path, required=True, help="answer file in LLaVA's answer format (JSONL)")
    p.add_argument("--output", type=Path, help="also write the full metrics (per-item tables included) here")
    if bench == "gqa":
        p.add_argument("--predictions", type=Path, help="also write testdev_balanced_predictions.json here")
    if bench == "pope":
        p.add_argument(
            "--llava-report", action="store_true", help="also print eval_pope.py's text report to stderr"
        )


# ---------------------------------------------------------------------------------------------
# Building benchmarks from arguments


def _judge(args: argparse.Namespace):
    from mof_llava.benchmarks.judge import ChatJudge, JudgeConfig

    if not getattr(args, "judge_url", None):
        if getattr(args, "grader", None) == "judge":
            raise SystemExit("--grader judge needs --judge-url and --judge-model")
        return None
    if not args.judge_model:
        raise SystemExit("--judge-url needs --judge-model")
    return ChatJudge(
        JudgeConfig(args.judge_url, args.judge_model, args.judge_api_key_env, args.judge_temperature)
    )


def build_task(args: argparse.Namespace):
    """The `EvalTask` for `run`/`merge` from the parsed arguments."""
    task = _benchmark_task(args)
    task.image_loading = getattr(args, "image_loading", DEFAULT_IMAGE_LOADING)
    return task


def _benchmark_task(args: argparse.Namespace):
    from mof_llava.benchmarks import gqa, mmbench, mmvp, pope

    bench = args.benchmark
    max_new = getattr(args, "max_new_tokens", None)
    if bench == "mmvp":
        return mmvp.build_task(
            args.data, args.prompt, args.labels, args.grader, _judge(args), max_new_tokens=max_new
        )
    if bench == "pope":
        paths = pope.resolve_paths(args.data, args.questions, args.annotations, args.images)
        return pope.build_task(paths, max_new_tokens=max_new or pope.MAX_NEW_TOKENS)
    if bench == "mmbench":
        return mmbench.build_task(
            args.data,
            max_new_tokens=max_new or mmbench.MAX_NEW_TOKENS,
            lang=args.lang,
            matching=args.matching,
            judge=_judge(args),
        )
    if bench == "gqa":
        paths = gqa.resolve_paths(args.data, args.questions, args.images)
        return gqa.build_task(paths, max_new_tokens=max_new or gqa.MAX_NEW_TOKENS)
    raise SystemExit(f"no generation task for {bench}")


def score_file(args: argparse.Namespace) -> dict[str, Any]:
    """Metrics of `args.answers` for `args.benchmark`."""
    from mof_llava.benchmarks import gqa, mmbench, mmvp, mmvp_vlm, pope

    bench, answers = args.benchmark, args.answers
    if bench == "mmvp":
        questions = mmvp.read_questions(mmvp.find_files(args.data)[0])
        return mmvp.score_answer_file(
            answers, questions, grader=args.grader, labels=args.labels, judge=_judge(args)
        )
    if bench == "mmvp-vlm":
        return mmvp_vlm.score_answer_file(answers, mmvp_vlm.read_pairs(args.data))
    if bench == "pope":
        paths = pope.resolve_paths(args.data, args.questions, args.annotations)
        return pope.score_answer_file(answers, pope.load_pope(paths.annotations, paths.questions))
    if bench == "mmbench":
        return mmbench.score_answer_file(answers, mmbench.read_tsv(args.data), args.matching, _judge(args))
    if bench == "gqa":
        if args.data is None:
            raise SystemExit("scoring GQA needs --data (testdev_balanced_questions.json or its folder)")
        return gqa.score_answer_file(answers, gqa.read_official_questions(gqa.find_official(args.data)))
    raise SystemExit(f"unknown benchmark {bench}")


# ---------------------------------------------------------------------------------------------
# Commands


def _setup_logging() -> None:
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")


def _cpu_threads(args: argparse.Namespace, device: str) -> None:
    if device.startswith("cpu"):
        from mof_llava.threads import apply_cpu_threads

        apply_cpu_threads(args.threads, "--threads")


def _print_summary(metrics: dict[str, Any]) -> None:
    summary = {k: v for k, v in metrics.items() if k not in _BULKY_KEYS}
    print(json.dumps(summary, indent=1, ensure_ascii=False))


def _cmd_score(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic

    _setup_logging()
    metrics = score_file(args)
    metrics["answers"] = str(args.answers)
    if args.output:
        write_json_atomic(args.output, metrics, indent=1, ensure_ascii=False)
    if getattr(args, "predictions", None):
        from mof_llava.benchmarks.gqa import write_predictions

        write_predictions(args.answers, args.predictions)
    if getattr(args, "llava_report", False):
        from mof_llava.benchmarks.pope import llava_report

        print(llava_report(metrics), file=sys.stderr, end="")
    _print_summary(metrics)
    return 0


def _default_output_dir(args: argparse.Namespace) -> Path:
    from mof_llava.benchmarks.runner import default_output_dir

    return args.output_dir or default_output_dir(args.model, args.benchmark)


def _cmd_run(args: argparse.Namespace) -> int:
    from mof_llava.paths import check_model_path

    check_model_path(args.model, "--model")
    _setup_logging()
    if args.benchmark == "mmvp-vlm":
        return _run_mmvp_vlm(args)
    from mof_llava.benchmarks.generation import load_model, make_generate_fn, model_info, pick_device
    from mof_llava.benchmarks.runner import Distributed, RunOptions, result_name, run_task

    dist = Distributed.from_env()
    task = build_task(args)
    device = pick_device(args.device, dist.local_rank)
    _cpu_threads(args, device)
    options = RunOptions(
        output_dir=_default_output_dir(args),
        model=str(args.model),
        model_id=args.model_id or result_name(args.model),
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
        model_info=model_info(args.model, device, args.dtype),
    )

    def load_generator():
        model, processor = load_model(args.model, device, args.dtype)
        return make_generate_fn(model, processor, task.max_new_tokens, task.image_aspect_ratio)

    metrics = run_task(task, load_generator, options, dist)
    if metrics is not None:
        print(f"answers and metrics in {options.output_dir}", file=sys.stderr)
        _print_summary(metrics)
    return 0


def _run_mmvp_vlm(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic
    from mof_llava.benchmarks import mmvp_vlm
    from mof_llava.benchmarks.answers import write_answers_atomic
    from mof_llava.benchmarks.generation import pick_device
    from mof_llava.benchmarks.provenance import code_version, describe_files
    from mof_llava.benchmarks.runner import Distributed

    if Distributed.from_env().rank != 0:  # 270 images: one process does it; the others stand by
        return 0
    output_dir = _default_output_dir(args)
    device = pick_device(args.device)
    _cpu_threads(args, device)
    pairs = mmvp_vlm.read_pairs(args.data)
    model, processor, model_type = mmvp_vlm.load_contrastive_model(args.model, device)
    lines = mmvp_vlm.evaluate_model(model, processor, pairs, model_type, args.batch_size, device)
    answers_path = output_dir / "answers.jsonl"
    write_answers_atomic(answers_path, lines)
    metrics = mmvp_vlm.score_answer_file(answers_path, pairs)
    csv_path, image_dir = mmvp_vlm.find_files(args.data)
    metrics["run"] = {
        "model": str(Path(args.model).resolve()),
        "model_type": model_type,
        "device": device,
        "text_prefix": mmvp_vlm.TEXT_PREFIX,
        "data_files": describe_files({"questions": csv_path, "images": image_dir}),
        "code_version": code_version(),
        "command": sys.argv,
    }
    write_json_atomic(output_dir / "metrics.json", metrics, indent=1)
    mmvp_vlm.write_pairs_csv(metrics, output_dir / "pairs.csv")
    print(f"answers and metrics in {output_dir}", file=sys.stderr)
    _print_summary(metrics)
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from mof_llava.atomic import write_json_atomic
    from mof_llava.benchmarks.runner import METRICS_FILE, RUN_FILE, merge_parts

    _setup_logging()
    if args.benchmark == "mmvp-vlm":
        raise SystemExit("mmvp-vlm runs are not sharded; nothing to merge")
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
    if args.benchmark == "gqa":
        from mof_llava.benchmarks.gqa import write_predictions

        write_predictions(args.answers, args.output)
    else:
        from mof_llava.benchmarks import mmbench

        if args.data is None:
            raise SystemExit("mof-llava eval export mmbench: --data (the MMBench TSV) is required")
        mmbench.write_submission(args.answers, mmbench.read_tsv(args.data), args.output)
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
