"""`mof-llava demo`: the whole pipeline in miniature, on procedural data, in 1-2 minutes on 2 CPU cores.

Generates a synthetic dataset (stage-1 captions, stage-2 multi-turn Q&A, an MMVP-format benchmark),
of the toy lab's 48 px scenes, takes the toy lab's trained CLIP and DINOv2 towers (assets/toy-lab/seed0)
and a tiny random LLM, trains I-MoF through stage 1 and stage 2 with the normal training code and evaluates it on the synthetic MMVP pairs. Nothing is downloaded.
`--sweep` rehearses the paper's whole sweep in miniature, up to its tables and figures.
See docs/demo.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a tiny I-MoF model on procedural data (1-2 minutes on 2 CPU cores, no downloads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("mof-llava-demo"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data, the random models and training"
    )
    parser.add_argument(
        "--samples", type=int, default=512, help="pictures per training stage (default: %(default)s)"
    )
    parser.add_argument(
        "--mmvp-pairs", type=int, default=24, help="synthetic MMVP pairs (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="training batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs", type=float, default=1.0, help="epochs of each stage (default: %(default)s)"
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="what to train: i-mof (default), a-mof-<alpha> (e.g. a-mof-0.5), llava-1.5, or one tower twice "
        "(i-mof-clip-clip, i-mof-dinov2-dinov2); repeat for several",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="rehearse the paper's sweep: llava-1.5, a-mof-0/0.5/1 and i-mof (2 seeds), evaluated on MMVP, "
        "POPE, MMBench and GQA in miniature, then its tables and figures (OUT/tables/)",
    )
    parser.add_argument("--report-to", choices=["none", "wandb"], default="none", help="training logger")
    parser.add_argument("--no-eval", action="store_true", help="train only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="torch threads (default 1: at these sizes more threads only add overhead; auto: this "
        "process's share of the idle cores)",
    )
    parser.set_defaults(func=run)


def _threads(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, or auto; got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault(
        "HF_HUB_OFFLINE", "1"
    )  # everything the demo reads is local; before the hub's import
    from ..demo.api import DemoConfig, DemoConfigError, DemoFolderError, demo
    from ..demo.run import DemoSettings

    given = {
        k: getattr(args, k) for k in ("seed", "samples", "mmvp_pairs", "batch_size", "report_to", "threads")
    }
    try:
        settings = DemoSettings(
            **given, stage1_epochs=args.epochs, stage2_epochs=args.epochs, progress=not args.no_progress
        )
    except ValueError as err:  # a size out of range
        raise SystemExit(f"mof-llava demo: {err}") from None
    models = tuple(args.models) if args.models else None
    try:
        outcome = demo(DemoConfig(args.out, settings, models, sweep=args.sweep, evaluate=not args.no_eval))
    except (DemoConfigError, DemoFolderError) as err:
        raise SystemExit(f"mof-llava demo: {err}") from None
    print(outcome.describe())
    return 0
