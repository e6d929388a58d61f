"""Embedding matrices on disk: `.npy` files read in row blocks, and the folder `mine embed` writes.

The embed folder holds, per shard, one float16 `.npy` per tower plus the shard's image ids, and at
the top a manifest and the merged id list:

    manifest.json       towers (dimension, model, pooling), shards in row order, row and error counts
    ids.txt             one image id per line; line i is row i of every tower
    corrupt.tsv         images that could not be read: id <TAB> reason
    shards/000000/      <tower>.npy (float16, L2-normalised rows), ids.txt, corrupt.tsv, done.json
    run.json            what the run was started with (checked when it is resumed)

Readers never load a whole matrix through a memory map: sequential passes read blocks with plain
file reads (so the page cache, not the process, holds the file), and scattered rows (the few
candidate pairs) come through a memory map.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mof_llava.mining.errors import MiningError

MANIFEST = "manifest.json"
IDS = "ids.txt"
CORRUPT = "corrupt.tsv"
SHARDS = "shards"


class NpyRows:
    """Rows of one 2-D `.npy` file, read by block or by index without loading the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            mapped = np.load(self.path, mmap_mode="r")  # reads the header only; no page is touched
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: embedding file not found") from None
        except (ValueError, OSError) as err:
            raise MiningError(f"{self.path}: not a readable .npy file ({err})") from None
        shape, dtype = mapped.shape, mapped.dtype
        fortran_order = len(shape) == 2 and shape[0] > 1 and shape[1] > 1 and mapped.flags.f_contiguous
        if len(shape) != 2:
            raise MiningError(f"{self.path}: expected a 2-D array (rows x dimensions), found shape {shape}")
        if fortran_order:
            raise MiningError(
                f"{self.path}: Fortran-ordered arrays are not supported; save with np.save(np.ascontiguousarray(x))"
            )
        if dtype.kind != "f":
            raise MiningError(f"{self.path}: expected float16/32/64 embeddings, found dtype {dtype}")
        self.rows, self.dim = int(shape[0]), int(shape[1])
        self.dtype = dtype
        self._data_offset = int(mapped.offset)
        self._mmap = mapped

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1, read from the file (not mapped)."""
        stop = min(stop, self.rows)
        count = max(0, stop - start) * self.dim
        with open(self.path, "rb") as f:
            f.seek(self._data_offset + start * self.dim * self.dtype.itemsize)
            block = np.fromfile(f, dtype=self.dtype, count=count)
        if block.size != count:
            raise MiningError(f"{self.path}: file is truncated (rows {start}..{stop - 1} missing)")
        return block.reshape(-1, self.dim)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (any order), through a memory map."""
        return np.asarray(self._mmap[rows])


class ShardedRows:
    """Several `NpyRows` with the same dimension, seen as one matrix (rows concatenated in order)."""

    def __init__(self, parts: Sequence[NpyRows]):
        if not parts:
            raise MiningError("no embedding files given")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            listing = ", ".join(f"{p.path} ({p.dim})" for p in parts)
            raise MiningError(f"embedding files disagree on the dimension: {listing}")
        self.parts = list(parts)
        self.dim = parts[0].dim
        self.dtype = np.result_type(*[p.dtype for p in parts])
        self.starts = np.cumsum([0] + [p.rows for p in parts])
        self.rows = int(self.starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.rows)
        blocks = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for k in range(first, len(self.parts)):
            lo = max(start, int(self.starts[k]))
            hi = min(stop, int(self.starts[k + 1]))
            if lo >= stop:
                break
            if hi > lo:
                blocks.append(self.parts[k].read(lo - int(self.starts[k]), hi - int(self.starts[k])))
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return np.empty((0, self.dim), np.float32)
        return np.concatenate(blocks)

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for k in np.unique(part):
            mask = part == k
            block = self.parts[k].take(rows[mask] - self.starts[k])
            if out is None:
                out = np.empty((len(rows), self.dim), block.dtype)
            out[mask] = block
        return out if out is not None else np.empty((0, self.dim), np.float32)

    def blocks(self, size: int):
        """(start, block) for consecutive blocks of at most `size` rows."""
        for start in range(0, self.rows, size):
            yield start, self.read(start, start + size)


def read_ids(path: str | Path) -> list[str]:
    """One id per line (trailing newline optional); blank lines are an error, not skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ids file not found") from None
    ids = text.split("\n")
    if ids and ids[-1] == "":
        ids.pop()
    for line, value in enumerate(ids, start=1):
        if not value.strip():
            raise MiningError(f"{path}:{line}: empty image id")
    return ids


@dataclass(frozen=True)
class TowerInfo:
    name: str
    dim: int
    model: str
    pooling: str


class EmbeddingStore:
    """A finished `mine embed` output folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            hint = (
                " (the embed run has not finished: run it again to resume)"
                if (self.root / SHARDS).exists()
                else ""
            )
            raise FileNotFoundError(f"{manifest_path}: no embedding manifest{hint}")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.towers = {
            t["name"]: TowerInfo(t["name"], t["dim"], t["model"], t["pooling"])
            for t in self.manifest["towers"]
        }
        self.image_root = self.manifest.get("image_root")

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    def ids(self) -> list[str]:
        ids = read_ids(self.root / IDS)
        if len(ids) != self.rows:
            raise MiningError(f"{self.root / IDS}: {len(ids)} ids but the manifest lists {self.rows} rows")
        return ids

    def tower(self, name: str) -> ShardedRows:
        if name not in self.towers:
            raise MiningError(f"{self.root}: no tower named {name!r} (towers: {', '.join(self.towers)})")
        parts = [
            NpyRows(self.root / SHARDS / shard["name"] / f"{name}.npy")
            for shard in self.manifest["shards"]
            if shard["rows"]
        ]
        if not parts:
            raise MiningError(f"{self.root}: the collection holds no embedded images")
        rows = ShardedRows(parts)
        if rows.rows != self.rows:
            raise MiningError(
                f"{self.root}: tower {name!r} has {rows.rows} rows but the manifest lists {self.rows}"
            )
        return rows
