"""`mof-llava demo`: the whole pipeline in miniature, on procedural data, in 1-2 minutes on 2 CPU cores.

Generates a synthetic dataset (stage-1 captions, stage-2 multi-turn Q&A, an MMVP-format benchmark),
builds tiny random CLIP / DINOv2 / LLM checkpoints, trains I-MoF through stage 1 and stage 2 with the
normal training code and evaluates it on the synthetic MMVP pairs. Nothing is downloaded.
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
        help="what to train: i-mof (default), a-mof-<alpha> (e.g. a-mof-0.5) or llava-1.5; repeat for several",
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

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo reads is local
    from ..demo.report import format_report
    from ..demo.run import DemoFolderError, DemoSettings, parse_variant, run_demo

    if args.sweep and (args.models or args.no_eval):
        raise SystemExit("mof-llava demo: --sweep trains and evaluates its own list of models; drop --model / --no-eval")
    try:
        variants = [parse_variant(name) for name in (args.models or ["i-mof"])]
    except ValueError as err:
        raise SystemExit(str(err)) from None
    try:
        settings = DemoSettings(
            seed=args.seed,
            samples=args.samples,
            mmvp_pairs=args.mmvp_pairs,
            batch_size=args.batch_size,
            stage1_epochs=args.epochs,
            stage2_epochs=args.epochs,
            report_to=args.report_to,
            progress=not args.no_progress,
            threads=args.threads,
        )
    except ValueError as err:
        raise SystemExit(f"mof-llava demo: {err}") from None
    try:
        if args.sweep:
            from ..demo.sweep import run_rehearsal

            rehearsal = run_rehearsal(args.out, settings)
            result = rehearsal.demo
        else:
            result = run_demo(args.out, settings, variants, evaluate=not args.no_eval)
    except DemoFolderError as err:
        raise SystemExit(f"mof-llava demo: {err}") from None
    print(format_report(result))
    if args.sweep:
        print()
        print(rehearsal.report.text)
        print(f"tables and figures in {rehearsal.tables_dir}/ (the same as `mof-llava tables {result.out_dir}`)")
        print("At this size the scores are near chance: the rehearsal shows the pipeline runs, not the paper's findings.")
    return 0
