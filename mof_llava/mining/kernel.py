"""The building blocks both searches share: unit rows, the thresholded matrix product, and a pool
of worker threads.

Why threads with one BLAS thread each: the IVF search multiplies many small blocks (a cluster of a
few hundred rows). A multi-threaded BLAS splits each small product across cores and then waits at a
barrier, which on a busy or small machine costs more than the product itself (measured: 200 x 200 x
1024 fell from 90 to 6 GFLOP/s with two OpenBLAS threads on a loaded 2-core machine). One
single-threaded product per worker keeps every core busy on its own block. torch's CPU matmul
(MKL/oneDNN) is used for the products because its thread count can be set per worker thread; the
rest is numpy.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

# Candidates come from float32 products at threshold - SCORE_SLACK and are then re-scored in
# float64; a float32 dot product of unit vectors in a few thousand dimensions is off by far less.
SCORE_SLACK = 1e-4

T = TypeVar("T")
R = TypeVar("R")


class BadEmbeddingError(ValueError):
    """A row that cannot be normalised (zero or not finite). `row` is its index in the matrix;
    `tower` ("clip" or "dino") is filled in by the caller that knows which matrix it was."""

    def __init__(self, row: int, reason: str, tower: str | None = None):
        self.row = row
        self.reason = reason
        self.tower = tower
        super().__init__(f"row {row}: {reason}")


@dataclass
class Candidates:
    """Pairs of original row indices (a < b) with their cosine similarity (float64)."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    def select(self, mask: np.ndarray) -> Candidates:
        return Candidates(self.a[mask], self.b[mask], self.score[mask])


def checked_norms(x: np.ndarray, first_row: int = 0) -> np.ndarray:
    """float64 Euclidean norms of the rows of `x`; a zero or non-finite row raises
    `BadEmbeddingError` with its index (first_row + position in the block)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        reason = (
            "embedding holds NaN or infinity" if not np.isfinite(x[row]).all() else "embedding is all zeros"
        )
        raise BadEmbeddingError(first_row + row, reason)
    return norms


def normalise_block(block: np.ndarray, first_row: int = 0) -> np.ndarray:
    """float32 unit rows of `block` (a copy); bad rows raise `BadEmbeddingError`."""
    x = np.array(block, dtype=np.float32)
    x *= (1.0 / checked_norms(block, first_row)).astype(np.float32)[:, None]
    return x


class UnitRows:
    """The rows a search runs on, kept as read (float16 stays float16: half the memory of float32)
    with their inverse norms; `unit(index)` gives float32 unit rows for one block at a time.

    The cosine a pair is reported with is defined once (`rescore`): the float64 dot product of the
    stored rows times both inverse norms, so every method reports the same value for a pair.
    When the rows are stored in another order than the original rows, stored[position[row]] is
    original row `row` and order[p] the row at position p. `dense` optionally holds all unit rows
    in float32 already (the exact search, which reuses every block many times)."""

    def __init__(
        self,
        stored: np.ndarray,
        inverse: np.ndarray,
        position: np.ndarray | None = None,
        order: np.ndarray | None = None,
        dense: np.ndarray | None = None,
    ):
        self.stored = stored
        self.inverse = inverse
        self.position = position
        self.order = order
        self.dense = dense

    def __len__(self) -> int:
        return len(self.stored)

    def unit(self, index) -> np.ndarray:
        """float32 unit rows at `index` (stored positions: a slice or an index array)."""
        if self.dense is not None:
            return self.dense[index]
        x = self.stored[index].astype(np.float32)
        x *= self.inverse[index].astype(np.float32)[:, None]
        return x

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.order is None else self.order[positions]

    def positions_of(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.position is None else self.position[rows]

    def rescore(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """float64 cosine of original rows a[k], b[k]."""
        pa, pb = self.positions_of(a), self.positions_of(b)
        out = np.empty(len(a), np.float64)
        for s in range(0, len(a), 65536):
            xa = self.stored[pa[s : s + 65536]].astype(np.float64)
            xb = self.stored[pb[s : s + 65536]].astype(np.float64)
            out[s : s + 65536] = np.einsum("ij,ij->i", xa, xb)
        return out * self.inverse[pa] * self.inverse[pb]

    def candidates(self, a: np.ndarray, b: np.ndarray, threshold: float) -> Candidates:
        """Pairs of original rows (put in order a < b), re-scored, kept when >= threshold."""
        a, b = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        score = self.rescore(a, b)
        keep = score >= threshold
        return Candidates(a[keep], b[keep], score[keep])


def storage_dtype(source) -> np.dtype:
    """float16 rows stay float16; anything else is kept as float32."""
    dtype = getattr(source, "dtype", None)
    if dtype is None:
        dtype = np.asarray(source.read(0, 1)).dtype
    return np.dtype(np.float16) if np.dtype(dtype) == np.float16 else np.dtype(np.float32)


def load_rows(
    source,
    block_rows: int,
    workers: int,
    position: np.ndarray | None = None,
    order: np.ndarray | None = None,
    dense: bool = False,
) -> UnitRows:
    """All rows of `source` (rows, dim, read(start, stop)), checked, with inverse norms; stored
    at `position[row]` when a position is given. `dense` also keeps float32 unit rows."""
    n = source.rows
    stored = np.empty((n, source.dim), storage_dtype(source))
    inverse = np.empty(n, np.float64)
    unit = np.empty((n, source.dim), np.float32) if dense else None

    def load(start: int) -> None:
        block = source.read(start, start + block_rows)
        stop = start + len(block)
        at = slice(start, stop) if position is None else position[start:stop]
        inverse[at] = 1.0 / checked_norms(block, start)
        stored[at] = block
        if unit is not None:
            unit[at] = block.astype(np.float32) * inverse[at].astype(np.float32)[:, None]

    for _ in in_parallel(load, range(0, n, block_rows), workers):
        pass
    return UnitRows(stored, inverse, position, order, unit)


def pairs_between(
    q: np.ndarray, db: np.ndarray, threshold: float, tile_cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row in q, row in db) of every entry of q @ db.T that is >= threshold, db in column tiles."""
    import torch

    tq = torch.from_numpy(q)
    rows, cols = [], []
    for start in range(0, len(db), tile_cols):
        scores = tq @ torch.from_numpy(db[start : start + tile_cols]).T
        hit_rows = torch.nonzero(scores.amax(dim=1) >= threshold).flatten()  # cheap screen first
        if hit_rows.numel():
            r, c = torch.nonzero(scores[hit_rows] >= threshold, as_tuple=True)
            rows.append(hit_rows[r].numpy())
            cols.append(c.numpy() + start)
    if not rows:
        empty = np.empty(0, np.int64)
        return empty, empty
    return np.concatenate(rows), np.concatenate(cols)


def matmul(a: np.ndarray, b_t: np.ndarray) -> np.ndarray:
    """a @ b_t.T in the calling thread (single-threaded inside a worker)."""
    import torch

    return (torch.from_numpy(a) @ torch.from_numpy(b_t).T).numpy()


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def in_parallel(work: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """work(item) for every item on `workers` threads, results in item order, a bounded number
    in flight (so a slow consumer never piles up results). Each worker's torch uses one thread."""
    import torch

    main_threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(
            max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            pending: deque = deque()
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(main_threads)  # the setting is partly process-wide (MKL)
