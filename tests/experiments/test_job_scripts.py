"""Job scripts: written for every launcher, valid bash, chaining stage 1 -> stage 2 -> evaluation with
the status recorded on disk; SLURM submissions chained with afterok. The launchers and sbatch are
replaced by small fakes on PATH that record their command lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from experiments_helpers import EXPERIMENTS, REPO, write_sweep

from mof_llava.experiments.plan import plan_sweep
from mof_llava.experiments.spec import LAUNCHERS, SweepError, load_sweep
from mof_llava.experiments.status import run_status

STEPS_SH = REPO / "scripts" / "launch" / "steps.sh"

FAKE_LAUNCHER = r"""#!/usr/bin/env bash
# Records its command line; writes the artifact the real command would write; fails for $FAIL_RUN.
echo "$(basename "$0") $*" >> "$CALLS"
prev=""
for arg in "$@"; do
  if [[ -n "${FAIL_RUN:-}" && "$arg" == *"$FAIL_RUN"* ]]; then echo "failing on purpose" >&2; exit 3; fi
  case "$arg" in
    */stage1.yaml) mkdir -p "${arg%/*}/stage1/adapters"; echo {} > "${arg%/*}/stage1/adapters/adapters_config.json" ;;
    */stage2.yaml) mkdir -p "${arg%/*}/stage2/model"; echo {} > "${arg%/*}/stage2/model/processor_config.json" ;;
  esac
  if [[ "$prev" == --output-dir ]]; then mkdir -p "$arg"; echo '{"benchmark": "x", "score": 1}' > "$arg/metrics.json"; fi
  prev=$arg
