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
    from .. import MofLlavaForConditionalGeneration, MofLlavaProcessor
    from ..convert import (
        export_llava_hf,
        import_llava_hf,
        import_llava_original,
        import_projector,
        is_projector_folder,
    )
    from ..model.adapter_artifact import save_adapters

    if args.target_format:
        model = MofLlavaForConditionalGeneration.from_pretrained(args.src)
        processor = MofLlavaProcessor.from_pretrained(args.src)
        out_model, out_processor = export_llava_hf(model, processor)
    elif args.source_format == "llava-hf":
        out_model, out_processor = import_llava_hf(args.src)
    elif is_projector_folder(args.src):
        model = import_projector(
            args.src, layout=args.source_format, vision_tower=args.vision_tower, dino_tower=args.dino_tower
        )
        save_adapters(model, args.out)
        mode = model.config.mixer["mode"]
        print(f"wrote adapters artifact (mixer {mode}) to {args.out}; start stage 2 with model.adapters_from={args.out}")
        return 0
    else:
        out_model, out_processor = import_llava_original(
            args.src, layout=args.source_format, vision_tower=args.vision_tower, dino_tower=args.dino_tower
        )
    out_model.save_pretrained(args.out)
    out_processor.save_pretrained(args.out)
    kind = f"llava-hf ({type(out_model).__name__})" if args.target_format else f"MoF-LLaVA (mixer {out_model.config.mixer['mode']})"
    print(f"wrote {kind} to {args.out}")
    return 0
