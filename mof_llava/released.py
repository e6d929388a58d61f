"""Rows of a Hugging Face dataset as released: its parquet files, or a JSON Lines copy. The benchmarks
and the REC converter read their releases through it.

Each row comes with where it was read ("file:line" or "file row N") for error messages; a row
that cannot be read raises the benchmark's own error class with that place. Also the one reader of a
JSON file that holds one object (GQA's questions, MMVP pattern maps).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def read_records(files: Sequence[Path], error: type[Exception]) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        if f.suffix == ".parquet":
            import pandas as pd

            try:
                frame = pd.read_parquet(f)
            except ImportError as err:  # pandas reads parquet with pyarrow, not a base dependency
                raise error(f"{f}: reading parquet needs pyarrow ({err})") from None
            rows += [(f"{f} row {n}", r) for n, r in enumerate(frame.to_dict("records"))]
            continue
        for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"{f}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise error(f"{f}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def read_json_object(path: Path, error: type[Exception], expected: str) -> dict[str, Any]:
    """A JSON file holding one object; not JSON, or not an object, raises `error` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}")
    return data


def check_unique(ids: Sequence[tuple[Any, str]], column: str, error: type[Exception]) -> None:
    """(id, where) pairs: the second use of an id (compared as text) is an error naming both places."""
    seen: dict[str, str] = {}
    for value, where in ids:
        if str(value) in seen:
            raise error(f"{where}: {column} {value} already used at {seen[str(value)]}")
        seen[str(value)] = where


def release_rows(
    path: str | Path,
    files: Callable[[Path], list[Path]],
    error: type[Exception],
    what: str,
    expected: str,
) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """(folder that relative image paths start from, rows) of a release given as a file or a
    folder; `files` lists the files to read, `expected` names them in the error when there are none."""
    path = Path(path)
    return (path if path.is_dir() else path.parent), read_records(release_files(path, files, error, what, expected), error)


def release_files(
    path: Path, files: Callable[[Path], list[Path]], error: type[Exception], what: str, expected: str
) -> list[Path]:
    """The files `files` lists for a release file or folder; none, or no such path, raises `error`."""
    if not path.exists():
        raise error(f"{path}: {what} file or folder not found")
    found = files(path)
    if not found:
        raise error(f"{path}: no {what} files ({expected})")
    return found