done
"""

FAKE_SBATCH = r"""#!/usr/bin/env bash
# Records its command line and answers like `sbatch --parsable`: a new job id.
n=$(( $(wc -l < "$CALLS" 2> /dev/null || echo 0) + 100 ))
echo "sbatch $*" >> "$CALLS"
echo "$n;cluster"
"""


def _fakes(tmp_path: Path, names: list[str], body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt")}


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.is_file() else []


# How long a test waits for a subprocess to reach a marker or to exit. The tests wait on markers,
# never on time: this bound only keeps a broken script from hanging the suite, and is generous
# because a loaded machine can take many seconds to start a process.
BOUND = 120.0
# What the signal tests' fake launchers do after recording their call: "run" for longer than any bound, so a step
# that ends on its own cannot pass for one stopped by a signal.
# One Python process, so no signal can fall between processes: a shell launcher that records its call
# and then forks `sleep` could take the test's Ctrl-C itself and wait 600 s on a sleep that never saw it.
SLEEPING_LAUNCHER = (
    f"#!{sys.executable}\n"
    "import os, sys, time\n"
    "with open(os.environ['CALLS'], 'a') as calls:\n"
    "    calls.write(' '.join(sys.argv) + '\\n')\n"
    "time.sleep(600)\n"
)


def _signals_as_in_a_terminal() -> None:
    """In the child: INT and TERM take their default action, as in a job a terminal starts. An ignored
    signal is inherited, and bash cannot trap a signal ignored when it starts, so a pytest process run
    in the background (SIGINT ignored) or a test before this one that left it ignored would make the
    signal tests wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen) -> None:
    """Kill what a test left running in its process group (a failed assertion, say)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=BOUND)


def _wait_for_call(tmp_path: Path, timeout: float = BOUND) -> None:
    """Until a fake launcher has recorded its call: the step is then surely running."""
    deadline = time.time() + timeout
    while not _calls(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert _calls(tmp_path), "the fake launcher was never called"


def _plan(tmp_path: Path, launcher: str, nodes: int = 1, output_root: str = "runs", **launch):
    content = {
        "name": "tiny",
        "output_root": str(tmp_path / output_root),
        "evaluation": {
            "benchmarks": {
                "mmvp": {"data": "data/eval/MMVP"},
                "pope": {"data": "data/eval/pope", "args": ["--batch-size", 4]},
            }
        },
        "seeds": [7],
        "launch": {"launcher": launcher, "nodes": nodes, "gpus_per_node": 8, **launch},
        "set": {"train.per_device_batch_size": 8},
        "arms": {
            "a-mof": {
                "stage1": str(EXPERIMENTS / "amof_7b" / "stage1.yaml"),
                "stage2": str(EXPERIMENTS / "amof_7b" / "stage2.yaml"),
                "grid": {"model.mixer.alpha": [0, 1]},
            }
        },
    }
    return plan_sweep(load_sweep(write_sweep(tmp_path / "sweep.yaml", content)))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_writes_valid_bash(tmp_path, launcher):
    plan = _plan(tmp_path, launcher, nodes=1 if launcher in ("deepspeed", "torchrun", "python") else 2)
    scripts = [plan.scripts.entry] + [p for paths in plan.scripts.per_run.values() for p in paths]
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, (script, result.stderr)
        assert os.access(script, os.X_OK) and "{{" not in script.read_text()
    text = "\n".join(p.read_text() for paths in plan.scripts.per_run.values() for p in paths)
    expected = {
        "deepspeed": "TRAIN=(deepspeed --num_gpus 8 --master_port 29500)",
        "torchrun": "TRAIN=(torchrun --standalone --nproc_per_node 8)",
        "python": "TRAIN=(python)",
        "deepspeed-hostfile": "TRAIN=(deepspeed --hostfile hostfile --master_port 29500)",
        "torchrun-multinode": 'TRAIN=(torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:29500")',
        "slurm": 'TRAIN=(srun --kill-on-bad-exit=1 torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8',
    }[launcher]
    assert expected in text
    run = plan.runs[0]
    assert '"$RUN/stage1.yaml"' in text and f"--model-id {run.name}" in text
    assert "--batch-size 4" in text  # the benchmark's args
    if launcher == "slurm":
        assert plan.scripts.entry.name == "submit.sh"
        assert "#SBATCH --nodes=2" in (run.layout.jobs / "stage2.sbatch").read_text()
        assert "#SBATCH --nodes=1" in (run.layout.jobs / "eval.sbatch").read_text()
    else:
        assert plan.scripts.entry.name == "run_all.sh"


def _local_env(tmp_path: Path, **extra) -> dict[str, str]:
    return {**_fakes(tmp_path, ["deepspeed", "torchrun"], FAKE_LAUNCHER), **extra}


def test_local_scripts_chain_the_steps_and_record_them(tmp_path):
    plan = _plan(tmp_path, "deepspeed")
    env = _local_env(tmp_path)
    result = subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = _calls(tmp_path)
    for run in plan.runs:
        root = run.layout.root
        assert [c for c in calls if str(root) in c] == [
            f"deepspeed --num_gpus 8 --master_port 29500 train/train.py {root}/stage1.yaml",
            f"deepspeed --num_gpus 8 --master_port 29500 train/train.py {root}/stage2.yaml",
            f"torchrun --standalone --nproc_per_node 8 eval/run.py mmvp --model {root}/stage2/model --data data/eval/MMVP "
            f"--output-dir {root}/eval/mmvp --model-id {run.name}",
            f"torchrun --standalone --nproc_per_node 8 eval/run.py pope --model {root}/stage2/model --data data/eval/pope "
            f"--output-dir {root}/eval/pope --model-id {run.name} --batch-size 4",
        ]
        assert {s.step: s.state for s in run_status(root).steps} == dict.fromkeys(
            ["stage1", "stage2", "eval-mmvp", "eval-pope"], "done"
        )
        assert (root / "status" / "stage2.exit").read_text().strip() == "0"
        assert "exit status 0" in (root / "status" / "stage2.log").read_text()
    # started again: everything is skipped, nothing is launched
    again = subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and _calls(tmp_path) == calls
    assert again.stdout.count("done before, skipped") == 8


def test_a_failed_run_stops_its_chain_but_not_the_other_runs(tmp_path):
    plan = _plan(tmp_path, "torchrun")
    failing, other = plan.runs
    env = _local_env(tmp_path, FAIL_RUN=f"{failing.name}/stage2.yaml")
    result = subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and f"failed: {failing.layout.jobs / 'run.sh'}" in result.stderr
    states = {s.step: s.state for s in run_status(failing.layout.root).steps}
    assert states == {"stage1": "done", "stage2": "failed", "eval-mmvp": "pending", "eval-pope": "pending"}
    assert (failing.layout.status / "stage2.exit").read_text().strip() == "3"
    assert "failing on purpose" in (failing.layout.status / "stage2.log").read_text()
    assert run_status(other.layout.root).state == "done"
    # fixed and started again: only the failed run's remaining steps run
    before = len(_calls(tmp_path))
    result = subprocess.run(
        ["bash", str(plan.scripts.entry)], env=_local_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 0
    new = _calls(tmp_path)[before:]
    assert len(new) == 3 and all(str(failing.layout.root) in c for c in new)
    assert new[0].endswith(f"{failing.layout.root}/stage2.yaml") and " mmvp " in new[1] and " pope " in new[2]
    assert run_status(failing.layout.root).state == "done"


def test_slurm_submission_chains_the_jobs_with_afterok(tmp_path):
    plan = _plan(
        tmp_path, "slurm", nodes=2, slurm={"partition": "gpu", "account": "lab", "extra": ["--qos=high"]}
    )
    env = _fakes(tmp_path, ["sbatch"], FAKE_SBATCH)
    result = subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    first, second = (run.layout.jobs for run in plan.runs)
    assert _calls(tmp_path) == [
        f"sbatch --parsable {first}/stage1.sbatch",
        f"sbatch --parsable --dependency=afterok:100 --kill-on-invalid-dep=yes {first}/stage2.sbatch",
        f"sbatch --parsable --dependency=afterok:101 --kill-on-invalid-dep=yes {first}/eval.sbatch",
        f"sbatch --parsable {second}/stage1.sbatch",
        f"sbatch --parsable --dependency=afterok:103 --kill-on-invalid-dep=yes {second}/stage2.sbatch",
        f"sbatch --parsable --dependency=afterok:104 --kill-on-invalid-dep=yes {second}/eval.sbatch",
    ]
    stage1 = (first / "stage1.sbatch").read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --time=12:00:00",
    ):
        assert line in stage1
    states = {
        s.step: (s.state, s.detail.split(" since")[0]) for s in run_status(plan.runs[0].layout.root).steps
    }
    assert states == {
        "stage1": ("queued", "SLURM job 100"),
        "stage2": ("queued", "SLURM job 101"),
        "eval-mmvp": ("queued", "SLURM job 102"),
        "eval-pope": ("queued", "SLURM job 102"),
    }


def test_sbatch_output_paths_are_written_unquoted_and_unsafe_ones_refused(tmp_path):
    plan = _plan(tmp_path, "slurm")
    run = plan.runs[0].layout.root
    assert (
        f"#SBATCH --output={run}/status/slurm-%j-stage1.out\n" in (run / "jobs" / "stage1.sbatch").read_text()
    )
    # SLURM reads #SBATCH lines without a shell: a path that needs quoting (or holds a % pattern) is refused
    for folder in ("my runs", "runs'x", "runs%j"):
        with pytest.raises(SweepError, match="cannot carry") as info:
            _plan(tmp_path, "slurm", output_root=folder)
        assert str(tmp_path / folder) in str(info.value)
        assert not (tmp_path / folder).exists()  # refused before anything was written
    # the other launchers' scripts quote the path: it is fine there
    plan = _plan(tmp_path, "torchrun", output_root="my runs")
    script = plan.runs[0].layout.jobs / "run.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert f"RUN='{tmp_path}/my runs/{plan.runs[0].name}'" in script.read_text()


def test_steps_chained_after_a_failed_slurm_job_show_as_cancelled(tmp_path):
    plan = _plan(tmp_path, "slurm")
    run = plan.runs[0]
    env = _fakes(tmp_path, ["sbatch"], FAKE_SBATCH)
    assert subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True).returncode == 0
    # stage 1's job runs and fails; SLURM would then cancel the stage-2 and eval jobs unseen
    env = {**_fakes(tmp_path, ["srun", "scontrol"], FAKE_LAUNCHER), "FAIL_RUN": run.name}
    env |= {"SLURM_JOB_ID": "100", "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1"}
    job = subprocess.run(["bash", str(run.layout.jobs / "stage1.sbatch")], env=env, capture_output=True)
    assert job.returncode != 0 and (run.layout.status / "stage1.exit").read_text() == "3\n"  # the fake's exit
    states = {s.step: s.state for s in run_status(run.layout.root).steps}
    assert states == {
        "stage1": "failed",
        "stage2": "cancelled",
        "eval-mmvp": "cancelled",
        "eval-pope": "cancelled",
    }
    assert run_status(plan.runs[1].layout.root).state == "queued"  # the other run is untouched


def test_slurm_does_not_resubmit_what_is_done_or_still_queued(tmp_path):
    plan = _plan(tmp_path, "slurm")
    run = plan.runs[0].layout.root
    (run / "stage1" / "adapters").mkdir(parents=True)
    (run / "stage1" / "adapters" / "adapters_config.json").write_text("{}")  # stage 1 done
    (run / "status").mkdir()
    (run / "status" / "stage2.submitted").write_text("slurm_job=77\nsubmitted=earlier\n")
    env = _fakes(tmp_path, ["sbatch"], FAKE_SBATCH)
    squeue = Path(env["PATH"].split(":")[0]) / "squeue"
    squeue.write_text(
        '#!/usr/bin/env bash\n[[ "$*" == *"-j 77"* ]] && echo PENDING\n'
    )  # job 77 is still queued
    squeue.chmod(0o755)
    result = subprocess.run(["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = [c for c in _calls(tmp_path) if str(run) in c]
    assert calls == [
        f"sbatch --parsable --dependency=afterok:77 --kill-on-invalid-dep=yes {run}/jobs/eval.sbatch"
    ]


def _step_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "job.sh"
    script.write_text(f"set -euo pipefail\nsource {STEPS_SH}\nexport RUN={tmp_path / 'run'}\n{body}\n")
    return script


def test_a_step_is_marked_running_while_it_runs(tmp_path):
    script = _step_script(
        tmp_path, 'step "$RUN" work out.txt bash -c \'cat "$RUN/status/work.running" > "$RUN/out.txt"\''
    )
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    seen = (tmp_path / "run" / "out.txt").read_text()
    assert "host=" in seen and "pid=" in seen and "started=" in seen
    assert not (tmp_path / "run" / "status" / "work.running").exists()
    assert (tmp_path / "run" / "status" / "work.exit").read_text() == "0\n"


def test_exit_0_without_the_artifact_is_a_failure(tmp_path):
    script = _step_script(tmp_path, 'step "$RUN" work never-written.txt true')
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 1 and "was not written" in result.stderr
    assert (tmp_path / "run" / "status" / "work.exit").read_text() == "1\n"


def test_sigterm_records_the_step_as_failed(tmp_path):
    script = _step_script(tmp_path, 'step "$RUN" work out.txt sleep 600')
    process = subprocess.Popen(
        ["bash", str(script)], start_new_session=True, preexec_fn=_signals_as_in_a_terminal,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    running = tmp_path / "run" / "status" / "work.running"
    try:
        deadline = time.time() + BOUND
        while not running.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert running.exists()
        os.killpg(process.pid, signal.SIGTERM)  # what SLURM does at the time limit
        assert process.wait(timeout=BOUND) == -signal.SIGTERM  # dies of the signal, after recording it
    finally:
        _stop_group(process)
    assert (tmp_path / "run" / "status" / "work.exit").read_text() == "143\n"
    assert not running.exists()


def _start_sleeping_sweep(tmp_path: Path):
    """A deepspeed sweep started in its own process group, its launcher sleeping: (plan, env, process)."""
    plan = _plan(tmp_path, "deepspeed")
    env = _fakes(tmp_path, ["deepspeed", "torchrun"], SLEEPING_LAUNCHER)
    process = subprocess.Popen(
        ["bash", str(plan.scripts.entry)],
        env=env,
        start_new_session=True,
        preexec_fn=_signals_as_in_a_terminal,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return plan, env, process


def test_ctrl_c_stops_the_whole_sweep(tmp_path):
    plan, _, process = _start_sleeping_sweep(tmp_path)
    first = plan.runs[0].layout.status / "stage1.running"
    try:
        _wait_for_call(tmp_path)  # the step's command has started (its marker is written before it)
        assert first.exists()
        os.killpg(process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        process.wait(timeout=BOUND)  # the launcher sleeps far longer: only the signal ends it in time
    finally:
        _stop_group(process)
    assert (plan.runs[0].layout.status / "stage1.exit").read_text() == "130\n"
    assert len(_calls(tmp_path)) == 1  # the second run never started
    assert not plan.runs[1].layout.status.exists()


def test_a_step_running_elsewhere_is_not_started_twice(tmp_path):
    import socket
    import sys

    script = _step_script(tmp_path, 'step "$RUN" work out.txt bash -c \'echo ran > "$RUN/out.txt"\'')
    marker = tmp_path / "run" / "status" / "work.running"
    marker.parent.mkdir(parents=True)
    marker.write_text(f"host={socket.gethostname()}\npid={os.getpid()}\nslurm_job=\nstarted=now\n")  # alive
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 1 and "is already running" in result.stderr and str(marker) in result.stderr
    assert not (tmp_path / "run" / "out.txt").exists() and marker.exists()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    marker.write_text(f"host={socket.gethostname()}\npid={gone.pid}\nslurm_job=\nstarted=now\n")  # crashed
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    assert (tmp_path / "run" / "out.txt").read_text() == "ran\n" and not marker.exists()

    marker.write_text("host=another-node\npid=1\nslurm_job=\nstarted=now\n")  # cannot be checked from here
    (tmp_path / "run" / "out.txt").unlink()
    assert subprocess.run(["bash", str(script)], capture_output=True).returncode == 1
    assert not (tmp_path / "run" / "out.txt").exists()


def test_one_run_all_at_a_time(tmp_path):
    plan, env, first = _start_sleeping_sweep(tmp_path)
    try:
        _wait_for_call(tmp_path)
        assert (plan.runs[0].layout.status / "stage1.running").exists()
        second = subprocess.run(
            ["bash", str(plan.scripts.entry)], env=env, capture_output=True, text=True, timeout=BOUND
        )
        assert second.returncode == 1 and "another run_all.sh of this sweep is running" in second.stderr
        assert len(_calls(tmp_path)) == 1
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=BOUND)
        _stop_group(first)
