"""CLIP-blind pairs: CLIP cosine >= clip_min while DINOv2 cosine <= dino_max (the MMVP recipe).

The CLIP test is the selective one (a few pairs in a million reach 0.95), so the search runs on the
CLIP rows (`search`), and the DINOv2 cosine is computed only for the pairs it returns. Each chunk of
candidates is judged as it arrives, so memory holds the output, never all candidates:

- the same image id at two rows ("an image paired with itself") is left out and counted;
- exact duplicates (both cosines within `duplicate_tol` of 1) are left out and counted;
- pairs whose DINOv2 cosine is above dino_max are counted;
- the rest are kept, sorted by the gap clip_cos - dino_cos (largest first), ties by row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mof_llava.atomic import atomic_path
from mof_llava.mining.errors import MiningError
from mof_llava.mining.ivf import ivf_pairs, plan_ivf
from mof_llava.mining.kernel import BadEmbeddingError, Candidates, checked_norms
from mof_llava.mining.search import (
    PAIRS,
    RecallEstimate,
    SearchConfig,
    SearchReport,
    exact_pairs,
    load_unit_rows,
    sample_rows,
    sample_true_pairs,
)
from mof_llava.options import option

CSV_COLUMNS = ["image_a", "image_b", "clip_cos", "dino_cos"]


@dataclass(frozen=True)
class PairCriteria:
    clip_min: float = option(0.95, "keep pairs with CLIP cosine >= this (default %(default)s)", actions=PAIRS)
    dino_max: float = option(
        0.6, "keep pairs with DINOv2 cosine <= this (default %(default)s)", actions=PAIRS
    )
    duplicate_tol: float = option(
        1e-3,
        "pairs with both cosines >= 1 - this are exact duplicates: left out and counted (default %(default)s)",
        actions=PAIRS,
    )
    # Towers other than MMVP's put their cosines on other scales; a quantile of the collection's own
    # random pairs carries the recipe's meaning ("nearer than almost any two images") to them.
    clip_min_quantile: float | None = option(
        None,
        "set --clip-min to this quantile (0-1) of the CLIP cosines of random pairs of the collection "
        "(e.g. 0.99: the top 1%%); replaces --clip-min",
        actions=PAIRS,
    )
    dino_max_quantile: float | None = option(
        None,
        "set --dino-max to this quantile (0-1) of the DINOv2 cosines of random pairs; replaces --dino-max",
        actions=PAIRS,
    )
    quantile_pairs: int = option(
        100_000,
        "random pairs the quantiles are read from; every pair when the collection has no more "
        "(default %(default)s; drawn with --seed)",
        actions=PAIRS,
    )

    def __post_init__(self):
        for name in ("clip_min", "dino_max"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise MiningError(f"{name} must be a cosine between -1 and 1, got {value}")
        if not 0.0 <= self.duplicate_tol < 1.0:
            raise MiningError(f"duplicate_tol must be in [0, 1), got {self.duplicate_tol}")
        for name in ("clip_min_quantile", "dino_max_quantile"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise MiningError(f"{name} must be a quantile between 0 and 1, got {value}")
        if self.quantile_pairs < 1:
            raise MiningError(f"quantile_pairs must be >= 1, got {self.quantile_pairs}")

    @property
    def uses_quantiles(self) -> bool:
        return self.clip_min_quantile is not None or self.dino_max_quantile is not None


@dataclass
class PairTable:
    """Kept pairs, sorted: rows a < b, their cosines."""

    a: np.ndarray
    b: np.ndarray
    clip: np.ndarray
    dino: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


@dataclass
class MiningStats:
    rows: int
    clip_pairs: int = 0  # pairs with CLIP cos >= clip_min (the search's output)
    same_id_pairs: int = 0  # left out: one image id at two rows
    duplicate_pairs: int = 0  # left out: both cosines ~ 1
    dino_rejected: int = 0  # left out: DINOv2 cos > dino_max
    kept: int = 0
    search: SearchReport | None = None
    recall_clip: RecallEstimate | None = None  # over all pairs with CLIP cos >= clip_min
    recall_blind: RecallEstimate | None = None  # over the pairs that would be kept
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("recall_clip", "recall_blind"):
            estimate = getattr(self, key)
            if estimate is not None:
                out[key]["recall"] = estimate.recall
                out[key]["interval95"] = estimate.interval()
        return out


class DinoRows:
    """The contrast tower's rows, validated once; cosines of any row pairs on demand."""

    def __init__(self, source, block_rows: int = 8192):
        self.source = source
        self.inverse = np.empty(source.rows, np.float64)
        for start in range(0, source.rows, block_rows):
            block = source.read(start, start + block_rows)
            try:
                self.inverse[start : start + len(block)] = 1.0 / checked_norms(block, start)
            except BadEmbeddingError as err:
                raise BadEmbeddingError(err.row, err.reason, "dino") from None

    def cosine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(len(a), np.float64)
        for s in range(0, len(a), 65536):
            xa = self.source.take(a[s : s + 65536]).astype(np.float64)
            xb = self.source.take(b[s : s + 65536]).astype(np.float64)
            out[s : s + 65536] = np.einsum("ij,ij->i", xa, xb)
        return out * self.inverse[a] * self.inverse[b]


