"""The training progress bar, quiet: the step count with the latest loss, grad norm and learning rate
on the bar. transformers' own bar also writes every log dict as a line of its own (a line per step
at `logging_steps: 1`), which metrics.jsonl already holds in full; `mof-llava -v` keeps those lines."""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback

SHOWN = ("loss", "grad_norm", "learning_rate")


class LossOnTheBar(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        shown = {k: f"{logs[k]:.4g}" for k in SHOWN if isinstance(logs.get(k), (int, float))}
        if shown:
            self.training_bar.set_postfix(shown, refresh=False)


def quiet_progress(trainer, bar: bool = True) -> None:
    """Swap the Trainer's progress bar for `LossOnTheBar` (where the Trainer drew the plain one), or
    with `bar` False drop it (the lab commands' --quiet)."""
    if trainer.pop_callback(ProgressCallback) is not None and bar:
        trainer.add_callback(LossOnTheBar)
