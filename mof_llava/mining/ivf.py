"""Clustered (IVF) search for every pair of unit rows with cosine >= t.

Rows are clustered with faiss k-means (spherical, trained on a sample). Each row is compared only
with the rows of the clusters it *probes*. Cluster by cluster, the members are compared with each
other and with the outside rows probing the cluster, one matrix product per tile. That batching
is what makes it fast: faiss' own IVF range search scans the inverted lists one query at a time,
which is memory-bound for a self-join of this size (and its HNSW range search aborts the process).

The probe rule. Let x, y be unit rows with x.y >= t, y in cluster c' (its most similar centroid)
and x in cluster c. With e = y - x, |e| <= rho = sqrt(2 - 2t), and

    x.mu_c' = y.mu_c' - e.mu_c' >= y.mu_c - e.mu_c' = x.mu_c + e.(mu_c - mu_c')
            >= x.mu_c - rho |mu_c - mu_c'|.

So a row x that probes every cluster c' with x.mu_c - x.mu_c' <= slack * rho * |mu_c - mu_c'|
meets every partner when slack = 1: that setting is exact, whatever the centroids. In high
dimensions e is nearly orthogonal to mu_c - mu_c', and a much smaller slack finds almost every
pair: rows deep inside a cluster probe only their own, rows near a border probe their neighbours.
A pair is found when either row probes the other's cluster (`IvfPlan.finds`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mof_llava.mining.kernel import (
    SCORE_SLACK,
    BadEmbeddingError,
    Candidates,
    UnitRows,
    in_parallel,
    load_rows,
    matmul,
    normalise_block,
    pairs_between,
)
from mof_llava.mining.search import SearchConfig, SearchReport


@dataclass
class IvfPlan:
    """Where every row sits and which clusters it probes.

    primary[row] is the row's cluster. The unit rows are stored sorted by cluster: the members of
    cluster c are positions offsets[c]..offsets[c+1]-1. The extra probes (clusters other than a
    row's own) are kept twice: as sorted keys row * lists + cluster (membership tests), and grouped
    by cluster as the positions of the outside rows probing it.
    """

    centroids: np.ndarray
    primary: np.ndarray
    offsets: np.ndarray
    probe_keys: np.ndarray
    outside_offsets: np.ndarray
    outside_positions: np.ndarray

    @property
    def lists(self) -> int:
        return len(self.centroids)

    def probes(self, rows: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        """Whether each row probes the matching cluster (its own cluster included)."""
        own = self.primary[rows] == clusters
        if not len(self.probe_keys):
            return own
        keys = rows.astype(np.int64) * self.lists + clusters
        at = np.minimum(np.searchsorted(self.probe_keys, keys), len(self.probe_keys) - 1)
        return own | (self.probe_keys[at] == keys)

    def finds(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether the search compares rows a[k] and b[k]."""
        return self.probes(a, self.primary[b]) | self.probes(b, self.primary[a])


def train_centroids(source, lists: int, cfg: SearchConfig) -> np.ndarray:
    """Spherical k-means centroids (faiss) from a random sample of lists x train_rows_per_list rows."""
    import faiss

    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(
        rng.choice(source.rows, size=min(source.rows, lists * cfg.train_rows_per_list), replace=False)
    )
    train = _read_rows(source, sample, cfg.block_rows)  # unit rows
    kmeans = faiss.Kmeans(
        source.dim,
        lists,
        niter=cfg.kmeans_iterations,
        spherical=True,
        seed=cfg.seed,
        max_points_per_centroid=cfg.train_rows_per_list + 1,  # train on the whole sample
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _read_rows(source, rows: np.ndarray, block_rows: int) -> np.ndarray:
    """The sorted `rows` of `source`, picked out of a sequential pass (file reads, not a memory map,
    so the file's pages are not charged to this process)."""
    out = np.empty((len(rows), source.dim), np.float32)
    for start in range(0, source.rows, block_rows):
        lo, hi = np.searchsorted(rows, [start, start + block_rows])
        if hi > lo:
            block = source.read(start, start + block_rows)
            try:
                out[lo:hi] = normalise_block(block[rows[lo:hi] - start], start)
            except BadEmbeddingError as err:
                raise BadEmbeddingError(int(rows[lo + err.row - start]), err.reason) from None
    return out


def probe_margins(centroids: np.ndarray, threshold: float, slack: float) -> np.ndarray:
    """margins[c, c'] = slack * rho * |mu_c - mu_c'|, plus room for float32 rounding."""
    c = centroids.astype(np.float64)
    sq = np.einsum("ij,ij->i", c, c)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * c @ c.T, 0.0))
    rho = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    return (slack * rho * dist + 1e-5).astype(np.float32)


