"""Test launcher: run a training config and die abruptly (os._exit, like SIGKILL: nothing flushed,
nothing cleaned up) right after global step `--die-after-step`, or run to the end without it."""

import argparse
import os
import sys

from transformers import TrainerCallback

from mof_llava.training.config import load_run_config
from mof_llava.training.run import finish_distributed, train


class DieAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os._exit(137)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--die-after-step", type=int)
    args = parser.parse_args()
    callbacks = [DieAfterStep(args.die_after_step)] if args.die_after_step else []
    train(load_run_config(args.config, args.overrides), callbacks=callbacks)
    finish_distributed()
    sys.exit(0)
