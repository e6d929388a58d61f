"""Atomic file writes: every output a long job produces (answers, metrics, caches, checkpoints'
markers, sheets, reports) is written to a temporary file beside its final path and moved into place,
so an interrupted write never leaves a truncated file or destroys the previous one.

    with atomic_path(out) as tmp:       # any writer that takes a path
        frame.to_csv(tmp, index=False)
    write_text_atomic(out, text)        # the common cases
    write_json_atomic(out, obj, indent=1)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file in `path`'s folder, created empty and exclusively (so concurrent writers
    never share one; normal permissions, unlike `tempfile.mkstemp`'s owner-only ones); moved onto
    `path` when the block ends without error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.open("x").close()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8), fsync, then move it into place."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, **dump_kwargs: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, **dump_kwargs))
