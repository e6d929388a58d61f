"""Every row against a named baseline row (`mof-llava tables --baseline NAME`), by a paired bootstrap.

For a benchmark whose metrics keep per-unit results (`benchmarks.intervals.units`: MMVP pairs,
MMBench circular groups, NaturalBench samples, GQA questions; POPE questions within each split,
CV-Bench questions within each source), one draw of unit indices resamples both rows, and the
benchmark's statistic (a mean; POPE's mean F1 of the splits; CV-Bench's composite) is computed for
both on it (`intervals.paired_statistic`); a row over several runs (seeds) scores the mean of its
runs' statistics. A cell whose interval holds 0 is marked in the tables: the data do not support a
difference from the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..benchmarks.intervals import RESAMPLES, SEED, Units, paired_statistic, units
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
            elif mine[0].ids != theirs[0].ids:
                notes.append(f"{group.name}: {title(bench)} holds other units than {baseline}; not compared")
            else:
                diff, (lo, hi) = paired_statistic(mine, theirs)
                group.paired[bench] = Paired(baseline, diff, (lo, hi))
    if untestable:
        names = ", ".join(title(b) for b in sorted(untestable))
        notes.append(f"{names}: no paired comparison with {baseline} (the metrics keep no per-unit results).")
    return notes


def group_units(group: Group, bench: str) -> list[Units] | None:
    """Each scored run's per-unit results; None when a run keeps none or the runs answered
    different units."""
    per_run = []
    for result in group.results.get(bench, []):
        if result.score is None:
            continue
        try:
            per_run.append(units(result.metrics))
        except (KeyError, TypeError, ValueError) as err:
            raise ResultsError(
                f"{result.path}: per-unit results unreadable ({type(err).__name__}: {err})"
            ) from None
    if not per_run or any(u is None for u in per_run):
        return None
    if any(u.ids != per_run[0].ids for u in per_run):
        return None
    return per_run


def paired_note(baseline: str) -> str:
    return (
        f"{MARK}: the difference from {baseline} is not supported: its paired bootstrap 95 % interval holds 0 "
        f"({RESAMPLES} resamples, seed {SEED}, of the units both rows answered: MMVP pairs, MMBench circular "
        "groups, NaturalBench samples, GQA questions, POPE questions within each split, CV-Bench questions "
        "within each source, the score's own statistic computed for both rows on each draw; a row over "
        "several runs scores the mean of its runs)."
    )
