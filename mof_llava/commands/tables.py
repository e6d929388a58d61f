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
    parser = subparsers.add_parser(
        "tables",
        help="the paper's tables (Markdown, LaTeX, CSV) and figures (PNG) from evaluation metrics files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "results", nargs="+", type=Path, help="folders with metrics.json files, or metrics files"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default: RESULTS/tables, for the first RESULTS folder)"
    )
    parser.add_argument(
        "--reported",
        type=Path,
        help="numbers published by others, shown in their own columns (e.g. configs/experiments/reported.yaml)",
    )
    parser.add_argument(
        "--patterns",
        type=Path,
        help="MMVP question -> pattern map (CSV Index,Pattern or JSON) for the per-pattern table and radar charts",
    )
    parser.add_argument(
        "--proxy",
        default="mmbench",
        help="instruction-following proxy plotted against alpha: BENCH or BENCH:KEY (default: %(default)s; 'none' for none)",
    )
    parser.add_argument(
        "--decimals", type=int, default=1, help="decimals in Markdown and LaTeX (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="put scores made with different question files, prompts or graders in one column anyway",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import api
    from ..experiments.reported import ReportedError
    from ..experiments.results import ResultsError

    given = {k: getattr(args, k) for k in ("out", "reported", "patterns", "decimals", "allow_mixed")}
    proxy = None if args.proxy == "none" else args.proxy
    try:
        report = api.tables(api.TablesOptions(args.results, proxy=proxy, **given))
    except (ResultsError, ReportedError, ValueError) as err:
        raise SystemExit(f"mof-llava tables: {err}") from None
    print(report.text)
    print(
        f"written to {report.out_dir}: " + ", ".join(p.name for p in report.files + report.figures),
        file=sys.stderr,
    )
    return 0
