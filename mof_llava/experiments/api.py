"""The sweep verbs and `tables`, one typed input each; `mof-llava sweep` / `tables` and Python callers use the same calls.

    from mof_llava.experiments import api as sweep
    options = sweep.SweepOptions("configs/experiments/sweeps/paper.yaml", seeds=(1, 2))
    plan = sweep.plan(options)                                   # run folders and job scripts
    sweep.launch(sweep.LaunchOptions(options, dry_run=True))     # plan, then start (or say what would start)
    runs = sweep.status("runs/paper")                            # a sweep file or its runs folder
    report = sweep.tables(sweep.TablesOptions(["runs/paper"]))   # the paper's tables and figures

Bad input raises `SweepError` (`tables`: `ResultsError`, `ReportedError`) naming the file, key or
option at fault.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..options import option
from .results import DEFAULT_PROXY

if TYPE_CHECKING:  # the modules doing the work load on first use: `mof-llava --help` reads only the options
    from .plan import Plan
    from .report import Report
    from .spec import SweepSpec
    from .status import RunStatus

NOT_LAUNCHED = (
    "not launched, data not found (see the warnings above; docs/reproduce.md says where it goes), "
    "or pass --skip-data-check"
)


PLANNING = frozenset({"plan", "launch"})  # the `sweep` actions whose flags these options are
LAUNCHER_HELP = (
    "deepspeed | torchrun (one node) | python (one process, CPU rehearsals) | deepspeed-hostfile | "
    "torchrun-multinode | slurm (default: the sweep file's launch.launcher)"
)


@dataclass(frozen=True)
class SweepOptions:
    """A sweep file and what the command line changes in it; the option fields are flags of `sweep
    plan` and `launch` (`seeds` is --seeds, text such as 1,2,3)."""

    sweep: str | Path
    launcher: str | None = option(None, LAUNCHER_HELP, actions=PLANNING)
    nodes: int | None = option(None, "nodes per training job", actions=PLANNING)
    gpus_per_node: int | None = option(None, "GPUs (processes) per node", actions=PLANNING)
    output_root: Path | None = option(
        None, "folder of the run folders (default: the file's output_root)", actions=PLANNING
    )
    force: bool = option(False, "rewrite the configs of runs that have started", actions=PLANNING)
    grid: tuple[str, ...] = option(
        (),
        "sweep a config key over values for every arm (YAML list), e.g. model.mixer.alpha=[0,0.5,1]",
        actions=PLANNING,
        metavar="KEY=[V1,V2]",
    )
    settings: tuple[str, ...] = option(
        (),
        "set a config key in every run (prefix stage1. or stage2. for one stage), e.g. "
        "train.per_device_batch_size=8",
        actions=PLANNING,
        flag="--set",
        metavar="KEY=VALUE",
    )
    seeds: tuple[int, ...] | None = None  # replaces the file's seeds
    only: tuple[str, ...] | None = option(
        None,
        "only these runs in the launch script (shell pattern on run or group name, repeatable)",
        actions=PLANNING,
        metavar="GLOB",
    )


LAUNCH = frozenset({"launch"})


@dataclass(frozen=True)
class LaunchOptions:
    sweep: SweepOptions
    dry_run: bool = option(False, "plan and print the command, start nothing", actions=LAUNCH)
    skip_data_check: bool = option(
        False, "launch although data files named by the runs are missing", actions=LAUNCH
    )


@dataclass
class Launched:
    plan: Plan
    command: str  # the start command of the job scripts
    started: bool  # False for a dry run and for a multi-node sweep (started on every node)
    returncode: int = 0


def spec(options: SweepOptions) -> SweepSpec:
    """The sweep file with the options applied."""
    from .expand import modify
    from .spec import SweepError, load_sweep, parse_assignment, with_launcher

    result = modify(
        load_sweep(options.sweep),
        grid=[parse_assignment(g, "--grid") for g in options.grid],
        settings=[parse_assignment(s, "--set") for s in options.settings],
        seeds=options.seeds,
        output_root=options.output_root,
    )
    launch = result.launch
    if options.launcher:
        launch = with_launcher(launch, options.launcher, "--launcher")
    for name in ("nodes", "gpus_per_node"):
        value = getattr(options, name)
        if value is not None:
            if value < 1:
                raise SweepError(f"--{name.replace('_', '-')} must be at least 1")
            launch = replace(launch, **{name: value})
    return replace(result, launch=launch)


def plan(options: SweepOptions) -> Plan:
    """Write every run's resolved configs and the job scripts."""
    from .plan import plan_sweep

    only = list(options.only) if options.only else None
    return plan_sweep(spec(options), only=only, force=options.force)


