"""The run folder (`train.output_dir`): one run at a time, one run per folder.

- `RunLock`: a launch holds `<output_dir>/.run.lock` (an `flock`, so the kernel releases it when the
  process ends, however it ends) with its pid and host written in it; a second launch into the same
  folder is refused naming the holder. Only global rank 0 takes it: the other ranks (and nodes) of the
  same launch share the folder with it.
- `move_aside`: a run that starts from scratch in a folder holding another run's files first moves
  them to `<output_dir>/previous-<UTC time>/`, so checkpoints, metrics and artifacts are never mixed.
- `check_resume`: a resumed run must be the run its checkpoints belong to. Every setting is either
  refused when changed (it would make the resumed run differ from an uninterrupted one) or applied from
  the resume on and logged; the data file is fingerprinted in `run_record.json` (size, modification
  time, hash of its record index) and a changed file is refused.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from . import checkpoints
from .config import ConfigError, RunConfig
from .reference_logps import CACHE as REFERENCE_CACHE

logger = logging.getLogger("mof_llava.train")

LOCK = ".run.lock"
RUN_RECORD = "run_record.json"
# What a run writes into its folder (besides the lock): moved aside together when a new run starts.
RUN_FILES = ("run_config.yaml", RUN_RECORD, "metrics.jsonl", "adapters", "model", "lora", "wandb", REFERENCE_CACHE)
FINAL_ARTIFACTS = ("adapters", "model", "lora")

# Changing these makes the resumed run differ from an uninterrupted one: refused. Keys are dotted;
# a section name covers everything below it. Any key in neither list below is refused too.
RESUME_REFUSED = (
    "model", "data", "train.stage", "train.seed", "train.data_seed", "train.global_batch_size", "train.per_device_batch_size",
    "train.learning_rate", "train.adapter_learning_rate", "train.weight_decay", "train.warmup_ratio",
    "train.lr_scheduler", "train.lora", "train.deepspeed", "train.precision", "train.preference", "train.lion",
)
# Applied from the resume on, and logged (a longer schedule, clipping, numerics, memory).
RESUME_APPLIED = (
    "train.num_epochs", "train.max_steps", "train.max_grad_norm", "train.tf32",
    "train.gradient_checkpointing",
)
# Change nothing the run learns: where things go, how often, how fast, what is logged.
RESUME_FREE = (
    "name", "data.cache_dir", "data.num_proc", "train.output_dir", "train.resume", "train.logging_steps",
    "train.save_steps", "train.save_total_limit", "train.report_to", "train.wandb_project",
    "train.dataloader_num_workers", "train.peak_tflops", "train.ddp_timeout", "train.cpu_threads",
)


class RunFolderError(ConfigError):
    """The run folder cannot be used as asked: in use, holding a finished or a different run, or its data
    file changed. A ConfigError: the fix is a setting (train.output_dir, train.resume, the config)."""


# -- the lock --------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive `flock` on `<folder>/.run.lock` for the life of the process (or until `release`)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunFolderError(
                    f"{self.path.parent}: another training run is using this folder ({holder}); wait for it to "
                    "end or use another train.output_dir"
                ) from None
            # e.g. Lustre mounted without `flock`: train anyway, but say that nothing guards the folder
            logger.warning("%s: this file system does not support file locks (%s); a second launch into the "
                           "same folder would not be detected", self.path, os.strerror(err.errno or 0))
            return self
        # Whatever the file said before was left by a process that has ended (its lock went with it).
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {_utc_now()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a new holder)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -- starting fresh --------------------------------------------------------------------------------------
def refuse_retraining_a_finished_run(folder: Path) -> None:
    """`train.resume: auto` with nothing to resume: a folder holding a finished run's artifacts (its
    checkpoints deleted) is not trained again from scratch unless asked (`train.resume=none`)."""
    found = [name + "/" for name in FINAL_ARTIFACTS if (folder / name).exists()]
    if found:
        raise RunFolderError(
            f"{folder} holds a finished run ({', '.join(found)}) and no complete checkpoint to continue from; "
            "use train.resume=none to train it again (the old run is moved aside) or another train.output_dir"
        )


def previous_run_files(folder: Path) -> list[Path]:
    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    return found + [path for _, path, _ in checkpoints.checkpoints(folder)]


def move_aside(folder: str | Path) -> Path | None:
    """Move another run's files out of the way into `previous-<time>/`; returns that folder, if any."""
    folder = Path(folder)
    old = previous_run_files(folder)
    if not old:
        return None
    target = folder / f"previous-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    suffix = 1
    while target.exists():
        target, suffix = folder / f"{target.name.split('.')[0]}.{suffix}", suffix + 1
    target.mkdir()
    for path in old:
        shutil.move(str(path), target / path.name)
    logger.warning("starting a new run in %s: moved the previous run's %d file(s) to %s", folder, len(old), target)
    return target


