"""`mof-llava mine`: CLIP-blind pair mining, from a folder of images to an MMVP-format benchmark.

    mof-llava mine embed IMAGES -o EMB            # CLIP + DINOv2 embeddings (torchrun for many GPUs)
    mof-llava mine pairs EMB -o pairs.csv         # CLIP cos >= 0.95 and DINOv2 cos <= 0.6
    mof-llava mine sheet pairs.csv -o sheet.png   # contact sheet of the top pairs, for review
    mof-llava mine export-mmvp pairs.csv -o BENCH # "MMVP Images/" + Questions.csv skeleton

See docs/mining.md; the same verbs from Python are `mof_llava.mining.api`.
"""

from __future__ import annotations

import argparse

DEFAULT_TOWERS = ("clip=openai/clip-vit-large-patch14", "dinov2=facebook/dinov2-large")
IMAGE_ROOT_HELP = "folder relative ids resolve against (default: from the pairs summary)"


def add_parser(subparsers) -> None:
    from mof_llava.mining.embed import EmbedConfig
    from mof_llava.mining.export import QUALITY_MAX, QUALITY_MIN
    from mof_llava.mining.pairs import PairCriteria
    from mof_llava.mining.search import SearchConfig

    parser = subparsers.add_parser(
        "mine",
        help="mine CLIP-blind image pairs (MMVP recipe)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    p = steps.add_parser("embed", help="embed images with each tower (float16 shards, resumable)")
    p.add_argument(
        "images", help="a folder (searched recursively) or a text file with one image path per line"
    )
    _output(p, "output folder (an unfinished run there is resumed)")
    p.add_argument(
        "--tower",
        action="append",
        metavar="NAME=MODEL",
        help="a tower: a name and a local checkpoint folder or hub id; repeat for several "
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
    _flags(
        p,
        EmbedConfig(),
        {
            "batch_size": "images per forward pass",
            "shard_size": "images per shard, the unit of resumption",
            "workers": "image decoding processes per rank (0 = in-process)",
            "device": "auto (CUDA when available, else cpu), cpu, cuda (cuda:LOCAL_RANK under torchrun), "
            "cuda:N (that GPU on every rank), ...",
        },
    )
    p.add_argument(
        "--dtype",
        default=EmbedConfig.dtype,
        choices=["auto", "float32", "float16", "bfloat16"],
        help="model dtype (auto: float16 on CUDA, float32 on CPU); embeddings are stored as float16",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per rank on CPU (default: this rank's share of the idle cores)",
    )
    p.set_defaults(func=run_embed)

    p = steps.add_parser("pairs", help="find pairs with CLIP cos >= --clip-min and DINOv2 cos <= --dino-max")
    p.add_argument(
        "embeddings", nargs="?", help="output folder of `mine embed` (or give --clip-npy/--dino-npy/--ids)"
    )
    _output(p, "CSV to write (a <name>.summary.json is written beside it)")
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
    _flags(
        p,
        PairCriteria(),
        {
            "clip_min": "keep pairs with CLIP cosine >= this",
            "dino_max": "keep pairs with DINOv2 cosine <= this",
            "duplicate_tol": "pairs with both cosines >= 1 - this are exact duplicates: left out and counted",
        },
    )
    p.add_argument(
        "--method",
        default=SearchConfig.method,
        choices=["auto", "exact", "ivf"],
        help="exact: every pair, O(N^2); ivf: clustered search; auto: exact up to --exact-max-rows",
    )
    _flags(
        p,
        SearchConfig(),
        {
            "exact_max_rows": "largest collection auto searches exactly",
            "lists": "IVF clusters (default: about 2 sqrt(N), a power of two)",
            "probe_slack": "IVF probe rule slack: 1 misses no pair (with --max-probes 0), smaller is faster",
            "max_probes": "IVF: the probe rule looks at this many most similar clusters besides an image's own (0 = all",
            "recall_sample": "IVF: measure recall against exact search on this many random images (0 = skip",
            "workers": "threads (default: one per core)",
            "seed": "seeds the IVF k-means training sample and the recall sample",
        },
    )
    p.set_defaults(func=run_pairs)

    p = steps.add_parser("sheet", help="contact sheet (PNG) of the top pairs with their similarities")
    p.add_argument("pairs", help="pairs CSV written by `mine pairs`")
    _output(p, "PNG to write")
    p.add_argument("--top", type=int, default=50, help="pairs to show, from the top of the CSV (default 50)")
    p.add_argument("--image-root", help=IMAGE_ROOT_HELP)
    p.add_argument("--columns", type=int, default=2, help="pairs per row of the sheet (default 2)")
    p.add_argument("--thumb", type=int, default=224, help="thumbnail size in pixels (default 224)")
    p.set_defaults(func=run_sheet)

    p = steps.add_parser("export-mmvp", help="write the first K pairs as an MMVP-format benchmark folder")
    p.add_argument("pairs", help="pairs CSV (as written by `mine pairs`, possibly edited after review)")
    _output(p, "benchmark folder to create")
    p.add_argument(
        "--top", type=int, default=150, help="pairs to export, from the top of the CSV (default 150, as MMVP)"
    )
    p.add_argument("--image-root", help=IMAGE_ROOT_HELP)
    p.add_argument(
        "--quality",
        type=int,
        default=95,
        help=f"JPEG quality of the exported images, {QUALITY_MIN} to {QUALITY_MAX} (default 95)",
    )
    p.set_defaults(func=run_export)


def _output(p, help: str) -> None:
    p.add_argument("-o", "--output", required=True, help=help)


def _flags(p, defaults, helps: dict[str, str]) -> None:
    """`--name-with-dashes` flags typed and defaulted from a config instance; help texts ending in
    "(... " are closed with "; default X)", the others get " (default X)" unless they name theirs."""
    for name, help in helps.items():
        value = getattr(defaults, name)
        if "(default" not in help:
            help += (
                f"; default {value})" if help.endswith(("(0 = all", "(0 = skip")) else f" (default {value})"
            )
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value, help=help)


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

    from mof_llava.mining import api as mine
    from mof_llava.mining.embed import EmbedConfig
    from mof_llava.mining.towers import EmbeddingTowerSpec
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(message)s")  # the thread choice, a capped --workers
    towers = _key_values(args.tower or list(DEFAULT_TOWERS), "--tower")
    pooling = _key_values(args.pooling, "--pooling")
    unknown = sorted(set(pooling) - set(towers))
    if unknown:
        raise SystemExit(
            f"--pooling names unknown tower(s) {', '.join(unknown)} (towers: {', '.join(towers)})"
        )
    specs = [EmbeddingTowerSpec(name, model, pooling.get(name, "auto")) for name, model in towers.items()]
    settings = {
        k: getattr(args, k) for k in ("batch_size", "shard_size", "workers", "device", "dtype", "threads")
    }
    result = mine.embed(mine.EmbedJob(args.images, args.output, EmbedConfig(towers=specs, **settings)))
    if result is not None:
        print(result.describe())
    return 0


def run_pairs(args) -> int:
    from dataclasses import fields

    from mof_llava.mining import api as mine
    from mof_llava.mining.pairs import PairCriteria
    from mof_llava.mining.search import SearchConfig

    def given(cls):  # the config's fields that are flags here
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    job = mine.PairsJob(
        args.output,
        args.embeddings,
        args.clip_npy,
        args.dino_npy,
        args.ids,
        args.image_root,
        args.clip_tower,
        args.dino_tower,
        given(PairCriteria),
        given(SearchConfig),
    )
    try:
        result = mine.pairs(job)
    except mine.PairsInputError as err:
        raise SystemExit(str(err)) from None
    print(result.describe())
    return 0


def run_sheet(args) -> int:
    from mof_llava.mining import api as mine

    job = mine.SheetJob(args.pairs, args.output, args.top, args.image_root, args.columns, args.thumb)
    print(mine.sheet(job).describe())
    return 0


def run_export(args) -> int:
    from mof_llava.mining import api as mine

    print(
        mine.export(
            mine.ExportJob(args.pairs, args.output, args.top, args.image_root, args.quality)
        ).describe()
    )
    return 0
