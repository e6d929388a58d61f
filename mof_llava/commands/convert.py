"""`mof-llava convert`: import llava-hf / LLaVA / MMVP checkpoints, export a baseline to llava-hf."""

from __future__ import annotations

import argparse

FORMATS = ("llava-hf", "llava", "mmvp")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="import existing LLaVA checkpoints, or export a baseline model to transformers' Llava",
        description=(
            "Import: --from llava-hf (transformers' LlavaForConditionalGeneration), --from llava (original LLaVA-1.5 "
            "layout), --from mmvp (the MMVP repository's Interleaved-MoF layout). Export: --to llava-hf (baseline "
            "models only). Writes a directory loadable with from_pretrained. A LLaVA or MMVP stage-1 folder "
            "(config.json + mm_projector.bin) becomes an adapters artifact for model.adapters_from."
        ),
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source_format", choices=FORMATS, help="layout of SRC (import)")
    direction.add_argument("--to", dest="target_format", choices=("llava-hf",), help="layout to write (export)")
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--vision-tower", help="CLIP checkpoint when SRC holds no CLIP weights (default: config's mm_vision_tower)")
    parser.add_argument("--dino-tower", help="transformers DINOv2 checkpoint for --from mmvp (e.g. facebook/dinov2-large)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert import ConvertJob, convert

    given = ("source_format", "target_format", "vision_tower", "dino_tower")
    print(convert(ConvertJob(args.src, args.out, **{k: getattr(args, k) for k in given})))
    return 0
