"""`mof-llava data check`: validate a LLaVA-format dataset against an image folder and a model's
tokenizer and visual token count, before training."""

from __future__ import annotations

import argparse

from ..conversation import TEMPLATES
from ..data.samples import LENGTH_BUDGETS, TRUNCATIONS

MIXERS = ("none", "additive", "interleave", "concat")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect training data")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    check = commands.add_parser(
        "check",
        help="validate a dataset and report what training would see",
        description=(
            "Validates every record, checks every image, and reports samples per modality, the token-length "
            "distribution (with the model's visual tokens), the share shortened by --max-length and the samples "
            "with nothing to train on. Exit status 1 if records or images are broken."
        ),
    )
    check.add_argument("data", help="LLaVA JSON array or JSONL file")
    check.add_argument("--image-folder", help="root of the records' relative image paths")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved MoF-LLaVA model directory (its processor is used)")
    source.add_argument("--tokenizer", help="an LLM tokenizer directory or hub id (needs --mixer)")
    check.add_argument(
        "--mixer",
        choices=MIXERS,
        help="with --tokenizer: the mixer of the paper's towers (CLIP ViT-L/14 + DINOv2 ViT-L/14), which decides "
        "the visual tokens per image (none/additive/concat: 576, interleave: 1152 at 336 px)",
    )
    check.add_argument("--image-size", type=int, default=336, help="with --tokenizer: image side in pixels")
    check.add_argument(
        "--template",
        default="vicuna_v1",
        choices=tuple(TEMPLATES),
        help="conversation template the data is rendered with: vicuna_v1 (default, LLaVA-1.5's stage 2), "
        "llava_v1, or plain (stage 1: one image and its caption)",
    )
    check.add_argument(
        "--max-length", type=int, default=2048, help="token budget per sample (model_max_length)"
    )
    check.add_argument(
        "--length-budget",
        choices=LENGTH_BUDGETS,
        default="expanded",
        help="what --max-length counts: every token the LLM reads (expanded, default) or the text and one "
        "token per image (text, the MMVP fork); the report compares all settings",
    )
    check.add_argument(
        "--truncation",
        choices=TRUNCATIONS,
        default="rounds",
        help="how a sample over budget is shortened: whole trailing rounds (default) or cut mid-round (tokens)",
    )
    check.add_argument("--no-images", action="store_true", help="skip opening the images")
    check.add_argument("--workers", type=int, default=None, help="processes for tokenising and image checks")
    check.add_argument("--cache-dir", help="where the record index and token lengths are cached")
    check.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import format_report
    from ..data.check_job import CheckJob, CheckOptionsError, check, load_processor
    from ..data.record_file import MalformedRecordsError

    given = ("model", "tokenizer", "mixer", "image_size", "image_folder", "template", "max_length")
    given += ("length_budget", "truncation", "workers", "cache_dir")
    job = CheckJob(args.data, check_images=not args.no_images, **{k: getattr(args, k) for k in given})
    try:
        processor = load_processor(job)  # a missing --model is `mof-llava: error: --model: ...`
    except CheckOptionsError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        report = check(job, processor)
    except (MalformedRecordsError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(format_report(report))
    if args.json:
        report.save_json(args.json)
    return 0 if report.ok else 1