# -- resuming --------------------------------------------------------------------------------------------
def check_resume_settings(old: dict[str, Any], new: dict[str, Any], folder: Path) -> list[str]:
    """Refuse settings that changed and may not; return (and log) the changed ones that are applied."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    changed = sorted(k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k))
    if "train.deepspeed" in changed and _same_deepspeed_settings(folder, new_flat.get("train.deepspeed")):
        changed.remove("train.deepspeed")  # the same JSON at another path: a moved or copied checkout
    refused = [k for k in changed if not _covered(k, RESUME_APPLIED + RESUME_FREE)]  # RESUME_REFUSED, or unknown
    if refused:
        raise RunFolderError(
            f"{folder} holds checkpoints of a run with different {refused}; use another train.output_dir "
            "or train.resume=none to start over"
        )
    applied = [k for k in changed if _covered(k, RESUME_APPLIED)]
    for key in applied:
        logger.warning("resuming with %s changed from %r to %r: applied from the resumed step on",
                       key, old_flat.get(key), new_flat.get(key))
    return applied


def data_fingerprint(data_path: str | Path, index: np.ndarray) -> dict[str, Any]:
    """Size, modification time and a hash of the record index (every record's byte span and line)."""
    stat = Path(data_path).stat()
    return {
        "path": str(Path(data_path).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "index_sha256": hashlib.sha256(np.ascontiguousarray(index).tobytes()).hexdigest(),
    }


def check_data_unchanged(folder: Path, fingerprint: dict[str, Any]) -> None:
    """A resumed run reads the data it started with: refuse a data file whose size or records changed."""
    recorded = _read_record(folder).get("data")
    if not recorded:
        logger.warning("%s has no data fingerprint (written by an older version); the data file is not checked",
                       folder / RUN_RECORD)
        return
    changed = [k for k in ("size", "index_sha256") if recorded.get(k) != fingerprint[k]]
    if changed:
        raise RunFolderError(
            f"data.data_path {fingerprint['path']}: the file changed since the run in {folder} started "
            f"({', '.join(changed)} differ from {folder / RUN_RECORD}); restore it, or use train.resume=none "
            "(or another train.output_dir) to train on the new contents"
        )
    if recorded.get("mtime_ns") != fingerprint["mtime_ns"]:
        logger.warning("%s: modification time changed since the run started, but size and records are the same; "
                       "resuming", fingerprint["path"])


def write_run_record(folder: Path, config: RunConfig, fingerprint: dict[str, Any], resumed_from: Path | None) -> None:
    record = _read_record(folder) if resumed_from is not None else {}
    record.setdefault("started", _utc_now())
    record["data"] = record.get("data") or fingerprint
    if config.train.deepspeed and "deepspeed" not in record:
        record["deepspeed"] = _read_json(config.train.deepspeed)  # what the run trains with, wherever it lives
    if resumed_from is not None:
        record.setdefault("resumes", []).append({"at": _utc_now(), "from": str(resumed_from)})
    record["name"] = config.name
    write_json_atomic(folder / RUN_RECORD, record, indent=1)


def _same_deepspeed_settings(folder: Path, new_path: str | None) -> bool:
    """Whether the DeepSpeed JSON at `new_path` holds the settings the run in `folder` started with."""
    recorded = _read_record(folder).get("deepspeed")
    return new_path is not None and recorded is not None and _read_json(new_path) == recorded


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _covered(key: str, sections: tuple[str, ...]) -> bool:
    """Whether a dotted key is one of `sections` or below one of them."""
    return any(key == s or key.startswith(s + ".") for s in sections)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = [
    "RESUME_APPLIED", "RESUME_FREE", "RESUME_REFUSED", "RunFolderError", "RunLock", "check_data_unchanged",
    "check_resume_settings", "data_fingerprint", "move_aside", "write_run_record",
]
