"""What a metrics file records about where its numbers came from: code version and data files."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files larger than this are described by path and size only (hashing an image folder's worth of
# data would cost more than the evaluation bookkeeping is worth).
_HASH_LIMIT_BYTES = 2 << 30


def code_version() -> dict[str, Any]:
    """Package version and, when running from a git checkout, the commit and whether it has local edits."""
    from .. import __version__

    info: dict[str, Any] = {"mof_llava": __version__}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "mof_llava"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info.update(git_commit=commit, git_dirty=bool(dirty))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(files: Mapping[str, str | Path]) -> dict[str, dict[str, Any]]:
    """role -> {path, and for files: size and sha256}."""
    described = {}
    for role, path in files.items():
        path = Path(path)
        entry: dict[str, Any] = {"path": str(path.resolve())}
        if path.is_file():
            size = path.stat().st_size
            entry["bytes"] = size
            if size <= _HASH_LIMIT_BYTES:
                entry["sha256"] = sha256_of(path)
        elif path.is_dir():
            entry["kind"] = "folder"
        else:
            entry["kind"] = "missing"
        described[role] = entry
    return described