def launch(options: LaunchOptions, planned: Plan | None = None) -> Launched:
    """Plan (unless `planned`, the plan of these options, is given), then run the job scripts in
    the foreground (announced on stdout first), or submit them to SLURM. Missing data refuses a
    launch but not a dry run."""
    from .spec import SweepError

    planned = planned or plan(options.sweep)
    command = planned.scripts.start_command(planned.spec.launch)
    if options.dry_run:
        return Launched(planned, command, started=False)
    if planned.missing and not options.skip_data_check:
        raise SweepError(NOT_LAUNCHED)
    if planned.spec.launch.launcher == "torchrun-multinode":
        return Launched(planned, command, started=False)
    print(f"starting: {command}", flush=True)  # before the job scripts' own output
    code = subprocess.run(["bash", str(planned.scripts.entry)], check=False).returncode
    return Launched(planned, command, started=True, returncode=code)


def status(target: str | Path) -> list[RunStatus]:
    """Every run's state and steps, read from the run folders; `target` is the sweep file or the
    folder holding its run folders."""
    from .spec import SweepError, load_sweep
    from .status import sweep_status

    target = Path(target)
    if target.is_file():
        target = load_sweep(target).output_root
    try:
        return sweep_status(target)
    except (FileNotFoundError, ValueError) as err:  # no folder; an experiment.json of another version
        raise SweepError(str(err)) from None


TABLES = frozenset({"tables"})  # the command whose flags these options are


def _proxy(text: str) -> str | None:
    return None if text == "none" else text


@dataclass(frozen=True)
class TablesOptions:
    """The inputs of `tables`; the option fields are its flags (help and defaults here)."""

    results: tuple[str | Path, ...] | list[str | Path]  # folders searched for metrics.json, or files
    out: Path | None = option(
        None, "output folder (default: RESULTS/tables, for the first RESULTS folder)", actions=TABLES
    )
    reported: Path | None = option(
        None,
        "numbers published by others, shown in their own columns (e.g. configs/experiments/reported.yaml)",
        actions=TABLES,
    )
    patterns: Path | None = option(
        None,
        "MMVP question -> pattern map (CSV Index,Pattern or JSON) for the per-pattern table and radar charts",
        actions=TABLES,
    )
    proxy: str | None = option(
        DEFAULT_PROXY,
        "instruction-following proxy plotted against alpha: BENCH or BENCH:KEY (default: %(default)s; "
        "'none' for none)",
        parse=_proxy,
        actions=TABLES,
    )
    decimals: int = option(1, "decimals in Markdown and LaTeX (default: %(default)s)", actions=TABLES)
    allow_mixed: bool = option(
        False,
        "put scores made with different question files, prompts or graders in one column anyway",
        actions=TABLES,
    )
    baseline: str | None = option(
        None,
        "row (group) every other row is compared with by a paired bootstrap; unsupported differences are marked †",
        actions=TABLES,
    )


def tables(options: TablesOptions) -> Report:
    """Write the Markdown, LaTeX and CSV tables and the PNG figures; the report holds their text."""
    from .report import write_report

    first = Path(options.results[0])
    out = options.out or (first / "tables" if first.is_dir() else Path("tables"))
    return write_report(
        list(options.results),
        out,
        reported=options.reported,
        patterns=options.patterns,
        proxy=options.proxy,
        decimals=options.decimals,
        allow_mixed=options.allow_mixed,
        baseline=options.baseline,
    )
