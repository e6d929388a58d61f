"""Where the data pipeline keeps what it computes once per data file (record index, token lengths).

Cache files are named after the data file plus a key that changes whenever the data file (its path,
size or modification time) or anything else the cached values depend on changes (the code that
computed them included: `source_code`), so a stale cache is
never read: a changed input simply has a different file name. Files are written atomically, so a
crash or a second process writing the same entry never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

CACHE_ENV = "MOF_LLAVA_CACHE"
logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$MOF_LLAVA_CACHE/data`, else `$XDG_CACHE_HOME/mof-llava/data`, else `~/.cache/mof-llava/data`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "data"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mof-llava" / "data"


def file_fingerprint(path: Path) -> str:
    """Identifies one version of a file: absolute path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def cache_file(cache_dir: str | Path | None, data_path: Path, kind: str, *key_parts: str) -> Path:
    digest = hashlib.sha256("\n".join([file_fingerprint(data_path), kind, *key_parts]).encode()).hexdigest()[
        :20
    ]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{data_path.name}.{digest}.{kind}.npy"


def source_code(obj, fallback: str) -> str:
    """The source of a function, class or module, for cache keys: values computed by code that has
    since been edited are then never read back. `fallback` (the cache's version constant) when no
    source is shipped, so the version still separates releases."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return fallback


def load_cached(path: Path) -> np.ndarray | None:
    """The cached array memory-mapped read-only (pages shared by every worker), or None if absent."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return None  # unreadable entry (e.g. from a different numpy): recompute and overwrite


def save_cached(path: Path, array: np.ndarray) -> bool:
    """Write `array` to `path` atomically. False (with a warning) when the cache cannot be written, e.g.
    a read-only home directory: the caller keeps its in-memory copy and the run goes on."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a handle: np.save would add ".npy" to a name
            np.save(f, array, allow_pickle=False)
    except OSError as err:
        logger.warning("cannot write the data cache %s (%s); set data.cache_dir or %s", path, err, CACHE_ENV)
        return False
    return True
