"""Run and step states read from planted run folders: what the job scripts and the training leave on disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from experiments_helpers import plant_run

from mof_llava.experiments.status import format_status, sweep_status


def _touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has this id now (ids are not reused this fast)


@pytest.fixture
def planted(tmp_path):
    """One run per situation, each with the steps stage1, stage2, eval-mmvp."""
    root = tmp_path / "runs"
    host = socket.gethostname()

    done = plant_run(root, "done", "done", "arm")
    for artifact in (
        "stage1/adapters/adapters_config.json",
        "stage2/model/processor_config.json",
        "eval/mmvp/metrics.json",
    ):
        _touch(done / artifact)
    for step in ("stage1", "stage2", "eval-mmvp"):
        _touch(done / "status" / f"{step}.exit", "0\n")

    running = plant_run(root, "running", "running", "arm")
    _touch(running / "stage1/adapters/adapters_config.json")
    _touch(
        running / "status/stage2.running",
        f"host={host}\npid={os.getpid()}\nslurm_job=\nstarted=2026-01-01T00:00:00Z\n",
    )
    _touch(running / "status/stage2.log", "step 10\n")

    remote = plant_run(root, "remote", "remote", "arm")
    _touch(
        remote / "status/stage1.running",
        "host=another-node\npid=1\nslurm_job=4242\nstarted=2026-01-01T00:00:00Z\n",
    )

    crashed = plant_run(root, "crashed", "crashed", "arm")
    _touch(
        crashed / "status/stage1.running",
        f"host={host}\npid={_dead_pid()}\nslurm_job=\nstarted=2026-01-01T00:00:00Z\n",
    )

    failed = plant_run(root, "failed", "failed", "arm")
    _touch(failed / "stage1/adapters/adapters_config.json")
    _touch(failed / "status/stage2.exit", "137\n")
    _touch(failed / "status/stage2.log", "Killed\n")

    silent = plant_run(root, "silent", "silent", "arm")
    _touch(silent / "status/stage1.exit", "0\n")  # said it finished, wrote nothing

    queued = plant_run(root, "queued", "queued", "arm")
    _touch(queued / "status/stage1.submitted", "slurm_job=99\nsubmitted=2026-01-01T00:00:00Z\n")

    # stage 1's job failed; SLURM cancelled the jobs chained after it (afterok, --kill-on-invalid-dep)
    # without a word, so their .submitted markers stay
    cancelled = plant_run(root, "cancelled", "cancelled", "arm")
    _touch(cancelled / "status/stage1.exit", "1\n")
    for step, job in (("stage2", 101), ("eval-mmvp", 102)):
        _touch(cancelled / f"status/{step}.submitted", f"slurm_job={job}\nsubmitted=2026-01-01T00:00:00Z\n")

    by_hand = plant_run(root, "by-hand", "by-hand", "arm")
    _touch(by_hand / "stage1/adapters/adapters_config.json")  # trained with `mof-llava train`, no scripts
    _touch(by_hand / "stage2/checkpoint-300/COMPLETE", "done")
    _touch(by_hand / "stage2/checkpoint-400/model.safetensors", "partial")  # no COMPLETE marker

    plant_run(root, "pending", "pending", "arm")
    return root


def test_states_from_disk(planted):
    states = {r.name: [(s.step, s.state) for s in r.steps] for r in sweep_status(planted)}
    assert states == {
        "by-hand": [("stage1", "done"), ("stage2", "pending"), ("eval-mmvp", "pending")],
        "cancelled": [("stage1", "failed"), ("stage2", "cancelled"), ("eval-mmvp", "cancelled")],
        "crashed": [("stage1", "failed"), ("stage2", "pending"), ("eval-mmvp", "pending")],
        "done": [("stage1", "done"), ("stage2", "done"), ("eval-mmvp", "done")],
        "failed": [("stage1", "done"), ("stage2", "failed"), ("eval-mmvp", "pending")],
        "pending": [("stage1", "pending"), ("stage2", "pending"), ("eval-mmvp", "pending")],
        "queued": [("stage1", "queued"), ("stage2", "pending"), ("eval-mmvp", "pending")],
        "remote": [("stage1", "running"), ("stage2", "pending"), ("eval-mmvp", "pending")],
        "running": [("stage1", "done"), ("stage2", "running"), ("eval-mmvp", "pending")],
        "silent": [("stage1", "failed"), ("stage2", "pending"), ("eval-mmvp", "pending")],
    }
    overall = {r.name: r.state for r in sweep_status(planted)}
    assert overall == {
        "by-hand": "pending",
        "cancelled": "failed",
        "crashed": "failed",
        "done": "done",
        "failed": "failed",
        "pending": "pending",
        "queued": "queued",
        "remote": "running",
        "running": "running",
        "silent": "failed",
    }


def test_details_say_why(planted):
    details = {(r.name, s.step): s.detail for r in sweep_status(planted) for s in r.steps}
    assert details[("failed", "stage2")] == "exit status 137"
    assert details[("silent", "stage1")] == "exit status 0 but no stage1/adapters/adapters_config.json"
    assert "ended without recording an exit status" in details[("crashed", "stage1")]
    assert details[("remote", "stage1")].startswith("on another-node (job 4242) since 2026-01-01")
    assert "last output" in details[("running", "stage2")]
    assert details[("queued", "stage1")].startswith("SLURM job 99")
    assert details[("cancelled", "eval-mmvp")] == (
        "SLURM job 102 since 2026-01-01T00:00:00Z; never starts: stage1 failed before it "
        "(submit again once that is fixed)"
    )
    # the newest *complete* checkpoint, the one training resumes from
    assert details[("by-hand", "stage2")] == "checkpoint-300 present, resumes from it"


def test_the_table_and_the_command(planted, capsys):
    from mof_llava.cli import main

    table = format_status(sweep_status(planted))
    assert "10 runs: 2 pending, 1 queued, 2 running, 1 done, 4 failed" in table
    assert "  cancelled stage2: cancelled, SLURM job 101 since" in table
    assert (
        f"  failed stage2: failed, exit status 137 (log {planted / 'failed' / 'status' / 'stage2.log'})"
        in table
    )
    assert main(["sweep", "status", str(planted), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {r["run"]: r["state"] for r in listing}["failed"] == "failed"
    with pytest.raises(SystemExit, match="no such folder"):
        main(["sweep", "status", str(planted / "nowhere")])
