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

Two models answered on the same units are compared by a paired bootstrap (`paired_difference`):
one draw of unit indices resamples both, so what the units share (their difficulty) cancels.
`unit_values` reads the per-unit results back from metrics.json for the benchmarks whose score is
a mean over units and which keep them: MMVP (pairs, from `per_question`), MMBench (circular groups,
`groups`), NaturalBench (samples, `per_sample` G-Acc).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, list[float]]:
    """Mean of `a` minus mean of `b` over the same units (per-unit values, in the same order), times
    100, and its paired bootstrap interval: resampling units resamples both models' values together,
    which is resampling the per-unit differences."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a paired bootstrap needs the same units on both sides, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    (drawn,) = draw([diff], resamples, seed)
    return float(100.0 * diff.mean()), percentile_interval(100.0 * drawn.mean(axis=1))


def unit_values(metrics: dict[str, Any]) -> dict[str, float] | None:
    """unit id -> the unit's share of the score (the score is their mean, in percent / 100), or None
    for a benchmark whose metrics keep no per-unit results (POPE, GQA, CV-Bench, MMVP-VLM)."""
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
    return None