def quantile_pairs(rows: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs a < b to read quantiles from: every pair when there are at most `count`, else
    `count` pairs of distinct rows drawn uniformly (with replacement) from seed."""
    if rows * (rows - 1) // 2 <= count:
        return np.triu_indices(rows, 1)
    rng = np.random.default_rng([seed, 2])
    a = rng.integers(rows, size=count)
    b = rng.integers(rows - 1, size=count)
    b = b + (b >= a)  # any other row, uniformly
    return np.minimum(a, b), np.maximum(a, b)


def resolve_quantiles(
    clip_source, dino_source, criteria: PairCriteria, seed: int
) -> tuple[PairCriteria, dict]:
    """The criteria with each quantile threshold replaced by its cosine (no quantile left), and what was read
    (`{"pairs": n, "every_pair": bool, "clip_min": {...}, "dino_max": {...}}`) for the summary."""
    rows = clip_source.rows
    a, b = quantile_pairs(rows, criteria.quantile_pairs, seed)
    info: dict = {"pairs": int(len(a)), "every_pair": bool(len(a) == rows * (rows - 1) // 2)}
    changes = {}
    for field_name, source, q, tower in (
        ("clip_min", clip_source, criteria.clip_min_quantile, "clip"),
        ("dino_max", dino_source, criteria.dino_max_quantile, "dino"),
    ):
        if q is None:
            continue
        try:
            cosines = DinoRows(source).cosine(a, b)
        except BadEmbeddingError as err:
            raise BadEmbeddingError(err.row, err.reason, tower) from None
        value = float(np.clip(np.quantile(cosines, q), -1.0, 1.0))
        changes[field_name] = value
        info[field_name] = {"quantile": q, "cosine": value}
    return replace(criteria, **changes, clip_min_quantile=None, dino_max_quantile=None), info


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """key[row] = first row holding the same id, so equal keys mean the same image."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(value, row) for row, value in enumerate(ids)), np.int64, len(ids))


class _Judge:
    """Sorts candidate chunks into kept pairs and counted exclusions."""

    def __init__(self, dino: DinoRows, keys: np.ndarray, criteria: PairCriteria, stats: MiningStats):
        self.dino, self.keys, self.criteria, self.stats = dino, keys, criteria, stats
        self.kept: list[tuple[np.ndarray, ...]] = []

    def classify(self, chunk: Candidates):
        """(DINOv2 cosine, same-id mask, duplicate mask, keep mask) for a chunk of CLIP pairs."""
        same = self.keys[chunk.a] == self.keys[chunk.b]
        dino = np.full(len(chunk), np.nan)
        dino[~same] = self.dino.cosine(chunk.a[~same], chunk.b[~same])
        near_one = 1.0 - self.criteria.duplicate_tol
        duplicate = ~same & (chunk.score >= near_one) & (dino >= near_one)
        keep = ~same & ~duplicate & (dino <= self.criteria.dino_max)
        return dino, same, duplicate, keep

    def add(self, chunk: Candidates) -> None:
        if not len(chunk):
            return
        dino, same, duplicate, keep = self.classify(chunk)
        close = ~same & ~duplicate & ~keep
        s = self.stats
        s.clip_pairs += len(chunk)
        s.same_id_pairs += int(same.sum())
        s.duplicate_pairs += int(duplicate.sum())
        s.dino_rejected += int(close.sum())
        if keep.any():
            self.kept.append((chunk.a[keep], chunk.b[keep], chunk.score[keep], dino[keep]))

    def table(self) -> PairTable:
        if not self.kept:
            empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
            return PairTable(empty_i, empty_i, empty_f, empty_f)
        a, b, clip, dino = (np.concatenate(parts) for parts in zip(*self.kept))
        order = np.lexsort((b, a, -(clip - dino)))
        self.stats.kept = len(order)
        return PairTable(a[order], b[order], clip[order], dino[order])


def find_blind_pairs(
    clip_source,
    dino_source,
    ids: Sequence[str],
    criteria: PairCriteria | None = None,
    cfg: SearchConfig | None = None,
    show_progress: bool = True,
) -> tuple[PairTable, MiningStats]:
    """Search the CLIP rows, judge every candidate on DINOv2, and return the kept pairs.

    Sources are objects with `rows`, `dim`, `read(start, stop)` and `take(rows)` (see store.py).
    With IVF, `cfg.recall_sample` > 0 measures recall against exact search on that many random rows.
    """
    criteria = criteria or PairCriteria()
    cfg = cfg or SearchConfig()
    if criteria.uses_quantiles:  # never searched with clip_min/dino_max while quantiles were asked for
        raise MiningError("criteria with quantile thresholds: resolve them first (resolve_quantiles)")
    if clip_source.rows != dino_source.rows or clip_source.rows != len(ids):
        raise MiningError(
            f"row counts differ: CLIP {clip_source.rows}, DINOv2 {dino_source.rows}, ids {len(ids)}"
        )
    rows = clip_source.rows
    if rows < 2:
        raise MiningError(f"need at least 2 images to form pairs, got {rows}")
    stats = MiningStats(rows=rows)
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    dino = DinoRows(dino_source, cfg.block_rows)
    judge = _Judge(dino, id_keys(ids), criteria, stats)
    stats.seconds["check_dino"] = time.perf_counter() - t0

    try:
        _search(clip_source, judge, criteria, cfg, stats, show_progress)
    except BadEmbeddingError as err:
        raise BadEmbeddingError(err.row, err.reason, "clip") from None
    t0 = time.perf_counter()
    table = judge.table()
    stats.seconds["sort_pairs"] = time.perf_counter() - t0
    stats.seconds["total"] = time.perf_counter() - t_start
    return table, stats


def _search(
    clip_source,
    judge: _Judge,
    criteria: PairCriteria,
    cfg: SearchConfig,
    stats: MiningStats,
    show_progress: bool,
) -> None:
    """Run the CLIP search, feeding every candidate chunk to `judge`; fill stats.search and recall."""
    rows = clip_source.rows
    method = cfg.resolved_method(rows)
    report = SearchReport(method=method, rows=rows, dim=clip_source.dim)
    stats.search = report
    threshold = criteria.clip_min
    if method == "exact":
        t0 = time.perf_counter()
        unit = load_unit_rows(clip_source, cfg)
        report.seconds["load"] = time.perf_counter() - t0
        with _progress_bar(rows, "rows", show_progress) as bar:
            for chunk in exact_pairs(unit, threshold, cfg, report, progress=bar.update):
                judge.add(chunk)
        return
    plan, unit = plan_ivf(clip_source, threshold, cfg, report)
    with _progress_bar(plan.lists, "clusters", show_progress) as bar:
        for chunk in ivf_pairs(plan, unit, threshold, cfg, report, progress=bar.update):
            judge.add(chunk)
    recall_sample = cfg.recall_sample
    if recall_sample > 0:
        t0 = time.perf_counter()
        truth = sample_true_pairs(unit, threshold, sample_rows(rows, recall_sample, cfg.seed), cfg)
        found = plan.finds(truth.a, truth.b)
        _, same, duplicate, blind = judge.classify(truth)
        sampled = min(recall_sample, rows)
        stats.recall_clip = RecallEstimate(sampled, len(truth), int(found.sum()))
        stats.recall_blind = RecallEstimate(sampled, int(blind.sum()), int((found & blind).sum()))
        stats.seconds["recall"] = time.perf_counter() - t0


def _progress_bar(total: int, unit: str, enabled: bool):
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent in logs and tests.
    return tqdm(total=total, desc="pairs", unit=f" {unit}", disable=None if enabled else True, leave=False)


def write_pairs_csv(path: str | Path, table: PairTable, ids: Sequence[str]) -> None:
    """The CSV `image_a, image_b, clip_cos, dino_cos`, written atomically."""
    import pandas as pd

    path = Path(path)
    names = np.asarray(ids, dtype=object)
    frame = pd.DataFrame(
        {
            "image_a": names[table.a],
            "image_b": names[table.b],
            "clip_cos": table.clip,
            "dino_cos": table.dino,
        },
        columns=CSV_COLUMNS,
    )
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")


def read_pairs_csv(path: str | Path):
    """The pairs CSV as a DataFrame (ids kept as text), checking the header."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"image_a": str, "image_b": str}, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: pairs file not found") from None
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise MiningError(
            f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(CSV_COLUMNS)})"
        )
    for column in ("clip_cos", "dino_cos"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise MiningError(f"{path}:{line}: {column} is not a number ({frame[column].iloc[line - 2]!r})")
        frame[column] = values
    for line, (a, b) in enumerate(zip(frame["image_a"], frame["image_b"]), start=2):
        if not a or not b:
            raise MiningError(f"{path}:{line}: empty image id")
    return frame


def summary_path(csv_path: str | Path) -> Path:
    """Where `mine pairs` writes its summary: next to the CSV, `<name>.summary.json`."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + ".summary.json")


def format_recall(estimate: RecallEstimate | None) -> str:
    if estimate is None:
        return "not measured"
    if not estimate.true_pairs:
        return f"no true pairs among {estimate.sample_rows} sampled rows (not measurable)"
    low, high = estimate.interval()
    return (
        f"{estimate.recall:.4f} ({estimate.found_pairs}/{estimate.true_pairs} pairs touching "
        f"{estimate.sample_rows} sampled rows; 95% interval {low:.3f}-{high:.3f})"
    )
