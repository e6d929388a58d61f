"""Every pair of rows whose cosine similarity reaches a threshold, without an N x N matrix.

Both methods compare blocks of rows with one matrix product and keep the entries at or above the
threshold, so memory holds one tile of scores per worker however many rows there are.

- **exact** (this module): the upper triangle of the similarity matrix, tile by tile: N^2 d / 2
  multiply-adds. A million 1024-d rows would take about an hour on two cores, so it is the default
  only for small collections, and the yardstick for the approximate method.
- **ivf** (ivf.py): rows are clustered and each row is compared only with the clusters it probes;
  a probe rule with a proof of exactness at slack 1, tunable below it. Its recall is measured
  against exact search on a random sample of rows (`sample_true_pairs`).

Every candidate is re-scored in float64 from the same float32 unit rows and kept when that score
reaches the threshold, so both methods report identical similarities for the pairs they find.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from mof_llava.mining.errors import MiningError
from mof_llava.mining.kernel import (
    SCORE_SLACK,
    Candidates,
    UnitRows,
    default_workers,
    in_parallel,
    load_rows,
    pairs_between,
)
from mof_llava.options import option

PAIRS = frozenset({"pairs"})  # the `mine` step whose flags the options are


@dataclass(frozen=True)
class SearchConfig:
    method: str = option(  # auto: exact up to exact_max_rows, else ivf
        "auto",
        "exact: every pair, O(N^2); ivf: clustered search; auto: exact up to --exact-max-rows",
        choices=("auto", "exact", "ivf"),
        actions=PAIRS,
    )
    exact_max_rows: int = option(
        50_000, "largest collection auto searches exactly (default %(default)s)", actions=PAIRS
    )
    lists: int = option(0, "IVF clusters (default: about 2 sqrt(N), a power of two)", actions=PAIRS)
    probe_slack: float = option(  # 1 = exact, smaller = faster
        0.25,
        "IVF probe rule slack: 1 misses no pair (with --max-probes 0), smaller is faster (default %(default)s)",
        actions=PAIRS,
    )
    max_probes: int = option(
        16,
        "IVF: the probe rule looks at this many most similar clusters besides an image's own "
        "(0 = all; default %(default)s)",
        actions=PAIRS,
    )
    train_rows_per_list: int = 40  # k-means training sample = lists x this many rows
    kmeans_iterations: int = 10
    block_rows: int = 8192  # rows per block when streaming the matrix
    tile_rows: int = 2048  # query rows per matrix product
    tile_cols: int = 8192  # database rows per matrix product
    recall_sample: int = option(  # ivf: rows whose exact-search pairs measure the recall
        2000,
        "IVF: measure recall against exact search on this many random images (0 = skip; default %(default)s)",
        actions=PAIRS,
    )
    workers: int = option(0, "threads (default: one per core)", actions=PAIRS)  # 0 = one per core
    seed: int = option(
        0,
        "seeds the IVF k-means training sample and the recall sample (default %(default)s)",
        actions=PAIRS,
    )

    def __post_init__(self):
        if self.recall_sample < 0:
            raise MiningError(f"recall_sample must be >= 0 (0 = skip), got {self.recall_sample}")

    def resolved_method(self, rows: int) -> str:
        if self.method not in ("auto", "exact", "ivf"):
            raise MiningError(f"unknown search method {self.method!r} (expected auto, exact or ivf)")
        if self.method == "auto":
            return "exact" if rows <= self.exact_max_rows else "ivf"
        return self.method

    def resolved_lists(self, rows: int) -> int:
        if self.lists:
            return max(1, min(self.lists, rows))
        lists = 2 ** round(math.log2(max(2.0 * math.sqrt(rows), 1.0)))
        return int(max(1, min(lists, rows // self.train_rows_per_list, 65536)))

    def resolved_workers(self) -> int:
        return self.workers or default_workers()


@dataclass
class SearchReport:
    method: str
    rows: int
    dim: int
    lists: int = 0
    probes_per_row: float = 1.0  # mean number of clusters a row is compared with (own included)
    largest_list: int = 0
    multiply_adds: float = 0.0  # in the matrix products of the search
    seconds: dict[str, float] = field(default_factory=dict)


def load_unit_rows(source, cfg: SearchConfig) -> UnitRows:
    """All rows of `source`, in order, with float32 unit rows ready for the exact search."""
    return load_rows(source, cfg.block_rows, cfg.resolved_workers(), dense=True)


def exact_pairs(
    unit: UnitRows,
    threshold: float,
    cfg: SearchConfig,
    report: SearchReport,
    progress: Callable[[int], object] | None = None,
) -> Iterator[Candidates]:
    """Every pair (a < b) with cosine >= threshold, by tiles of the upper triangle."""
    x = unit.dense
    n, dim = x.shape

    def tile(start: int) -> Candidates:
        q = x[start : start + cfg.tile_rows]
        r, c = pairs_between(q, x[start:], threshold - SCORE_SLACK, cfg.tile_cols)
        keep = r < c
        return unit.candidates(r[keep] + start, c[keep] + start, threshold)

    t0 = time.perf_counter()
    starts = range(0, n, cfg.tile_rows)
    for start, found in zip(starts, in_parallel(tile, starts, cfg.resolved_workers())):
        yield found
        if progress is not None:
            progress(min(cfg.tile_rows, n - start))
    report.multiply_adds += n * (n + 1) / 2 * dim
    report.seconds["search"] = time.perf_counter() - t0


@dataclass
class RecallEstimate:
    """How many of the true pairs (exact search) touching a random sample of rows a search finds."""

    sample_rows: int
    true_pairs: int
    found_pairs: int

    @property
    def recall(self) -> float | None:
        return self.found_pairs / self.true_pairs if self.true_pairs else None

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Wilson score interval for the recall (95% by default)."""
        n = self.true_pairs
        if not n:
            return None
        p = self.found_pairs / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def sample_rows(rows: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(rows, size=min(count, rows), replace=False))


def sample_true_pairs(unit: UnitRows, threshold: float, sample: np.ndarray, cfg: SearchConfig) -> Candidates:
    """Exact search of the sampled rows against all rows: every pair >= threshold touching them.
    The work is split over blocks of the whole matrix, so every worker has a share."""
    n = len(unit)
    queries = unit.unit(unit.positions_of(sample))

    def block(start: int) -> Candidates:
        db = unit.unit(slice(start, start + cfg.block_rows))
        a_parts, b_parts = [], []
        for q in range(0, len(sample), cfg.tile_rows):
            r, c = pairs_between(queries[q : q + cfg.tile_rows], db, threshold - SCORE_SLACK, cfg.tile_cols)
            a_parts.append(sample[r + q])
            b_parts.append(unit.rows_at(c + start))
        a, b = np.concatenate(a_parts), np.concatenate(b_parts)
        keep = a != b
        return unit.candidates(a[keep], b[keep], threshold)

    parts = list(in_parallel(block, range(0, n, cfg.block_rows), cfg.resolved_workers()))
    found = Candidates(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("a", "b", "score")))
    # A pair between two sampled rows is found from both ends: keep it once.
    _, first = np.unique(found.a * n + found.b, return_index=True)
    return found.select(np.sort(first))
