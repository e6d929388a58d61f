"""`mof-llava mine`: CLIP-blind pair mining, from a folder of images to an MMVP-format benchmark.

    mof-llava mine embed IMAGES -o EMB            # CLIP + DINOv2 embeddings (torchrun for many GPUs)
    mof-llava mine pairs EMB -o pairs.csv         # CLIP cos >= 0.95 and DINOv2 cos <= 0.6
    mof-llava mine sheet pairs.csv -o sheet.png   # contact sheet of the top pairs, for review
    mof-llava mine export-mmvp pairs.csv -o BENCH # "MMVP Images/" + Questions.csv skeleton

See docs/mining.md.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

DEFAULT_TOWERS = ("clip=openai/clip-vit-large-patch14", "dinov2=facebook/dinov2-large")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "mine",
        help="mine CLIP-blind image pairs (MMVP recipe)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    _add_embed(steps)
    _add_pairs(steps)
    _add_sheet(steps)
    _add_export(steps)


def _add_embed(steps) -> None:
    from mof_llava.mining.embed import EmbedConfig

    cfg = EmbedConfig()
    p = steps.add_parser("embed", help="embed images with each tower (float16 shards, resumable)")
    p.add_argument(
        "images", help="a folder (searched recursively) or a text file with one image path per line"
    )
    p.add_argument("-o", "--output", required=True, help="output folder (an unfinished run there is resumed)")
    p.add_argument(
        "--tower",
        action="append",
        metavar="NAME=MODEL",
        help=f"a tower: a name and a local checkpoint folder or hub id; repeat for several "
        f"(default: {' '.join(DEFAULT_TOWERS)})",
    )
    p.add_argument(
        "--pooling",
        action="append",
        default=[],
        metavar="NAME=POOLING",
        help="which embedding a tower yields: image_embeds (CLIP's projected embedding, default for "
        "CLIP), pooler (DINOv2's CLS after the final LayerNorm, default for DINOv2; SigLIP's "
        "pooled head), cls (first token of the last hidden state), mean (mean of the patch tokens)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=cfg.batch_size,
        help=f"images per forward pass (default {cfg.batch_size})",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=cfg.shard_size,
        help=f"images per shard, the unit of resumption (default {cfg.shard_size})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=cfg.workers,
        help=f"image decoding processes per rank (default {cfg.workers}; 0 = in-process)",
    )
    p.add_argument(
        "--device",
        default=cfg.device,
        help="auto (CUDA when available, else cpu), cpu, cuda (cuda:LOCAL_RANK under torchrun), "
        f"cuda:N (that GPU on every rank), ... (default {cfg.device})",
    )
    p.add_argument(
        "--dtype",
        default=cfg.dtype,
        choices=["auto", "float32", "float16", "bfloat16"],
        help="model dtype (auto: float16 on CUDA, float32 on CPU); embeddings are stored as float16",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per rank on CPU (default: this rank's share of the idle cores)",
    )
    p.set_defaults(func=run_embed)


def _add_pairs(steps) -> None:
    from mof_llava.mining.pairs import PairCriteria
    from mof_llava.mining.search import SearchConfig

    crit, search = PairCriteria(), SearchConfig()
    p = steps.add_parser("pairs", help="find pairs with CLIP cos >= --clip-min and DINOv2 cos <= --dino-max")
    p.add_argument(
        "embeddings", nargs="?", help="output folder of `mine embed` (or give --clip-npy/--dino-npy/--ids)"
    )
    p.add_argument(
        "-o", "--output", required=True, help="CSV to write (a <name>.summary.json is written beside it)"
    )
    p.add_argument("--clip-npy", help=".npy matrix, row i = image i, searched with --clip-min")
    p.add_argument("--dino-npy", help=".npy matrix, row i = image i, tested with --dino-max")
    p.add_argument("--ids", help="text file, line i = id (path) of image i (with --clip-npy/--dino-npy)")
    p.add_argument(
        "--image-root", help="folder relative image ids resolve against (recorded for sheet/export)"
    )
    p.add_argument(
        "--clip-tower", default="clip", help="embed-folder tower searched with --clip-min (default clip)"
    )
    p.add_argument(
        "--dino-tower", default="dinov2", help="embed-folder tower tested with --dino-max (default dinov2)"
    )
    p.add_argument(
        "--clip-min",
        type=float,
        default=crit.clip_min,
        help=f"keep pairs with CLIP cosine >= this (default {crit.clip_min})",
    )
    p.add_argument(
        "--dino-max",
        type=float,
        default=crit.dino_max,
        help=f"keep pairs with DINOv2 cosine <= this (default {crit.dino_max})",
    )
    p.add_argument(
        "--duplicate-tol",
        type=float,
        default=crit.duplicate_tol,
        help="pairs with both cosines >= 1 - this are exact duplicates: left out and counted "
        f"(default {crit.duplicate_tol})",
    )
    p.add_argument(
        "--method",
        default=search.method,
        choices=["auto", "exact", "ivf"],
        help="exact: every pair, O(N^2); ivf: clustered search; auto: exact up to --exact-max-rows",
    )
    p.add_argument(
        "--exact-max-rows",
        type=int,
        default=search.exact_max_rows,
        help=f"largest collection auto searches exactly (default {search.exact_max_rows})",
    )
    p.add_argument(
        "--lists",
        type=int,
        default=search.lists,
        help="IVF clusters (default: about 2 sqrt(N), a power of two)",
    )
    p.add_argument(
        "--probe-slack",
        type=float,
        default=search.probe_slack,
        help="IVF probe rule slack: 1 misses no pair (with --max-probes 0), smaller is faster "
        f"(default {search.probe_slack})",
    )
    p.add_argument(
        "--max-probes",
        type=int,
        default=search.max_probes,
        help="IVF: the probe rule looks at this many most similar clusters besides an image's own "
        f"(0 = all; default {search.max_probes})",
    )
    p.add_argument(
        "--recall-sample",
        type=int,
        default=search.recall_sample,
        help="IVF: measure recall against exact search on this many random images "
        f"(0 = skip; default {search.recall_sample})",
    )
    p.add_argument("--workers", type=int, default=search.workers, help="threads (default: one per core)")
    p.add_argument(
        "--seed",
        type=int,
        default=search.seed,
        help=f"seeds the IVF k-means training sample and the recall sample (default {search.seed})",
    )
    p.set_defaults(func=run_pairs)


def _add_sheet(steps) -> None:
    p = steps.add_parser("sheet", help="contact sheet (PNG) of the top pairs with their similarities")
    p.add_argument("pairs", help="pairs CSV written by `mine pairs`")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--top", type=int, default=50, help="pairs to show, from the top of the CSV (default 50)")
    p.add_argument(
        "--image-root", help="folder relative ids resolve against (default: from the pairs summary)"
    )
    p.add_argument("--columns", type=int, default=2, help="pairs per row of the sheet (default 2)")
    p.add_argument("--thumb", type=int, default=224, help="thumbnail size in pixels (default 224)")
    p.set_defaults(func=run_sheet)


def _add_export(steps) -> None:
    from mof_llava.mining.export import QUALITY_MAX, QUALITY_MIN

    p = steps.add_parser("export-mmvp", help="write the first K pairs as an MMVP-format benchmark folder")
    p.add_argument("pairs", help="pairs CSV (as written by `mine pairs`, possibly edited after review)")
    p.add_argument("-o", "--output", required=True, help="benchmark folder to create")
    p.add_argument(
        "--top", type=int, default=150, help="pairs to export, from the top of the CSV (default 150, as MMVP)"
    )
    p.add_argument(
        "--image-root", help="folder relative ids resolve against (default: from the pairs summary)"
    )
    p.add_argument(
        "--quality",
        type=int,
        default=95,
        help=f"JPEG quality of the exported images, {QUALITY_MIN} to {QUALITY_MAX} (default 95)",
    )
    p.set_defaults(func=run_export)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{flag} {item!r}: expected NAME=VALUE")
        if name in out:  # a repeated name would silently replace the earlier value
            raise SystemExit(f"{flag} {item!r}: {name} is already given as {name}={out[name]}")
        out[name] = value
    return out


def run_embed(args) -> int:
    import logging

    from mof_llava.mining.embed import EmbedConfig, embed_collection
    from mof_llava.mining.towers import TowerSpec
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(message)s")  # the thread choice, a capped --workers

    towers = _key_values(args.tower or list(DEFAULT_TOWERS), "--tower")
    pooling = _key_values(args.pooling, "--pooling")
    unknown = sorted(set(pooling) - set(towers))
    if unknown:
        raise SystemExit(
            f"--pooling names unknown tower(s) {', '.join(unknown)} (towers: {', '.join(towers)})"
        )
    specs = [TowerSpec(name, model, pooling.get(name, "auto")) for name, model in towers.items()]
    cfg = EmbedConfig(
        towers=specs,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        workers=args.workers,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
    )
    result = embed_collection(args.images, args.output, cfg)
    if result is not None:
        print(result.describe())
    return 0


def run_pairs(args) -> int:
    import resource

    from mof_llava.mining.kernel import BadEmbeddingError
    from mof_llava.mining.pairs import (
        PairCriteria,
        find_blind_pairs,
        format_recall,
        summary_path,
        write_pairs_csv,
    )
    from mof_llava.mining.search import SearchConfig
    from mof_llava.mining.store import EmbeddingStore, NpyRows, ShardedRows, read_ids, write_json_atomic

    npy_args = (args.clip_npy, args.dino_npy, args.ids)
    if args.embeddings and any(npy_args):
        raise SystemExit("give either an embed folder or --clip-npy/--dino-npy/--ids, not both")
    if args.embeddings:
        store = EmbeddingStore(args.embeddings)
        clip, dino, ids = store.tower(args.clip_tower), store.tower(args.dino_tower), store.ids()
        image_root = str(Path(args.image_root).resolve()) if args.image_root else store.image_root
        inputs = {
            "embeddings": str(Path(args.embeddings).resolve()),
            "clip_tower": args.clip_tower,
            "dino_tower": args.dino_tower,
        }
        files = {
            "clip": f"{args.embeddings} tower {args.clip_tower}",
            "dino": f"{args.embeddings} tower {args.dino_tower}",
        }
    elif all(npy_args):
        clip, dino = ShardedRows([NpyRows(args.clip_npy)]), ShardedRows([NpyRows(args.dino_npy)])
        ids = read_ids(args.ids)
        image_root = str(Path(args.image_root or Path(args.ids).parent).resolve())
        inputs = {
            "clip_npy": str(Path(args.clip_npy).resolve()),
            "dino_npy": str(Path(args.dino_npy).resolve()),
            "ids": str(Path(args.ids).resolve()),
        }
        files = {"clip": args.clip_npy, "dino": args.dino_npy}
    else:
        raise SystemExit("give an embed folder, or all three of --clip-npy, --dino-npy and --ids")

    criteria = PairCriteria(args.clip_min, args.dino_max, args.duplicate_tol)
    cfg = SearchConfig(
        method=args.method,
        exact_max_rows=args.exact_max_rows,
        lists=args.lists,
        probe_slack=args.probe_slack,
        max_probes=args.max_probes,
        recall_sample=args.recall_sample,
        workers=args.workers,
        seed=args.seed,
    )
    try:
        table, stats = find_blind_pairs(clip, dino, ids, criteria, cfg)
    except BadEmbeddingError as err:
        name = ids[err.row] if 0 <= err.row < len(ids) else "?"
        raise SystemExit(
            f"{files[err.tower or 'clip']}: row {err.row} (image {name}): {err.reason}"
        ) from None

    write_pairs_csv(args.output, table, ids)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    summary = {
        "inputs": inputs,
        "image_root": image_root,
        "criteria": asdict(criteria),
        # method and lists as searched (auto and 0 resolved); as given on the command line under "requested"
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
        "peak_rss_bytes": peak_rss,
    }
    write_json_atomic(summary_path(args.output), summary)
    _print_pairs_summary(args.output, stats, format_recall, peak_rss)
    return 0


def _print_pairs_summary(output, stats, format_recall, peak_rss: int) -> None:
    s = stats.search
    lines = [
        f"{stats.kept} CLIP-blind pairs written to {output}",
        f"  images {stats.rows}; pairs with CLIP cos >= threshold {stats.clip_pairs}: "
        f"{stats.dino_rejected} too similar for DINOv2, {stats.duplicate_pairs} exact duplicates, "
        f"{stats.same_id_pairs} same image id (all left out)",
        f"  search {s.method}"
        + (f", {s.lists} clusters, {s.probes_per_row:.2f} probed per image" if s.method == "ivf" else "")
        + f"; {stats.seconds['total']:.1f} s; peak memory {peak_rss / 2**30:.2f} GiB",
    ]
    if s.method == "ivf":
        lines.append(f"  recall vs exact search, CLIP pairs: {format_recall(stats.recall_clip)}")
        lines.append(f"  recall vs exact search, kept pairs: {format_recall(stats.recall_blind)}")
    print("\n".join(lines))


def run_sheet(args) -> int:
    from mof_llava.mining.sheet import draw_contact_sheet, image_root_for

    root = image_root_for(args.pairs, args.image_root)
    result = draw_contact_sheet(
        args.pairs, args.output, root, top=args.top, columns=args.columns, thumb=args.thumb
    )
    print(result.describe())
    return 0


def run_export(args) -> int:
    from mof_llava.mining.export import export_mmvp
    from mof_llava.mining.sheet import image_root_for

    root = image_root_for(args.pairs, args.image_root)
    result = export_mmvp(args.pairs, args.output, root, top=args.top, quality=args.quality)
    print(result.describe())
    return 0
