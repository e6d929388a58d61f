"""Checkpoint bookkeeping: which checkpoints are complete, which to resume from, which to delete.

The Trainer writes `checkpoint-<step>/` file by file (weights, optimizer, scheduler, RNG, trainer
state, and for DeepSpeed one shard per rank). A crash half-way leaves a directory that looks like a
checkpoint but is not one. So once every rank has finished writing, rank 0 adds a `COMPLETE` marker,
and only marked checkpoints count: resuming takes the newest marked one, and old checkpoints are
deleted only after a newer one is marked.

Checkpoints hold the trainable weights only (`model.safetensors` with the adapters in stage 1, the
adapters and the LLM in stage 2, the LoRA weights and adapters with LoRA): the frozen towers (and the
frozen stage-1 LLM) are rebuilt from the run config, which every run writes next to its checkpoints.
`write_trainable` / `read_trainable` are those two files; the Trainer writes the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..atomic import atomic_path, write_json_atomic, write_text_atomic

COMPLETE = "COMPLETE"
TRAINABLE_WEIGHTS = "model.safetensors"
TRAINABLE_NAMES = "trainable_parameters.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[tuple[int, Path, bool]]:
    """(step, path, complete) for every `checkpoint-<step>` directory, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry, (entry / COMPLETE).is_file()))
    return sorted(found)


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    complete = [path for _, path, ok in checkpoints(output_dir) if ok]
    return complete[-1] if complete else None


def incomplete_checkpoints(output_dir: str | Path) -> list[Path]:
    return [path for _, path, ok in checkpoints(output_dir) if not ok]


def step_of(checkpoint_dir: str | Path) -> int:
    """The global step a checkpoint was written at (from the Trainer's state, whatever the folder's name)."""
    return int(json.loads((Path(checkpoint_dir) / "trainer_state.json").read_text())["global_step"])


def mark_complete(checkpoint_dir: str | Path) -> None:
    write_text_atomic(Path(checkpoint_dir) / COMPLETE, "all ranks finished writing this checkpoint\n")


def rotate(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints, and incomplete ones older than the newest
    complete one (left by crashes). Returns what was deleted."""
    found = checkpoints(output_dir)
    complete = [(step, path) for step, path, ok in found if ok]
    if not complete:
        return []
    newest_step = complete[-1][0]
    doomed = [path for step, path, ok in found if not ok and step < newest_step]
    if keep is not None and keep > 0:
        doomed += [path for _, path in complete[:-keep]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def write_trainable(folder: str | Path, state: Mapping, names: Iterable[str]) -> None:
    """The trainable tensors of `state` (every name in `names`, nothing else) and their list."""
    from safetensors import SafetensorError  # here: status tools read this module without torch
    from safetensors.torch import save_file

    folder, names = Path(folder), sorted(names)
    wanted = set(names)
    trainable = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k in wanted}
    missing = sorted(wanted - set(trainable))
    if missing:
        raise RuntimeError(f"checkpoint would miss trainable weights {missing[:5]}")
    path = folder / TRAINABLE_WEIGHTS
    try:
        with atomic_path(path) as tmp:
            save_file(trainable, str(tmp), metadata={"format": "pt"})
    except SafetensorError as err:
        raise _io_error(err, path) from err
    write_json_atomic(folder / TRAINABLE_NAMES, names, indent=0)


def _io_error(err: Exception, path: Path) -> Exception:
    """safetensors' failed write as the OSError it wraps (its message keeps the errno), naming `path`."""
    code = re.search(r"(?:os error |code: )(\d+)", str(err))
    if code is None:
        return err
    number = int(code.group(1))
    return OSError(number, os.strerror(number), str(path))


def read_trainable(folder: str | Path, names: Iterable[str]) -> dict:
    """The trainable tensors `write_trainable` wrote, refused unless they are exactly `names`."""
    from safetensors.torch import load_file

    path = Path(folder) / TRAINABLE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {folder} is not a complete checkpoint")
    state, wanted = load_file(str(path)), set(names)
    unexpected, missing = sorted(set(state) - wanted), sorted(wanted - set(state))
    if unexpected or missing:
        raise ValueError(
            f"{path} does not fit this run's trainable weights (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "was it written by a run with a different stage, mixer or LoRA setting?"
        )
    return state
