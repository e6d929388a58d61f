"""The four mining verbs, one typed job each; `mof-llava mine` and Python callers use the same calls.

    from mof_llava.mining import api as mine
    mine.embed(mine.EmbedJob("images/", "emb/", EmbedConfig(towers=[EmbeddingTowerSpec("clip", ...), ...])))
    mine.pairs(mine.PairsJob("pairs.csv", embeddings="emb/"))
    mine.sheet(mine.SheetJob("pairs.csv", "sheet.png"))
    mine.export(mine.ExportJob("pairs.csv", "bench/"))

Each returns its result object; `describe()` is the line the command prints. The jobs' option
fields (and those of EmbedConfig, PairCriteria, SearchConfig) are the steps' flags: `mof-llava mine`
generates them with `commands/dataclass_args.py`, help and defaults from here.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path

from mof_llava.atomic import write_json_atomic
from mof_llava.mining.embed import EmbedConfig, EmbedResult, embed_collection
from mof_llava.mining.errors import MiningError
from mof_llava.mining.export import QUALITY_MAX, QUALITY_MIN, ExportResult, export_mmvp
from mof_llava.mining.pairs import MiningStats, PairCriteria, format_recall, summary_path
from mof_llava.mining.search import PAIRS, SearchConfig
from mof_llava.mining.sheet import SheetResult, draw_contact_sheet, image_root_for
from mof_llava.options import option

DEFAULT_TOWERS = ("clip=openai/clip-vit-large-patch14", "dinov2=facebook/dinov2-large")
SHEET, EXPORT = frozenset({"sheet"}), frozenset({"export-mmvp"})  # the `mine` steps of these flags


class PairsInputError(MiningError):
    """The inputs of `pairs` do not go together, or a row of them is unusable: the command exits
    with this message (as it always has) rather than the one-line `mof-llava: error:` form."""


@dataclass(frozen=True)
class EmbedJob:
    images: str | Path  # a folder (searched recursively) or a text file of image paths
    output: str | Path  # an unfinished run there is resumed
    config: EmbedConfig = field(default_factory=EmbedConfig)


@dataclass(frozen=True)
class PairsJob:
    output: str | Path  # the CSV; <name>.summary.json is written beside it
    embeddings: str | Path | None = None  # a `mine embed` folder, or the three .npy/ids inputs
    clip_npy: str | Path | None = option(
        None, ".npy matrix, row i = image i, searched with --clip-min", actions=PAIRS
    )
    dino_npy: str | Path | None = option(
        None, ".npy matrix, row i = image i, tested with --dino-max", actions=PAIRS
    )
    ids: str | Path | None = option(
        None, "text file, line i = id (path) of image i (with --clip-npy/--dino-npy)", actions=PAIRS
    )
    image_root: str | Path | None = option(
        None, "folder relative image ids resolve against (recorded for sheet/export)", actions=PAIRS
    )
    clip_tower: str = option(
        "clip", "embed-folder tower searched with --clip-min (default %(default)s)", actions=PAIRS
    )
    dino_tower: str = option(
        "dinov2", "embed-folder tower tested with --dino-max (default %(default)s)", actions=PAIRS
    )
    criteria: PairCriteria = field(default_factory=PairCriteria)
    search: SearchConfig = field(default_factory=SearchConfig)


ROOT_HELP = "folder relative ids resolve against (default: from the pairs summary)"


@dataclass(frozen=True)
class SheetJob:
    pairs: str | Path
    output: str | Path
    top: int = option(50, "pairs to show, from the top of the CSV (default %(default)s)", actions=SHEET)
    image_root: str | Path | None = option(None, ROOT_HELP, actions=SHEET)  # default: the pairs summary's
    columns: int = option(2, "pairs per row of the sheet (default %(default)s)", actions=SHEET)
    thumb: int = option(224, "thumbnail size in pixels (default %(default)s)", actions=SHEET)


@dataclass(frozen=True)
class ExportJob:
    pairs: str | Path
    output: str | Path
    top: int = option(
        150, "pairs to export, from the top of the CSV (default %(default)s, as MMVP)", actions=EXPORT
    )
    image_root: str | Path | None = option(None, ROOT_HELP, actions=EXPORT)  # default: the pairs summary's
    quality: int = option(
        95,
        f"JPEG quality of the exported images, {QUALITY_MIN} to {QUALITY_MAX} (default %(default)s)",
        actions=EXPORT,
    )


@dataclass
class PairsResult:
    output: Path
    stats: MiningStats
    summary: dict  # what <name>.summary.json holds

    def describe(self) -> str:
        stats, s = self.stats, self.stats.search
        peak = self.summary["peak_rss_bytes"]
        lines = [
            f"{stats.kept} CLIP-blind pairs written to {self.output}",
            f"  images {stats.rows}; pairs with CLIP cos >= threshold {stats.clip_pairs}: "
            f"{stats.dino_rejected} too similar for DINOv2, {stats.duplicate_pairs} exact duplicates, "
            f"{stats.same_id_pairs} same image id (all left out)",
            f"  search {s.method}"
            + (f", {s.lists} clusters, {s.probes_per_row:.2f} probed per image" if s.method == "ivf" else "")
            + f"; {stats.seconds['total']:.1f} s; peak memory {peak / 2**30:.2f} GiB",
        ]
        thresholds = self.summary.get("quantile_thresholds")
        if thresholds:
            criteria = self.summary["criteria"]
            read = "every pair" if thresholds["every_pair"] else f"{thresholds['pairs']} random pairs"
            lines.append(
                f"  thresholds from {read}: CLIP cos >= {criteria['clip_min']:.4f}, "
                f"DINOv2 cos <= {criteria['dino_max']:.4f}"
                + "".join(
                    f"; {k} at quantile {v['quantile']}" for k, v in thresholds.items() if isinstance(v, dict)
                )
            )
        if s.method == "ivf":
            lines.append(f"  recall vs exact search, CLIP pairs: {format_recall(stats.recall_clip)}")
            lines.append(f"  recall vs exact search, kept pairs: {format_recall(stats.recall_blind)}")
        return "\n".join(lines)


def embed(job: EmbedJob) -> EmbedResult | None:
    """Embed this rank's unfinished shards; None while other ranks' shards are unfinished."""
    return embed_collection(job.images, job.output, job.config)


def pairs(job: PairsJob) -> PairsResult:
    """Search, write the pairs CSV and its summary beside it."""
    from mof_llava.mining.kernel import BadEmbeddingError
    from mof_llava.mining.pairs import find_blind_pairs, resolve_quantiles, write_pairs_csv

    clip, dino, ids, image_root, inputs, files = _pairs_inputs(job)
    criteria, thresholds = job.criteria, None
    try:
        if criteria.uses_quantiles:
            criteria, thresholds = resolve_quantiles(clip, dino, criteria, job.search.seed)
        table, stats = find_blind_pairs(clip, dino, ids, criteria, job.search)
    except BadEmbeddingError as err:
        name = ids[err.row] if 0 <= err.row < len(ids) else "?"
        raise PairsInputError(
            f"{files[err.tower or 'clip']}: row {err.row} (image {name}): {err.reason}"
        ) from None
    write_pairs_csv(job.output, table, ids)
    cfg = job.search
    summary = {
        "inputs": inputs,
        "image_root": image_root,
        # the cosines searched with (quantiles resolved); how quantiles set them, if they did
        "criteria": {k: getattr(criteria, k) for k in ("clip_min", "dino_max", "duplicate_tol")},
        "quantile_thresholds": thresholds,
        # method and lists as searched (auto and 0 resolved); as given under "requested"
        "search": {
            "method": stats.search.method,
            "lists": stats.search.lists,
            "requested": {"method": cfg.method, "lists": cfg.lists},
            "exact_max_rows": cfg.exact_max_rows,
            "probe_slack": cfg.probe_slack,
            "max_probes": cfg.max_probes,
            "recall_sample": cfg.recall_sample,
            "seed": cfg.seed,
        },
        "stats": stats.to_json(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }
    write_json_atomic(summary_path(job.output), summary, indent=2)
    return PairsResult(Path(job.output), stats, summary)


def _pairs_inputs(job: PairsJob):
    """(clip rows, dino rows, ids, image root, inputs for the summary, file names for errors)."""
    from mof_llava.mining.store import EmbeddingStore, NpyRows, ShardedRows, read_ids

    npy = (job.clip_npy, job.dino_npy, job.ids)
    if job.embeddings and any(npy):
        raise PairsInputError("give either an embed folder or --clip-npy/--dino-npy/--ids, not both")
    if job.embeddings:
        store = EmbeddingStore(job.embeddings)
        clip, dino = store.tower(job.clip_tower), store.tower(job.dino_tower)
        root = str(Path(job.image_root).resolve()) if job.image_root else store.image_root
        inputs = {
            "embeddings": str(Path(job.embeddings).resolve()),
            "clip_tower": job.clip_tower,
            "dino_tower": job.dino_tower,
        }
        files = {
            "clip": f"{job.embeddings} tower {job.clip_tower}",
            "dino": f"{job.embeddings} tower {job.dino_tower}",
        }
        return clip, dino, store.ids(), root, inputs, files
    if not all(npy):
        raise PairsInputError("give an embed folder, or all three of --clip-npy, --dino-npy and --ids")
    clip, dino = ShardedRows([NpyRows(job.clip_npy)]), ShardedRows([NpyRows(job.dino_npy)])
    root = str(Path(job.image_root or Path(job.ids).parent).resolve())
    inputs = {name: str(Path(value).resolve()) for name, value in zip(("clip_npy", "dino_npy", "ids"), npy)}
    files = {"clip": str(job.clip_npy), "dino": str(job.dino_npy)}
    return clip, dino, read_ids(job.ids), root, inputs, files


def sheet(job: SheetJob) -> SheetResult:
    root = image_root_for(job.pairs, job.image_root)
    return draw_contact_sheet(job.pairs, job.output, root, top=job.top, columns=job.columns, thumb=job.thumb)


def export(job: ExportJob) -> ExportResult:
    root = image_root_for(job.pairs, job.image_root)
    return export_mmvp(job.pairs, job.output, root, top=job.top, quality=job.quality)
