"""`mof-llava preference negatives`: BPO's rejected answers for (image, prompt, ground truth) records,
written as flat preference pairs. The flags come from `NegativesJob` (mof_llava/preference/negatives.py,
help and defaults there); the same verb from Python is `negatives(NegativesJob(...))`."""

from __future__ import annotations

from dataclasses import replace

from .dataclass_args import add_arguments, from_args


def add_parser(subparsers) -> None:
    from ..preference.negatives import NegativesJob

    parser = subparsers.add_parser("preference", help="preference data for BPO / DPO")
    commands = parser.add_subparsers(dest="preference_command", metavar="SUBCOMMAND")
    p = commands.add_parser(
        "negatives",
        help="make rejected answers: the MLLM on weakened images (mllm-hal), errors injected (llm-hal)",
        description=(
            "Reads {id, image, prompt, chosen[, source]} records (or one-round LLaVA records) and writes flat "
            "preference pairs {id, image, prompt, chosen, rejected, neg_type, source}. Resumable: rerun the same "
            "command after an interruption and it continues after the finished records (docs/preference.md)."
        ),
    )
    p.add_argument("data", help="input records (JSON array or JSONL)")
    p.add_argument("-o", "--output", required=True, help="flat preference JSONL to write")
    add_arguments(p, NegativesJob, "negatives")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_negatives)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_negatives(args) -> int:
    from ..preference.negatives import NegativesJob, negatives

    print(negatives(replace(from_args(NegativesJob, args), progress=not args.no_progress)).describe())
    return 0
