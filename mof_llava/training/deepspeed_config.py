"""The DeepSpeed JSON a run names (`train.deepspeed`), checked before DeepSpeed reads it: DeepSpeed
reports a syntax error as a bare traceback without the file, and ignores a misspelt section
(`zero_optimisation`) silently, training without ZeRO."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from ..errors import decode_utf8
from .config import ConfigError

# The top-level keys DeepSpeed 0.19 reads. DeepSpeed keeps no list of them: this is what
# `DeepSpeedConfig._initialize_params` (deepspeed/runtime/config.py) and the section parsers it calls
# read, plus `autotuning`, `sequence_parallel_size` and `vocabulary_size` (read elsewhere). Keys
# DeepSpeed has removed (amp, elasticity, ...) are left out: DeepSpeed itself refuses them.
# tests/test_errors_deepspeed.py checks the list against the installed DeepSpeed.
DEEPSPEED_TOP_LEVEL_KEYS = frozenset({
    "activation_checkpointing", "aio", "autotuning", "bf16", "bfloat16", "checkpoint", "comet",
    "comms_logger", "communication_data_type", "compile", "csv_monitor", "data_efficiency", "data_types",
    "dataloader_drop_last", "datastates_ckpt", "disable_allgather", "disable_python_gc", "dump_state",
    "expert_parallel", "flops_profiler", "fp16", "gradient_accumulation_steps", "gradient_allreduce_op",
    "gradient_clipping", "gradient_predivide_factor", "hybrid_engine", "log_level",
    "managed_gradient_accumulation", "memory_breakdown", "optimizer", "pipeline", "prescale_gradients",
    "scheduler", "seq_parallel_communication_data_type", "sequence_parallel_size", "steps_per_print",
    "tensor_parallel", "tensorboard", "timers", "torch_autocast", "train_batch_size",
    "train_micro_batch_size_per_gpu", "use_data_before_expert_parallelism", "vocabulary_size",
    "wall_clock_breakdown", "wandb", "weight_quantization", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "zero_optimization",
})


def read_deepspeed_config(path: str | Path) -> dict[str, Any]:
    """The parsed JSON object at `path`; one-line `ConfigError`s name the file, and the line and column
    of a syntax error or the unknown top-level key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train.deepspeed: {path} not found (the project's configs are in configs/deepspeed/)")
    text = decode_utf8(path.read_bytes(), f"train.deepspeed: {path}", ConfigError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"train.deepspeed: {path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"train.deepspeed: {path}: expected a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in DEEPSPEED_TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(key, sorted(DEEPSPEED_TOP_LEVEL_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"train.deepspeed: {path}: unknown top-level key {key!r} (DeepSpeed would ignore it){hint}")
    return data


def check_deepspeed_config(train_config) -> dict[str, Any] | None:
    """Read `train.deepspeed` (None when unset) and refuse settings that would fight the run config's."""
    if not train_config.deepspeed:
        return None
    path = Path(train_config.deepspeed)
    ds = read_deepspeed_config(path)
    if "optimizer" in ds and train_config.adapter_learning_rate is not None:
        raise ConfigError(
            f"{path} defines its own optimizer, so train.adapter_learning_rate cannot give the adapters their own "
            "learning rate; remove one of the two"
        )
    if "scheduler" in ds:
        raise ConfigError(f"{path} defines a scheduler, which would replace train.lr_scheduler; remove it from the file")
    return ds
