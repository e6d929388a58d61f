"""Pickle files we did not write are read with torch's restricted unpickler first.

A pickle can run any code while it loads. Our own loaders read safetensors or call
`torch.load(weights_only=True)`, but DeepSpeed's checkpoint engine reads `global_stepN/*_states.pt`
with `weights_only=False`. So before a checkpoint is handed to anyone, `check_checkpoint` loads every
pickle file in it with `weights_only=True` (memory-mapped: the tensors are not read), allowing by
name only the few non-tensor types DeepSpeed and the Trainer put there, and refuses the checkpoint
naming the file and the offending globals if anything else is inside.

    check_checkpoint(run / "checkpoint-500")      # raises UnsafePickleError, one line
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .errors import first_line

# What a DeepSpeed ZeRO-2/3 + HF Trainer checkpoint holds besides tensors and containers (found by
# saving real ones: the loss scaler, the ZeRO stage enum, fragment addresses; numpy in the RNG state).
ALLOWED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.UInt32DType",
)
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}
NOT_PICKLES = {".safetensors", ".json", ".txt", ".yaml", ".md", ".py"}  # formats nobody unpickles
_ZIP_MAGIC = b"PK\x03\x04"


class UnsafePickleError(Exception):
    """A file would run code (or load a type we do not allow) when unpickled."""


def check_checkpoint(folder: str | Path) -> list[Path]:
    """Check every pickle file under `folder` (and DeepSpeed's `latest` tag); returns the files checked."""
    folder = Path(folder)
    _check_latest_tag(folder)
    files = pickle_files(folder)
    for path in files:
        check_pickle(path)
    return files


def check_pickle(path: str | Path) -> None:
    """Load `path` with the restricted unpickler; raise UnsafePickleError naming what it refused."""
    path = Path(path)
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_allowed_objects()):
            torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(
            f"{path}: refused to load, it holds {_offending(path, is_zip, err)} (not allowed in a checkpoint: "
            "unpickling it could run code); use a checkpoint you wrote yourself"
        ) from None
    except Exception as err:  # truncated, not a torch file: refuse too, DeepSpeed would load it unchecked
        raise UnsafePickleError(f"{path}: not a readable torch file ({first_line(err)})") from None


def pickle_files(folder: Path) -> list[Path]:
    """Files under `folder` that are pickles: by suffix, or by content (a zip or a protocol-2+ pickle)."""
    found, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix in PICKLE_SUFFIXES or (path.suffix not in NOT_PICKLES and _looks_pickled(path)):
                found.append(path)
    return sorted(found)


def _looks_pickled(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"


def _check_latest_tag(folder: Path) -> None:
    # DeepSpeed loads `<folder>/<contents of latest>/`: a tag that leaves the folder escapes the check.
    latest = folder / "latest"
    if not latest.is_file():
        return
    tag = latest.read_text().strip()
    if not tag or "/" in tag or "\\" in tag or tag in (".", "..") or not (folder / tag).is_dir():
        raise UnsafePickleError(f"{latest}: names {tag!r}, which is not a folder of this checkpoint")


def _allowed_objects() -> list:
    objects = []
    for name in ALLOWED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            objects.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # deepspeed not installed, or another numpy layout
            continue
    return objects


def refused_globals(err: Exception) -> list[str]:
    """The globals torch's restricted unpickler named in `err` (`GLOBAL module.name ...`)."""
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))


def _offending(path: Path, is_zip: bool, err: Exception) -> str:
    names: list[str] = []
    if is_zip:
        try:
            names = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in ALLOWED_GLOBALS]
        except Exception:
            names = []
    names = names or refused_globals(err)
    if names:
        return "the global(s) " + ", ".join(sorted(set(names)))
    return "what the restricted unpickler refused: " + first_line(err)
