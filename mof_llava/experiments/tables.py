"""The paper's tables from evaluation results: rows are run groups (a model, over its seeds).

- `main_table`: baseline vs I-MoF (every group whose mixer is not additive) on MMVP, POPE, MMBench,
  GQA; the paper's comparison of LLaVA-1.5 with and without Interleaved-MoF. A preference (BPO)
  row follows the row of the model it was trained from.
- `ratio_table`: A-MoF groups by DINOv2 ratio alpha; the paper's additive-mixing ablation.
- `pattern_table`: MMVP pair accuracy per visual pattern (needs a question -> pattern map).

A cell is the mean over the group's runs (seeds) with the sample standard deviation (n - 1) when
there are several; the number of runs is part of the table. Reported numbers, when given, go in
their own columns, marked as reported, with their sources as notes. With a baseline row, each cell
also carries its paired comparison with the baseline (`Paired`, computed in paired.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .reported import Reported, ReportedValue
from .results import Result, ResultsError, benchmark_order, title

MIXER_ORDER = {"none": 0, "interleave": 1, "concat": 2, "additive": 3}


@dataclass(frozen=True)
class Paired:
    """A row's score minus the baseline row's, with the paired bootstrap 95 % interval over the
    units both answered (paired.py)."""

    baseline: str
    difference: float
    interval: tuple[float, float]

    @property
    def supported(self) -> bool:
        """The interval excludes 0: the data support a difference."""
        return self.interval[0] > 0 or self.interval[1] < 0


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of a group's values (std None for one value)."""

    values: tuple[float, ...]
    interval: tuple[float, float] | None = None  # one run's bootstrap 95 % interval (score_ci95)
    paired: Paired | None = None  # the difference from the baseline row, when one is named

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass
class Group:
    """One table row: the runs of one model configuration (its seeds)."""

    name: str
    arm: str | None
    mixer_mode: str | None
    alpha: float | None
    towers: tuple[str, ...]
    runs: list[str] = field(default_factory=list)
    results: dict[str, list[Result]] = field(default_factory=dict)  # benchmark -> one per run
    base_group: str | None = None  # for a tower-ablated row, the row of the model itself
    tuned_from: str | None = None  # for a preference (BPO) row, the row of the model it was trained from
    paired: dict[str, Paired] = field(default_factory=dict)  # benchmark -> difference from the baseline row

    def stat(self, benchmark: str, value: Callable[[Result], float | None] | None = None) -> Stat | None:
        """The cell of `benchmark` (by default its score, with the interval of a one-run cell and
        the paired comparison with the baseline row)."""
        read = value or _score
        results = [r for r in self.results.get(benchmark, []) if read(r) is not None]
        if not results:
            return None
        if value is not None:
            return Stat(tuple(read(r) for r in results))
        return Stat(tuple(read(r) for r in results), _one_run_interval(results), self.paired.get(benchmark))


def _score(result: Result) -> float | None:
    return result.score


def _one_run_interval(results: Sequence[Result]) -> tuple[float, float] | None:
    """The bootstrap interval of a cell made of one run (several runs show mean ± std instead)."""
    interval = results[0].metrics.get("score_ci95") if len(results) == 1 else None
    if not (isinstance(interval, list) and len(interval) == 2):
        return None
    return float(interval[0]), float(interval[1])


def group_results(results: Sequence[Result]) -> list[Group]:
    """Results into groups, ordered: baseline, I-MoF, others, then A-MoF by arm and alpha."""
    groups: dict[str, Group] = {}
    for result in results:
        group = groups.get(result.group)
        if group is None:
            group = groups[result.group] = Group(
                result.group,
                result.arm,
                result.mixer_mode,
                result.alpha,
                result.towers,
                base_group=result.base_group,
                tuned_from=result.tuned_from,
            )
        elif (group.mixer_mode, group.alpha, group.towers) != (
            result.mixer_mode,
            result.alpha,
            result.towers,
        ):
            raise ResultsError(
                f"group {result.group} holds different models: {group.mixer_mode}/{group.alpha}/{list(group.towers)} "
                f"and {result.mixer_mode}/{result.alpha}/{list(result.towers)} ({result.path})"
            )
        if result.run not in group.runs:
            group.runs.append(result.run)
        group.results.setdefault(result.benchmark, []).append(result)
    ordered = sorted(
        groups.values(),
        key=lambda g: (MIXER_ORDER.get(g.mixer_mode or "", 2), g.arm or "", g.alpha or 0.0, g.name),
    )
    return _after_their_base(ordered)


def _after_their_base(groups: list[Group]) -> list[Group]:
    """Each preference row right below the row of the model it was trained from (when present)."""
    names = {g.name for g in groups}
    tuned: dict[str, list[Group]] = {}
    for group in groups:
        if group.tuned_from in names:
            tuned.setdefault(group.tuned_from, []).append(group)
    out = []
    for group in (g for g in groups if g.tuned_from not in names):
        out += [group, *tuned.get(group.name, [])]
    return out


