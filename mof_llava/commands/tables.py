"""`mof-llava tables RESULTS...`: the paper's tables and figures from evaluation metrics files.

RESULTS are folders searched for metrics.json (a sweep's run folders, eval_results/, a demo) or
metrics files. Writes Markdown, LaTeX and CSV tables (baseline vs I-MoF on MMVP, POPE, MMBench,
GQA; A-MoF by DINOv2 ratio; MMVP per pattern with --patterns), mean ± std over seeds, and PNG
figures (MMVP and an instruction-following proxy against alpha; per-pattern radar charts).
See docs/experiments.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    from ..experiments.api import TablesOptions
    from .dataclass_args import add_arguments

    parser = subparsers.add_parser(
        "tables",
        help="the paper's tables (Markdown, LaTeX, CSV) and figures (PNG) from evaluation metrics files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "results", nargs="+", type=Path, help="folders with metrics.json files, or metrics files"
    )
    add_arguments(parser, TablesOptions, "tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import api
    from ..experiments.reported import ReportedError
    from ..experiments.results import ResultsError
    from .dataclass_args import from_args

    try:
        report = api.tables(from_args(api.TablesOptions, args))
    except (ResultsError, ReportedError, ValueError) as err:
        raise SystemExit(f"mof-llava tables: {err}") from None
    print(report.text)
    print(
        f"written to {report.out_dir}: " + ", ".join(p.name for p in report.files + report.figures),
        file=sys.stderr,
    )
    return 0
