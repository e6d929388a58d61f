"""`mof-llava mine`: CLIP-blind pair mining, from a folder of images to an MMVP-format benchmark.

    mof-llava mine embed IMAGES -o EMB            # CLIP + DINOv2 embeddings (torchrun for many GPUs)
    mof-llava mine pairs EMB -o pairs.csv         # CLIP cos >= 0.95 and DINOv2 cos <= 0.6
    mof-llava mine sheet pairs.csv -o sheet.png   # contact sheet of the top pairs, for review
    mof-llava mine export-mmvp pairs.csv -o BENCH # "MMVP Images/" + Questions.csv skeleton

See docs/mining.md; the same verbs from Python are `mof_llava.mining.api`.
"""

from __future__ import annotations

import argparse

from mof_llava.commands.dataclass_args import add_arguments, from_args, name_values


def add_parser(subparsers) -> None:
    """The steps' flags come from their jobs and configs (mof_llava/mining/api.py): help and defaults there."""
    from mof_llava.mining import api as mine
    from mof_llava.mining.embed import EmbedConfig
    from mof_llava.mining.pairs import PairCriteria
    from mof_llava.mining.search import SearchConfig

    parser = subparsers.add_parser(
        "mine",
        help="mine CLIP-blind image pairs (MMVP recipe)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    p = _step(steps, "embed", "embed images with each tower (float16 shards, resumable)", run_embed)
    p.add_argument(
        "images", help="a folder (searched recursively) or a text file with one image path per line"
    )
    p.add_argument("-o", "--output", required=True, help="output folder (an unfinished run there is resumed)")
    p.add_argument(
        "--tower",
        action="append",
        metavar="NAME=MODEL",
        help="a tower: a name and a local checkpoint folder or hub id; repeat for several "
        f"(default: {' '.join(mine.DEFAULT_TOWERS)})",
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
    add_arguments(p, EmbedConfig, "embed")

    help = "find pairs with CLIP cos >= --clip-min and DINOv2 cos <= --dino-max"
    p = _step(steps, "pairs", help, run_pairs)
    p.add_argument(
        "embeddings", nargs="?", help="output folder of `mine embed` (or give --clip-npy/--dino-npy/--ids)"
    )
    p.add_argument(
        "-o", "--output", required=True, help="CSV to write (a <name>.summary.json is written beside it)"
    )
    for options in (mine.PairsJob, PairCriteria, SearchConfig):
        add_arguments(p, options, "pairs")

    p = _step(steps, "sheet", "contact sheet (PNG) of the top pairs with their similarities", run_sheet)
    p.add_argument("pairs", help="pairs CSV written by `mine pairs`")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    add_arguments(p, mine.SheetJob, "sheet")

    p = _step(steps, "export-mmvp", "write the first K pairs as an MMVP-format benchmark folder", run_export)
    p.add_argument("pairs", help="pairs CSV (as written by `mine pairs`, possibly edited after review)")
    p.add_argument("-o", "--output", required=True, help="benchmark folder to create")
    add_arguments(p, mine.ExportJob, "export-mmvp")


def _step(steps, name: str, help: str, func):
    p = steps.add_parser(name, help=help)
    p.set_defaults(func=func)
    return p


def run_embed(args) -> int:
    import logging
    from dataclasses import replace

    from mof_llava.mining import api as mine
    from mof_llava.mining.embed import EmbedConfig
    from mof_llava.mining.towers import EmbeddingTowerSpec
    from mof_llava.verbosity import setup_logging

    setup_logging(logging.INFO, "%(message)s")  # the thread choice, a capped --workers
    towers = name_values(args.tower or list(mine.DEFAULT_TOWERS), "--tower")
    pooling = name_values(args.pooling, "--pooling")
    unknown = sorted(set(pooling) - set(towers))
    if unknown:
        raise SystemExit(
            f"--pooling names unknown tower(s) {', '.join(unknown)} (towers: {', '.join(towers)})"
        )
    specs = [EmbeddingTowerSpec(name, model, pooling.get(name, "auto")) for name, model in towers.items()]
    config = replace(from_args(EmbedConfig, args), towers=specs)
    result = mine.embed(mine.EmbedJob(args.images, args.output, config))
    if result is not None:
        print(result.describe())
    return 0


def run_pairs(args) -> int:
    from dataclasses import replace

    from mof_llava.mining import api as mine
    from mof_llava.mining.pairs import PairCriteria
    from mof_llava.mining.search import SearchConfig

    given = (from_args(PairCriteria, args), from_args(SearchConfig, args))
    job = replace(from_args(mine.PairsJob, args), criteria=given[0], search=given[1])
    try:
        result = mine.pairs(job)
    except mine.PairsInputError as err:
        raise SystemExit(str(err)) from None
    print(result.describe())
    return 0


def run_sheet(args) -> int:
    from mof_llava.mining import api as mine

    print(mine.sheet(from_args(mine.SheetJob, args)).describe())
    return 0


def run_export(args) -> int:
    from mof_llava.mining import api as mine

    print(mine.export(from_args(mine.ExportJob, args)).describe())
    return 0