# -- tables --------------------------------------------------------------------------------------------
ColumnKind = Literal["text", "count", "number", "stat", "reported"]


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: ColumnKind


@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[Column]
    rows: list[list[Any]]  # per column kind: str, int, float, Stat | None, ReportedValue | None
    notes: list[str] = field(default_factory=list)


def main_table(groups: Sequence[Group], reported: Reported | None = None) -> Table | None:
    rows = [g for g in groups if g.mixer_mode != "additive"]
    if not rows:
        return None
    table = _score_table(
        "main",
        "Baseline vs Interleaved-MoF",
        rows,
        [Column("model", "model", "text"), Column("mixer", "mixer", "text")],
        lambda g: [g.name, g.mixer_mode or "?"],
        reported,
    )
    tuned = [f"{g.name} from {g.tuned_from}" for g in rows if g.tuned_from]
    if tuned:
        table.notes.append(
            "Preference-trained (BPO) rows, each below the model it starts from: " + "; ".join(tuned) + "."
        )
    return table


def ratio_table(groups: Sequence[Group], reported: Reported | None = None) -> Table | None:
    rows = [g for g in groups if g.mixer_mode == "additive"]
    if not rows:
        return None
    table = _score_table(
        "amof_ratio",
        "Additive-MoF: the DINOv2 ratio alpha",
        rows,
        [Column("model", "model", "text"), Column("alpha", "alpha", "number")],
        lambda g: [g.name, g.alpha],
        reported,
    )
    table.notes.insert(
        0,
        "alpha: share of DINOv2 features, alpha * DINOv2 + (1 - alpha) * CLIP before one adapter; 0 is LLaVA-1.5.",
    )
    return table


def pattern_table(groups: Sequence[Group], per_pattern: Mapping[str, Mapping[str, Stat]]) -> Table | None:
    """Per-pattern MMVP pair accuracy: `per_pattern[group][pattern]`."""
    rows = [g for g in groups if g.name in per_pattern]
    if not rows:
        return None
    patterns = list(dict.fromkeys(p for g in rows for p in per_pattern[g.name]))
    columns = [Column("model", "model", "text"), Column("runs", "runs", "count")]
    columns += [Column(p, p, "stat") for p in patterns]
    table = Table(
        "mmvp_patterns",
        "MMVP pair accuracy per visual pattern",
        columns,
        [[g.name, len(g.runs)] + [per_pattern[g.name].get(p) for p in patterns] for g in rows],
    )
    table.notes.append(_stat_note())
    return table


def _score_table(name, title_text, rows: Sequence[Group], lead: list[Column], lead_values, reported) -> Table:
    benchmarks = benchmark_order({b for g in rows for b in g.results if b != "mmvp-vlm"})
    columns = [*lead, Column("runs", "runs", "count")]
    with_reported = {b for b in benchmarks if reported and any(b in reported.get(g.name, {}) for g in rows)}
    for bench in benchmarks:
        columns.append(Column(bench, title(bench), "stat"))
        if bench in with_reported:
            columns.append(Column(f"{bench}_reported", f"{title(bench)} (reported)", "reported"))
    table_rows = []
    for group in rows:
        row = [*lead_values(group), len(group.runs)]
        for bench in benchmarks:
            row.append(group.stat(bench))
            if bench in with_reported:
                row.append((reported or {}).get(group.name, {}).get(bench))
        table_rows.append(row)
    table = Table(name, title_text, columns, table_rows, [_stat_note()])
    if any(isinstance(cell, Stat) and cell.interval for row in table_rows for cell in row):
        table.notes.append(
            "A one-run cell shows its score's bootstrap 95 % interval in brackets (score_ci95 of its metrics; "
            "docs/evaluation.md, Confidence intervals)."
        )
    missing = [
        f"{g.name}: {title(b)} on {g.stat(b).n if g.stat(b) else 0} of {len(g.runs)} runs"
        for g in rows
        for b in benchmarks
        if (g.stat(b).n if g.stat(b) else 0) < len(g.runs)
    ]
    if missing:
        table.notes.append(
            "Not every run has every score (cells are over the runs that have it): "
            + "; ".join(missing)
            + "."
        )
    if with_reported:
        table.notes.append(
            "Columns marked (reported) are numbers published by others, copied from the cited sources; they were "
            "not measured here."
        )
    return table


def _stat_note() -> str:
    return (
        "Scores in %. A cell is the mean over the row's runs (seeds); with several runs, mean ± sample "
        "standard deviation (n - 1). runs: the number of runs in the row."
    )


def reported_sources(table: Table) -> list[ReportedValue]:
    """The distinct reported values' sources in the order they appear (for numbered notes)."""
    seen: dict[tuple[str, str], ReportedValue] = {}
    for row in table.rows:
        for column, cell in zip(table.columns, row):
            if column.kind == "reported" and cell is not None:
                seen.setdefault((cell.source, cell.note), cell)
    return list(seen.values())
