"""`mof-llava merge-lora RUN_DIR OUT`: a standalone model from a LoRA training run."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a LoRA run's weights into its base model and save a standalone model",
        description="Reads RUN_DIR/run_config.yaml, RUN_DIR/adapters and RUN_DIR/lora; writes a model OUT "
        "that from_pretrained and `mof-llava eval` load without peft.",
    )
    parser.add_argument("run_dir", help="output_dir of a finished LoRA run")
    parser.add_argument("out", help="directory to write the merged model to")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.lora_merge import merge_lora

    print(f"wrote {merge_lora(args.run_dir, args.out)}")
    return 0
