"""Numbers published by others, shown next to ours in their own columns and never mixed with them.

    # configs/experiments/reported.yaml
    models:
      llava-1.5-7b:                          # matched to the table row (run group) of this name
        source: haotian-liu/LLaVA docs/MODEL_ZOO.md
        gqa: 62.0
        mmvp: {value: 24.7, source: MMVP paper Fig. 3, note: the chart does not name the size}

A value is a number (with the model's `source`) or a mapping with its own `value`, `source`,
`note`. Benchmarks are those of the tables (mmvp, pope, mmbench, gqa).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .spec import SWEEP_BENCHMARKS


class ReportedError(ValueError):
    pass


@dataclass(frozen=True)
class ReportedValue:
    value: float
    source: str
    note: str = ""


Reported = dict[str, dict[str, ReportedValue]]  # row -> benchmark -> value


def load_reported(path: str | Path) -> Reported:
    path = Path(path)
    if not path.is_file():
        raise ReportedError(f"{path}: reported-numbers file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or set(raw) - {"models"} or not isinstance(raw.get("models"), dict):
        raise ReportedError(f"{path}: expected `models:` mapping row names to reported numbers")
    reported: Reported = {}
    for model, entries in raw["models"].items():
        where = f"{path}: models.{model}"
        if not isinstance(entries, dict):
            raise ReportedError(f"{where}: expected a mapping of benchmarks to numbers")
        source = entries.get("source")
        values = {}
        for bench, entry in entries.items():
            if bench == "source":
                continue
            if bench not in SWEEP_BENCHMARKS:
                raise ReportedError(
                    f"{where}.{bench}: unknown benchmark; choose from {list(SWEEP_BENCHMARKS)}"
                )
            values[bench] = _value(entry, source, f"{where}.{bench}")
        reported[str(model)] = values
    return reported


def _value(entry, source, where: str) -> ReportedValue:
    if isinstance(entry, dict):
        unknown = set(entry) - {"value", "source", "note"}
        if unknown or "value" not in entry:
            raise ReportedError(f"{where}: expected {{value, source, note}}, got keys {sorted(entry)}")
        number, source, note = entry["value"], entry.get("source", source), entry.get("note", "")
    else:
        number, note = entry, ""
    if not isinstance(number, int | float) or isinstance(number, bool):
        raise ReportedError(f"{where}: {number!r} is not a number")
    if not source:
        raise ReportedError(f"{where}: no source; every reported number says where it was published")
    return ReportedValue(float(number), str(source), str(note))
