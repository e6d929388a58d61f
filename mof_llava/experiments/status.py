"""Which runs of a sweep are done, running or failed, read from what is on disk.

For each step of a run (listed in its experiment.json, with the file the step writes last) the
state comes from the markers the job scripts write (scripts/launch/steps.sh) and the artifact:

    <step>.running present       running  (failed, when it names a process on this host that is gone)
    <step>.exit non-zero         failed   (exit status, log)
    artifact present             done     (also for steps run by hand, without the scripts)
    <step>.exit 0, no artifact   failed   (the step said it finished but wrote nothing)
    <step>.submitted present     queued   (SLURM job id); cancelled when an earlier step of the run
                                          failed: the job stops at the failed step, and SLURM cancels
                                          the jobs chained after it (afterok, --kill-on-invalid-dep),
                                          so the marker stays but the step can never start
    otherwise                    pending  (with the newest checkpoint, when a stage has one)

Nothing is kept in memory between calls and no scheduler is asked; `squeue` may know more about a
job whose node died without a word.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .layout import RECORD, RunRecord, Step, read_record

STATES = ("pending", "queued", "running", "done", "failed", "cancelled")


@dataclass
class StepStatus:
    step: str
    state: str
    detail: str = ""
    log: Path | None = None


@dataclass
class RunStatus:
    folder: Path
    record: RunRecord
    steps: list[StepStatus] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record.run

    @property
    def state(self) -> str:
        """failed / running / queued if any step is; done if all are; else pending."""
        states = {s.state for s in self.steps}
        for state in ("failed", "running", "queued"):
            if state in states:
                return state
        return "done" if states == {"done"} else "pending"

    def to_json(self) -> dict:
        """What `sweep status --json` prints per run."""
        steps = [
            {"step": s.step, "state": s.state, "detail": s.detail, "log": str(s.log) if s.log else None}
            for s in self.steps
        ]
        return {
            "run": self.name,
            "group": self.record.group,
            "folder": str(self.folder),
            "state": self.state,
            "steps": steps,
        }


def read_markers(path: Path) -> dict[str, str]:
    """key=value lines of a .running / .submitted marker."""
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def step_status(run_dir: Path, step: Step) -> StepStatus:
    status = run_dir / "status"
    running, exit_file = status / f"{step.name}.running", status / f"{step.name}.exit"
    submitted, log = status / f"{step.name}.submitted", status / f"{step.name}.log"
    log_path = log if log.is_file() else None
    artifact = run_dir / step.artifact
    if running.is_file():
        info = read_markers(running)
        if _gone(info):
            return StepStatus(
                step.name,
                "failed",
                f"process {info['pid']} on {info['host']} ended without recording an exit status",
                log_path,
            )
        where = f"job {info['slurm_job']}" if info.get("slurm_job") else f"pid {info.get('pid', '?')}"
        detail = f"on {info.get('host', '?')} ({where}) since {info.get('started', '?')}"
        if log_path is not None:
            detail += f", last output {_age(log_path)} ago"
        return StepStatus(step.name, "running", detail, log_path)
    code = exit_file.read_text().strip() if exit_file.is_file() else None
    if code not in (None, "0"):
        return StepStatus(step.name, "failed", f"exit status {code}", log_path)
    if artifact.exists():
        return StepStatus(step.name, "done", "", log_path)
    if code == "0":
        return StepStatus(step.name, "failed", f"exit status 0 but no {step.artifact}", log_path)
    if submitted.is_file():
        info = read_markers(submitted)
        return StepStatus(
            step.name, "queued", f"SLURM job {info.get('slurm_job', '?')} since {info.get('submitted', '?')}"
        )
    return StepStatus(step.name, "pending", _progress(run_dir, step), log_path)


def run_status(run_dir: Path) -> RunStatus:
    record = read_record(run_dir)
    return RunStatus(run_dir, record, _cancel_after_failure([step_status(run_dir, s) for s in record.steps]))


def _cancel_after_failure(steps: list[StepStatus]) -> list[StepStatus]:
    """Queued steps after a failed one: each step of a run needs the ones before it (same job under
    `set -e`, or a job chained with afterok), so these will never start."""
    failed = None
    for i, status in enumerate(steps):
        if status.state == "failed" and failed is None:
            failed = status.step
        elif status.state == "queued" and failed is not None:
            steps[i] = StepStatus(
                status.step,
                "cancelled",
                f"{status.detail}; never starts: {failed} failed before it (submit again once that is fixed)",
                status.log,
            )
    return steps


def sweep_status(root: Path) -> list[RunStatus]:
    """Every run folder directly below `root` (those with an experiment.json), by name."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (plan the sweep first: mof-llava sweep plan SWEEP)")
    return [run_status(p.parent) for p in sorted(root.glob(f"*/{RECORD}"))]


def format_status(runs: list[RunStatus]) -> str:
    """A table of runs x steps, then the failed steps with their logs, then the counts."""
    if not runs:
        return "no runs (no */experiment.json below this folder)"
    names = list(dict.fromkeys(s.step for r in runs for s in r.steps))
    width = max(len(r.name) for r in runs)
    header = (f"{'run':<{width}}  {'state':<8}  " + "  ".join(f"{n:<8}" for n in names)).rstrip()
    lines = [header, "-" * len(header)]
    for run in runs:
        by_step = {s.step: s.state for s in run.steps}
        cells = "  ".join(f"{by_step.get(n, '-'):<{max(8, len(n))}}" for n in names)
        lines.append(f"{run.name:<{width}}  {run.state:<8}  {cells}".rstrip())
    notes = [
        f"  {run.name} {s.step}: {s.state}, {s.detail}" + (f" (log {s.log})" if s.log else "")
        for run in runs
        for s in run.steps
        if s.state in ("failed", "running", "cancelled") or (s.state == "pending" and s.detail)
    ]
    if notes:
        lines += ["", *notes]
    counts = {state: sum(r.state == state for r in runs) for state in STATES}
    lines += ["", f"{len(runs)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)]
    return "\n".join(lines)


def _gone(info: dict[str, str]) -> bool:
    """The marker names a process on this host that no longer exists."""
    if info.get("host") != socket.gethostname() or not info.get("pid", "").isdigit():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _progress(run_dir: Path, step: Step) -> str:
    if step.name not in ("stage1", "stage2", "preference"):  # the training stages, in folders of their names
        return ""
    from ..training.checkpoints import latest_complete_checkpoint

    latest = latest_complete_checkpoint(run_dir / step.name)
    return f"{latest.name} present, resumes from it" if latest is not None else ""


def _age(path: Path) -> str:
    seconds = max(0.0, time.time() - path.stat().st_mtime)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
