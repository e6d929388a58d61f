"""`mof-llava sweep`: expand a sweep file into runs, write or launch their job scripts, report status.

    mof-llava sweep plan   SWEEP.yaml [--launcher L] [--grid KEY=[V1,V2]] [--set KEY=V] [--seeds 1,2] [--only GLOB]
    mof-llava sweep launch SWEEP.yaml [same options] [--dry-run]
    mof-llava sweep status SWEEP.yaml | RUNS_FOLDER [--json]

Each run (arm x grid point x seed) gets a folder with its resolved stage-1 / stage-2 configs and a
job script chaining stage 1 -> stage 2 -> evaluation; `launch` runs them (or submits them to SLURM).
See docs/experiments.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .dataclass_args import add_arguments, from_args


def add_parser(subparsers) -> None:
    from ..experiments.api import LaunchOptions, SweepOptions  # flags with their help and defaults

    parser = subparsers.add_parser(
        "sweep",
        help="expand a sweep into runs, write/launch their job scripts (local, multi-node, SLURM), show status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="sweep_action", metavar="ACTION", required=True)
    plan = actions.add_parser("plan", help="write every run's resolved configs and job scripts")
    launch = actions.add_parser("launch", help="plan, then run the job scripts (or submit them to SLURM)")
    for name, action in (("plan", plan), ("launch", launch)):
        action.add_argument("sweep", type=Path, help="sweep file, e.g. configs/experiments/sweeps/paper.yaml")
        add_arguments(action, SweepOptions, name)
        action.add_argument(  # text, read as seeds by _options (its errors are the sweep's)
            "--seeds", help="train every run once per seed, e.g. 1,2,3 (replaces the file's seeds)"
        )
    add_arguments(launch, LaunchOptions, "launch")
    plan.set_defaults(func=_cmd_plan)
    launch.set_defaults(func=_cmd_launch)

    status = actions.add_parser(
        "status", help="done / running / failed / queued / cancelled / pending per run and step"
    )
    status.add_argument("target", type=Path, help="the sweep file, or the folder holding its run folders")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status)


def _options(args: argparse.Namespace):
    from ..experiments import api as sweep
    from ..experiments.spec import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    return replace(from_args(sweep.SweepOptions, args), seeds=seeds)


def _sweep_errors(command):
    """The command with the library's SweepError as `mof-llava sweep: <message>` (exit status 1)."""

    def run(args: argparse.Namespace) -> int:
        from ..experiments.spec import SweepError

        try:
            return command(args)
        except SweepError as err:
            raise SystemExit(f"mof-llava sweep: {err}") from None

    return run


def _plan(options):
    """Plan and show the runs (the launch script's marked *) and the data not found."""
    from ..experiments import api as sweep

    plan = sweep.plan(options)
    selected = {r.name for r in plan.selected}
    print(
        f"sweep {plan.spec.name}: {len(plan.runs)} run(s) in {plan.root} (launcher {plan.spec.launch.launcher})"
    )
    for run in plan.runs:
        mark = "*" if run.name in selected else " "
        print(f" {mark} {run.name}  ({', '.join(s.name for s in run.steps)})")
    if len(selected) < len(plan.runs):
        print("   (* = in the launch script)")
    for item in plan.missing:
        print(f"warning: not found: {item}", file=sys.stderr)
    return plan


@_sweep_errors
def _cmd_plan(args: argparse.Namespace) -> int:
    plan = _plan(_options(args))
    print(f"job scripts written; start with: {plan.scripts.start_command(plan.spec.launch)}")
    print(f"progress: mof-llava sweep status {plan.root}")
    return 0


@_sweep_errors
def _cmd_launch(args: argparse.Namespace) -> int:
    from ..experiments import api as sweep

    options = _options(args)
    result = sweep.launch(sweep.LaunchOptions(options, args.dry_run, args.skip_data_check), _plan(options))
    if args.dry_run:  # prints only, so missing data is worth a warning, not a refusal
        if result.plan.missing and not args.skip_data_check:
            print(
                "warning: data not found (see the warnings above); a launch without --dry-run would be refused "
                "unless --skip-data-check is given"
            )
        print(f"dry run; would start: {result.command}")
    elif not result.started:
        print(f"a multi-node sweep starts on every node; run there: {result.command}")
    return result.returncode


@_sweep_errors
def _cmd_status(args: argparse.Namespace) -> int:
    from ..experiments import api as sweep
    from ..experiments.status import format_status

    runs = sweep.status(args.target)
    print(json.dumps([r.to_json() for r in runs], indent=1) if args.json else format_status(runs))
    return 0
