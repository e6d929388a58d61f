"""Bootstrap 95 % confidence intervals for the scores in metrics.json.

A seeded percentile bootstrap over the benchmark's natural unit: the unit is what was sampled
when the benchmark was made, so resampling anything smaller treats correlated answers as
independent and gives intervals that are too narrow (an MMVP pair's two questions share a pair
of images; an MMBench question's circular rows share a question; a NaturalBench sample's four
answers share two images and two questions). POPE and GQA resample questions, POPE within each
split (the splits are fixed in size).

The scheme, which a test re-implements with plain loops: `rng = numpy.random.default_rng(seed)`;
for each stratum in order, `rng.integers(0, n, size=(resamples, n))` draws the resampled units;
the statistic of each resample is computed; the interval is `numpy.percentile(stats, [2.5, 97.5])`
(linear interpolation). Metrics record the scheme under `bootstrap` (see `describe`).

Two models answered on the same units are compared by a paired bootstrap (`paired_statistic`):
one draw of unit indices resamples both, and the benchmark's own statistic (the one its score is)
is computed for both rows on that draw, so what the units share (their difficulty) cancels. A mean
over units is the simple case (`paired_difference`). `units` reads the per-unit results back from
metrics.json: MMVP pairs (`per_question`), MMBench circular groups (`groups`), NaturalBench
samples (`per_sample` G-Acc) and GQA questions (`per_question`), all means; POPE questions within
each split (F1 per split, averaged) and CV-Bench questions within each source (its composite),
from their `per_question`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def describe(unit: str, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """What metrics.json records beside the intervals, so they can be reproduced."""
    return {"method": "percentile", "level": LEVEL, "resamples": resamples, "seed": seed, "unit": unit}


def percentile_interval(stats: np.ndarray) -> list[float]:
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(np.asarray(stats, dtype=float), [tail, 100 - tail])
    return [float(lo), float(hi)]


def draw(strata: Sequence[Any], resamples: int = RESAMPLES, seed: int = SEED) -> list[np.ndarray]:
    """Bootstrap resamples of each stratum: an array whose first axis is the unit becomes an array
    (resamples, n, ...) of resampled units; strata are resampled independently, in order."""
    rng = np.random.default_rng(seed)
    drawn = []
    for units in strata:
        units = np.asarray(units)
        if len(units) == 0:
            raise ValueError("cannot bootstrap an empty set of units")
        drawn.append(units[rng.integers(0, len(units), size=(resamples, len(units)))])
    return drawn


def mean_interval(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> list[float] | None:
    """Interval of the mean of per-unit values (0/1 hits, or a unit's share correct), times 100
    (percent, the scale of the scores); None without values (the score is then 0 by convention)."""
    if len(values) == 0:
        return None
    (drawn,) = draw([np.asarray(values, dtype=float)], resamples, seed)
    return percentile_interval(100.0 * drawn.mean(axis=1))


Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]
"""Per-stratum resampled unit values, each (resamples, n, ...), -> the score (percent) of each resample."""


def mean_statistic(strata: Sequence[np.ndarray]) -> np.ndarray:
    """100 × the mean of one stratum's per-unit values: the score of MMVP, MMBench, NaturalBench, GQA."""
    (units,) = strata
    return 100.0 * units.mean(axis=1)


@dataclass(frozen=True)
class Units:
    """A run's per-unit results as its score counts them: the unit ids of each stratum (sorted,
    strata in the statistic's order), their values (first axis the unit, in the ids' order) and
    the statistic the score is of them."""

    ids: tuple[tuple[str, tuple[str, ...]], ...]
    values: tuple[np.ndarray, ...]
    statistic: Statistic

    @classmethod
    def of(cls, strata: Mapping[str, Mapping[str, Any]], statistic: Statistic, dtype: Any = float) -> Units:
        ids = tuple((name, tuple(sorted(units))) for name, units in strata.items())
        values = tuple(np.asarray([strata[name][k] for k in keys], dtype=dtype) for name, keys in ids)
        return cls(ids, values, statistic)

    def score(self) -> float:
        """The statistic on the units as answered (the score, up to rounding)."""
        return float(self.statistic([v[None] for v in self.values])[0])


def paired_statistic(
    a: Sequence[Units], b: Sequence[Units], resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, list[float]]:
    """Row `a`'s score minus row `b`'s and its paired bootstrap interval. A row is one or more runs
    on the same units; its score is the mean of its runs' statistics. One draw of unit indices (per
    stratum) resamples every run of both rows, and each resample's difference is taken on it."""
    runs = [*a, *b]
    if not a or not b or any(r.ids != runs[0].ids or r.statistic is not runs[0].statistic for r in runs):
        raise ValueError("a paired bootstrap needs the same units and statistic on both sides")
    # runs stacked on a last axis: one index draw picks the same units for every run
    stacked = [np.stack([r.values[s] for r in runs], axis=-1) for s in range(len(runs[0].values))]
    statistic, split = runs[0].statistic, len(a)

    def difference(strata: Sequence[np.ndarray]) -> np.ndarray:
        per_run = [statistic([d[..., r] for d in strata]) for r in range(len(runs))]
        return np.mean(per_run[:split], axis=0) - np.mean(per_run[split:], axis=0)

    full = float(difference([u[None] for u in stacked])[0])
    return full, percentile_interval(difference(draw(stacked, resamples, seed)))


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, list[float]]:
    """Mean of `a` minus mean of `b` over the same units (per-unit values, in the same order), times
    100, and its paired bootstrap interval: the simple case of `paired_statistic`."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a paired bootstrap needs the same units on both sides, got {len(a)} and {len(b)}")
    ids = (("", tuple(str(i) for i in range(len(a)))),)
    rows = [Units(ids, (np.asarray(v, dtype=float),), mean_statistic) for v in (a, b)]
    return paired_statistic(rows[:1], rows[1:], resamples, seed)


def unit_values(metrics: dict[str, Any]) -> dict[str, float] | None:
    """unit id -> the unit's share of the score, for a benchmark whose score is the mean of its
    units (in percent / 100); None where the metrics keep no per-unit results or the score is
    another statistic of them (POPE, CV-Bench: see `units`)."""
    bench = metrics.get("benchmark")
    if bench == "mmvp" and isinstance(metrics.get("per_question"), dict):
        pairs: dict[str, list[bool]] = {}
        for index, entry in metrics["per_question"].items():  # questions 2k-1, 2k form pair k
            pairs.setdefault(str((int(index) - 1) // 2), []).append(bool(entry["correct"]))
        return {k: float(len(v) == 2 and all(v)) for k, v in pairs.items()}
    if bench == "mmbench" and isinstance(metrics.get("groups"), dict):
        return {str(k): float(v) for k, v in metrics["groups"].items()}
    if bench == "naturalbench" and isinstance(metrics.get("per_sample"), dict):
        return {str(k): float(v) for k, v in metrics["per_sample"].items()}
    if bench == "gqa" and isinstance(metrics.get("per_question"), dict):
        return {str(k): float(v) for k, v in metrics["per_question"].items()}
    return None


def units(metrics: dict[str, Any]) -> Units | None:
    """A run's per-unit results and the statistic its score is of them, from its metrics.json; None
    for metrics that keep none (files written before they were kept, MMVP-VLM)."""
    bench = metrics.get("benchmark")
    if bench in ("pope", "cvbench"):
        from . import cvbench, pope  # they import this module

        return (pope.paired_units if bench == "pope" else cvbench.paired_units)(metrics)
    values = unit_values(metrics)
    if values is None:
        return None
    # 0/1 units kept as booleans: GQA's 12578 questions, resampled for several runs, stay small
    binary = set(values.values()) <= {0.0, 1.0}
    return Units.of({"": values}, mean_statistic, dtype=bool if binary else float)
