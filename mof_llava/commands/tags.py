"""`mof-llava tags`: fill a LLaVA data file's `tags` for LION's tag prompt. The flags come from
`TagJob` (mof_llava/tags/job.py, help and defaults there); from Python it is `tag(TagJob(...))`."""

from __future__ import annotations

from dataclasses import replace

from .dataclass_args import add_arguments, from_args


def add_parser(subparsers) -> None:
    from ..tags.job import TagJob

    parser = subparsers.add_parser(
        "tags",
        help="tag every image of a dataset for LION's tag prompt (precomputed file, CLIP zero-shot, none)",
        description=(
            "Writes the records of DATA as JSONL with each image record's 'tags' filled in by the tagger. "
            "Resumable: rerun the same command after an interruption and it continues after the finished "
            "images (docs/lion.md)."
        ),
    )
    parser.add_argument("data", help="LLaVA JSON array or JSONL file")
    parser.add_argument("-o", "--output", required=True, help="the tagged records (JSONL)")
    add_arguments(parser, TagJob, "tags")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_tags)


def run_tags(args) -> int:
    from ..tags.job import TagJob, tag

    print(tag(replace(from_args(TagJob, args), progress=not args.no_progress)).describe())
    return 0
