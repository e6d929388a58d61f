"""Rows of a Hugging Face dataset as released: its parquet files, or a JSON Lines copy.

Each row comes with where it was read ("file:line" or "file row N") for error messages; a row
that cannot be read raises the benchmark's own error class with that place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
