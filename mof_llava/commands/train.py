"""`mof-llava train CONFIG [key=value ...]`: run one training stage from a YAML run config."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one stage (pretrain, finetune or preference) from a YAML run config",
        description=(
            "Run one training stage. Overrides use dotted keys, e.g. train.learning_rate=2e-5 "
            "data.max_length=4096. Launch under torchrun or deepspeed for several GPUs or nodes "
            "(see docs/training.md)."
        ),
    )
    parser.add_argument("config", help="run config YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="check the config (keys, types, mixer, DeepSpeed JSON), print it resolved, and exit",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..training.config import load_run_config

    config = load_run_config(args.config, args.overrides)
    if args.print_config:
        from ..training.deepspeed_config import check_deepspeed_config

        check_deepspeed_config(config.train)  # the config is checked in full before it is shown
        if not config.model.init_from:
            config.model.recipe()  # names llm and towers when there is no model to build
        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    from ..training.run import finish_distributed, train

    try:
        result = train(config)
        artifact, main_process = result.artifact, result.trainer.args.process_index == 0
        del result  # before the process group goes (finish_distributed)
    finally:
        finish_distributed()
    if main_process:
        print(f"artifact: {artifact}")
    return 0
