"""Every row against a named baseline row (`mof-llava tables --baseline NAME`), by a paired bootstrap.

For a benchmark whose metrics keep per-unit results (`benchmarks.intervals.unit_values`: MMVP pairs,
MMBench circular groups, NaturalBench samples), a row's per-unit values are averaged over its runs
(seeds), the baseline's too, and the difference of the two scores is resampled over the units with
one draw of unit indices for both rows (`intervals.paired_difference`). A cell whose interval holds
0 is marked in the tables: the data do not support a difference from the baseline.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ..benchmarks.intervals import RESAMPLES, SEED, paired_difference, unit_values
from .results import ResultsError, title
from .tables import Group, Paired

MARK = "†"  # Markdown; LaTeX writes $^\dagger$


def compare_with_baseline(groups: Sequence[Group], baseline: str) -> list[str]:
    """Fill each other group's `paired` (benchmark -> Paired); returns the notes on what could not be
    compared, and why."""
    by_name = {g.name: g for g in groups}
    if baseline not in by_name:
        raise ResultsError(
            f"--baseline {baseline!r} is not a row of the tables; the rows are {sorted(by_name)}"
        )
    base, notes, untestable = by_name[baseline], [], set()
    for group in groups:
        for bench in group.results if group is not base else ():
            if bench not in base.results:
                continue
            mine, theirs = group_units(group, bench), group_units(base, bench)
            if mine is None or theirs is None:
                untestable.add(bench)
            elif set(mine) != set(theirs):
                notes.append(f"{group.name}: {title(bench)} holds other units than {baseline}; not compared")
            else:
                keys = sorted(mine)
                diff, (lo, hi) = paired_difference([mine[k] for k in keys], [theirs[k] for k in keys])
                group.paired[bench] = Paired(baseline, diff, (lo, hi))
    if untestable:
        names = ", ".join(title(b) for b in sorted(untestable))
        notes.append(f"{names}: no paired comparison with {baseline} (the metrics keep no per-unit results).")
    return notes


def group_units(group: Group, bench: str) -> dict[str, float] | None:
    """unit -> the unit's value averaged over the group's runs; None when a run keeps no units or the
    runs answered different units."""
    per_run = [unit_values(r.metrics) for r in group.results.get(bench, []) if r.score is not None]
    if not per_run or any(units is None for units in per_run):
        return None
    keys = set(per_run[0])
    if any(set(units) != keys for units in per_run):
        return None
    return {k: statistics.fmean(units[k] for units in per_run) for k in keys}


def paired_note(baseline: str) -> str:
    return (
        f"{MARK}: the difference from {baseline} is not supported: its paired bootstrap 95 % interval holds 0 "
        f"({RESAMPLES} resamples, seed {SEED}, of the units both rows answered: MMVP pairs, MMBench circular "
        "groups, NaturalBench samples; a row over several runs is compared by its units' mean over the runs)."
    )