def choose_probes(scores: np.ndarray, margins: np.ndarray, cap: int):
    """(own cluster per row, rows, clusters) of the extra clusters each row probes: among the row's
    `cap` most similar clusters after its own (all clusters when cap is 0), those with
    best - score[c] <= margins[own, c]."""
    import torch

    s = torch.from_numpy(scores)
    k = s.shape[1] if cap <= 0 else min(cap + 1, s.shape[1])
    values, clusters = torch.topk(s, k=k, dim=1)  # most similar first: column 0 is the own cluster
    own = clusters[:, 0]
    keep = values[:, :1] - values <= torch.from_numpy(margins)[own[:, None], clusters]
    keep[:, 0] = False
    rows, slot = torch.nonzero(keep, as_tuple=True)
    return own.numpy(), rows.numpy(), clusters[rows, slot].numpy()


def plan_ivf(source, threshold: float, cfg: SearchConfig, report: SearchReport) -> tuple[IvfPlan, UnitRows]:
    """Cluster the rows, choose each row's probes, and load the unit rows sorted by cluster."""
    workers = cfg.resolved_workers()
    t0 = time.perf_counter()
    lists = cfg.resolved_lists(source.rows)
    centroids = train_centroids(source, lists, cfg)
    margins = probe_margins(centroids, threshold, cfg.probe_slack)
    report.seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = source.rows

    def assign(start: int):
        x = normalise_block(source.read(start, start + cfg.block_rows), start)
        own, r, c = choose_probes(matmul(x, centroids), margins, cfg.max_probes)
        return own, r + start, c

    parts = list(in_parallel(assign, range(0, n, cfg.block_rows), workers))
    primary = np.concatenate([p[0] for p in parts]).astype(np.int64)
    extra_rows = np.concatenate([p[1] for p in parts]).astype(np.int64)
    extra_clusters = np.concatenate([p[2] for p in parts]).astype(np.int64)
    del parts
    report.seconds["assign"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = np.argsort(primary, kind="stable")
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    sizes = np.bincount(primary, minlength=lists)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    by_cluster = np.lexsort((position[extra_rows], extra_clusters))
    outside_positions = position[extra_rows[by_cluster]]
    outside = np.bincount(extra_clusters, minlength=lists)
    outside_offsets = np.concatenate([[0], np.cumsum(outside)])
    plan = IvfPlan(
        centroids,
        primary,
        offsets,
        np.sort(extra_rows * lists + extra_clusters),
        outside_offsets,
        outside_positions,
    )
    del extra_rows, extra_clusters, by_cluster

    unit = load_rows(source, cfg.block_rows, workers, position, order)
    report.seconds["load"] = time.perf_counter() - t0

    report.lists = lists
    report.probes_per_row = 1.0 + len(outside_positions) / n
    report.largest_list = int(sizes.max(initial=0))
    own_block = sum(_triangle_tiles(int(size), cfg.tile_rows) for size in sizes)
    report.multiply_adds += (float(n) * lists + own_block + float((outside * sizes).sum())) * source.dim
    return plan, unit


def _triangle_tiles(size: int, tile: int) -> float:
    """Row pairs the members-against-members products of one cluster compute (tile by tile)."""
    return float(sum(min(tile, size - start) * (size - start) for start in range(0, size, tile)))


def ivf_pairs(
    plan: IvfPlan,
    unit: UnitRows,
    threshold: float,
    cfg: SearchConfig,
    report: SearchReport,
    progress: Callable[[int], object] | None = None,
) -> Iterator[Candidates]:
    """Every pair the plan compares with cosine >= threshold, each pair once."""
    cut = threshold - SCORE_SLACK

    def cluster(c: int) -> list[Candidates]:
        lo, hi = int(plan.offsets[c]), int(plan.offsets[c + 1])
        if hi == lo:
            return []
        members = unit.unit(slice(lo, hi))
        found = []
        # Members against members: the upper triangle of the cluster's own block.
        for start in range(0, hi - lo, cfg.tile_rows):
            r, col = pairs_between(
                members[start : start + cfg.tile_rows], members[start:], cut, cfg.tile_cols
            )
            keep = r < col
            p, q = lo + start + r[keep], lo + start + col[keep]
            found.append(unit.candidates(unit.rows_at(p), unit.rows_at(q), threshold))
        # Outside rows probing this cluster against its members.
        outside = plan.outside_positions[plan.outside_offsets[c] : plan.outside_offsets[c + 1]]
        for start in range(0, len(outside), cfg.tile_rows):
            p = outside[start : start + cfg.tile_rows]
            r, col = pairs_between(unit.unit(p), members, cut, cfg.tile_cols)
            row_p, row_q = unit.rows_at(p[r]), unit.rows_at(lo + col)
            # q also meets p from the other side when q probes p's cluster: keep the meeting in the
            # lower-numbered cluster, so every pair is reported once.
            cluster_p = plan.primary[row_p]
            keep = ~plan.probes(row_q, cluster_p) | (c < cluster_p)
            found.append(unit.candidates(row_p[keep], row_q[keep], threshold))
        return found

    t0 = time.perf_counter()
    for found in in_parallel(cluster, range(plan.lists), cfg.resolved_workers()):
        yield from found
        if progress is not None:
            progress(1)
    report.seconds["search"] = time.perf_counter() - t0
