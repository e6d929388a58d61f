"""`mof-llava data check`: validate a LLaVA-format dataset against an image folder and a model's
tokenizer and visual token count, before training."""

from __future__ import annotations

import argparse

from .dataclass_args import add_arguments, from_args


def add_parser(subparsers) -> None:
    from ..data.check_job import CheckJob  # the check's flags: help and defaults there

    parser = subparsers.add_parser("data", help="inspect training data, convert region-level data")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    check = commands.add_parser(
        "check",
        help="validate a dataset and report what training would see",
        description=(
            "Validates every record, checks every image, and reports samples per modality, the token-length "
            "distribution (with the model's visual tokens), the share shortened by --max-length and the samples "
            "with nothing to train on. A preference file (BPO's scored records or flat pairs) is validated as "
            "such and its pairs counted by neg_type and source (no --model needed). Exit status 1 if records or "
            "images are broken."
        ),
    )
    check.add_argument("data", help="LLaVA (or preference) JSON array or JSONL file")
    source = check.add_mutually_exclusive_group()  # one is needed for LLaVA data (check_job.load_processor)
    source.add_argument("--model", help="a saved MoF-LLaVA model directory (its processor is used)")
    source.add_argument("--tokenizer", help="an LLM tokenizer directory or hub id (needs --mixer)")
    add_arguments(check, CheckJob, "check")
    check.add_argument("--no-images", action="store_true", help="skip opening the images")
    check.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    check.set_defaults(func=run_check)
    _add_rec(commands)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _add_rec(commands) -> None:
    from ..data.rec import CONVERT, RecConvertConfig

    rec = commands.add_parser(
        "rec",
        help="RefCOCO-style referring expressions -> LLaVA region-level training records",
        description=(
            "One record per referring expression: LION's region question, the box in the model's input frame "
            "with 3 decimals (docs/data.md, Region-level records)."
        ),
    )
    add_arguments(rec, RecConvertConfig, next(iter(CONVERT)))
    rec.set_defaults(func=run_rec)


def run_rec(args: argparse.Namespace) -> int:
    from ..data.rec import RecConvertConfig, convert_rec

    result = convert_rec(from_args(RecConvertConfig, args))
    splits = ", ".join(f"{name} {n}" for name, n in result.splits.items())
    print(f"wrote {result.records} records to {result.output} ({splits})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..data.check import format_report
    from ..data.check_job import CheckJob, CheckOptionsError, check, load_processor
    from ..data.preference_check import PreferenceReport
    from ..data.record_file import MalformedRecordsError

    job = replace(from_args(CheckJob, args), check_images=not args.no_images)
    try:
        processor = load_processor(job)  # a missing --model is `mof-llava: error: --model: ...`
    except CheckOptionsError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        report = check(job, processor)
    except (MalformedRecordsError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(report.format() if isinstance(report, PreferenceReport) else format_report(report))
    if args.json:
        report.save_json(args.json)
    return 0 if report.ok else 1
