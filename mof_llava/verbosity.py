"""What a `mof-llava` run prints: its own lines by default, the libraries' chatter on request.

Quiet (the default): transformers logs errors only (no weight-loading or shard-writing bars, no load
report ahead of our own message about a bad checkpoint), Hugging Face Hub download bars are off, and
DeepSpeed's "Setting accelerator to CPU" notice, which accelerate triggers by importing DeepSpeed
whenever it is installed, is dropped. Training and evaluation progress bars are ours and stay.
Verbose (`mof-llava -v ...` or MOF_LLAVA_VERBOSE=1): the libraries' defaults, and our debug lines.

Everything here is set through environment variables and logger filters, so it costs no import and
reaches the processes a run starts (torchrun workers, sweep jobs). Quiet mode leaves a variable the
user set alone; verbose mode sets the libraries' defaults over it.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "MOF_LLAVA_VERBOSE"

# What quiet mode sets, unless the user set it already.
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
_VERBOSE_ENV = {"TRANSFORMERS_VERBOSITY": "warning", "HF_HUB_DISABLE_PROGRESS_BARS": "0"}

# DeepSpeed notices that say nothing about the run (they come from importing it, not from using it).
_DEEPSPEED_NOISE = ("Setting accelerator to CPU",)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure_output(verbose: bool = False) -> bool:
    """Set the run's verbosity (before transformers or DeepSpeed is imported); returns it."""
    verbose = verbose or is_verbose()
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.update(_VERBOSE_ENV)
        logging.getLogger("mof_llava").setLevel(logging.DEBUG)
    else:
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)
    deepspeed = logging.getLogger("DeepSpeed")  # the logger DeepSpeed creates on import
    if not any(isinstance(f, _DropNoise) for f in deepspeed.filters):
        deepspeed.addFilter(_DropNoise())
    return verbose


def transformers_level() -> int:
    """The level for transformers' logger in this run (for code that sets it explicitly)."""
    return logging.WARNING if is_verbose() else logging.ERROR


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if is_verbose():
            return True
        message = record.getMessage()
        return not any(noise in message for noise in _DEEPSPEED_NOISE)


def setup_logging(level: int, fmt: str, force: bool = False) -> None:
    """`logging.basicConfig` to stderr, through tqdm: a line that comes while a progress bar is drawn
    clears the bar's line first, instead of being glued to the end of the bar. Without `force`, a
    process whose logging is already set up keeps it (as basicConfig does)."""
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=force)


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise; report it the standard way
            self.handleError(record)
