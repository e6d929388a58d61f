"""Checkpoint bookkeeping: which checkpoints are complete, which to resume from, which to delete.

The Trainer writes `checkpoint-<step>/` file by file (weights, optimizer, scheduler, RNG, trainer
state, and for DeepSpeed one shard per rank). A crash half-way leaves a directory that looks like a
checkpoint but is not one. So once every rank has finished writing, rank 0 adds a `COMPLETE` marker,
and only marked checkpoints count: resuming takes the newest marked one, and old checkpoints are
deleted only after a newer one is marked.

Checkpoints hold the trainable weights only (`model.safetensors` with the adapters in stage 1, the
adapters and the LLM in stage 2, the LoRA weights and adapters with LoRA): the frozen towers (and the
frozen stage-1 LLM) are rebuilt from the run config, which every run writes next to its checkpoints.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..atomic import write_text_atomic

COMPLETE = "COMPLETE"
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
