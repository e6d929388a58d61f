"""Job scripts for the runs of a sweep, from the bash templates in scripts/launch/.

Per launcher:
- `deepspeed`, `torchrun`, `python` (one process, for CPU rehearsals): `<run>/jobs/run.sh` on one
  node, and `<root>/run_all.sh` running every run in turn;
- `deepspeed-hostfile`: the same, training with `deepspeed --hostfile` from the head node;
- `torchrun-multinode`: the same scripts, started on every node with NODE_RANK and MASTER_ADDR
  (torchrun's c10d rendezvous); the first node records the status and evaluates;
- `slurm`: `<run>/jobs/{stage1,stage2,eval}.sbatch` and `<root>/submit.sh`, which submits them
  chained with `--dependency=afterok`.

Every step goes through `step` of scripts/launch/steps.sh, which skips finished steps and records
running / exit status on disk for `mof-llava sweep status`. The scripts are plain bash, meant to be
read and edited.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text_atomic
from .expand import PlannedRun
from .layout import Step, repo_root
from .spec import LaunchSpec, SweepError, SweepSpec

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# what an `#SBATCH --output=` path may hold: SLURM reads those lines without a shell (no quoting) and
# expands % patterns (%j) in them
_SBATCH_PATH = re.compile(r"[\w@+=:,./-]+")


@dataclass
class SweepScripts:
    entry: Path  # run_all.sh or submit.sh
    per_run: dict[str, list[Path]]  # run name -> its job scripts

    def start_command(self, launch: LaunchSpec) -> str:
        if launch.launcher == "torchrun-multinode":
            return f"NODE_RANK=<0..{launch.nodes - 1}> MASTER_ADDR=<first node> bash {shlex.quote(str(self.entry))}   # on every node"
        return f"bash {shlex.quote(str(self.entry))}"


def check_slurm_paths(runs: list[PlannedRun]) -> None:
    """Every run's status folder can be written as is into an `#SBATCH --output=` line."""
    for run in runs:
        if run.preference is not None:  # its jobs would need its base run's stage-2 job
            raise SweepError(
                f"run {run.name}: preference arms have no SLURM jobs yet (they start from another run's model); "
                "plan them with a local launcher (deepspeed, torchrun, python)"
            )
        path = str(run.layout.status)
        if not _SBATCH_PATH.fullmatch(path):
            bad = sorted({c for c in path if not _SBATCH_PATH.fullmatch(c)})
            raise SweepError(
                f"run {run.name}: its folder {path} holds {bad}, which an #SBATCH --output line cannot carry "
                "(SLURM reads it without shell quoting and expands %); choose an output_root (--output-root) "
                "of letters, digits and _ @ + = : , . / -"
            )


def templates_dir() -> Path:
    path = repo_root() / "scripts" / "launch"
    if not (path / "steps.sh").is_file() or not (repo_root() / "train" / "train.py").is_file():
        raise SweepError(
            f"job scripts run train/train.py and eval/run.py of a checkout of the repository; none at {repo_root()} "
            "(install with `pip install -e .` from a clone)"
        )
    return path


def fill(template: str, **values: str) -> str:
    """The template with every `{{name}}` replaced; a name without a value is an error."""
    text = (templates_dir() / template).read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise SweepError(f"scripts/launch/{template}: no value for {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def write_scripts(
    spec: SweepSpec, runs: list[PlannedRun], selected: list[PlannedRun], root: Path
) -> SweepScripts:
    """Write the job scripts of every run, and the sweep's entry script for the `selected` runs."""
    launch = spec.launch
    per_run = {run.name: _write_run_scripts(spec, run) for run in runs}
    common = {"repo": _q(repo_root()), "sweep_file": str(spec.source)}
    if launch.launcher == "slurm":
        entry = root / "submit.sh"
        text = fill(
            "submit.sh.in",
            **common,
            entry=str(entry),
            title=f"Sweep {spec.name}: {len(selected)} run(s) on SLURM, {launch.nodes} node(s) x {launch.gpus_per_node} GPUs per training job.",
            status_target=_q(spec.output_root),
            submissions="\n".join(_submissions(run, launch) for run in selected),
        )
    else:
        entry = root / "run_all.sh"
        text = fill(
            "run_all.sh.in",
            **{**common, "how": _how(launch, entry)},
            title=f"Sweep {spec.name}: {len(selected)} run(s), {_where(launch)}.",
            lock=_lock(launch, root),
            jobs=" \\\n".join(f"  {_q(run.layout.jobs / 'run.sh')}" for run in selected),
        )
    _write_executable(entry, text)
    return SweepScripts(entry, per_run)


# -- per run ---------------------------------------------------------------------------------------------
def _write_run_scripts(spec: SweepSpec, run: PlannedRun) -> list[Path]:
    launch = spec.launch
    common = {
        "repo": _q(repo_root()),
        "sweep_file": str(spec.source),
        "run_dir": _q(run.layout.root),
        "setup": _setup(launch),
    }
    if launch.launcher != "slurm":
        path = run.layout.jobs / "run.sh"
        text = fill(
            "run.sh.in",
            **common,
            title=f"Run {run.name} of sweep {spec.name}: {_where(launch)}.",
            how=_how(launch, path),
            launch_vars=_launch_vars(launch, run),
            steps=_local_steps(launch, run),
        )
        _write_executable(path, text)
        return [path]
    paths = []
    for job, steps, nodes in _slurm_jobs(run, launch):
        path = run.layout.jobs / f"{job}.sbatch"
        options = []
        if launch.slurm.partition:
            options.append(f"#SBATCH --partition={launch.slurm.partition}")
        if launch.slurm.account:
            options.append(f"#SBATCH --account={launch.slurm.account}")
        if launch.slurm.cpus_per_task:
            options.append(f"#SBATCH --cpus-per-task={launch.slurm.cpus_per_task}")
        options += [f"#SBATCH {option}" for option in launch.slurm.extra]
        text = fill(
            "step.sbatch.in",
            **common,
            job=job,
            job_name=f"{spec.name}/{run.name}/{job}",
            nodes=str(nodes),
            gpus=str(launch.gpus_per_node),
            time=launch.slurm.time[job],
            sbatch_options="\n".join(options),
            title=f"Run {run.name} of sweep {spec.name}: {job} ({nodes} node(s) x {launch.gpus_per_node} GPUs).",
            submit_script=str(spec.output_root / "submit.sh"),
            status_dir=str(run.layout.status),  # unquoted: checked by check_slurm_paths
            steps=_slurm_launch_vars(launch, job)
            + "\n"
            + "\n".join(_step_line(s, run, launch) for s in steps),
        )
        _write_executable(path, text)
        paths.append(path)
    return paths


def _slurm_jobs(run: PlannedRun, launch: LaunchSpec) -> list[tuple[str, list[Step], int]]:
    """(job, its steps, nodes): stage 1; stage 2 (with merge-lora); the evaluation on one node."""
    by_name = {s.name: s for s in run.steps}
    stage2 = [by_name["stage2"]] + ([by_name["merge-lora"]] if "merge-lora" in by_name else [])
    evals = [s for s in run.steps if s.name.startswith("eval-")]
    jobs = [("stage1", [by_name["stage1"]], launch.nodes), ("stage2", stage2, launch.nodes)]
    return jobs + ([("eval", evals, 1)] if evals else [])


def _submissions(run: PlannedRun, launch: LaunchSpec) -> str:
    jobs = _slurm_jobs(run, launch)
    lines = [f"# {run.name}", f"RUN={_q(run.layout.root)}"]
    previous = None
    for job, steps, _ in jobs:
        pairs = " ".join(f"{s.name}:{s.artifact}" for s in steps)
        call = f'submit "$RUN" {_q(pairs)} "$RUN/jobs/{job}.sbatch"' + (f' "${previous}"' if previous else "")
        if job == jobs[-1][0]:
            lines.append(call + " > /dev/null")
        else:
            lines.append(f"{job}=$({call})")
            previous = job
    return "\n".join(lines) + "\n"


def _launch_vars(launch: LaunchSpec, run: PlannedRun) -> str:
    gpus, port = launch.gpus_per_node, launch.master_port
    eval_launcher = (
        "(python)" if launch.launcher == "python" else f"(torchrun --standalone --nproc_per_node {gpus})"
    )
    lines = []
    if launch.launcher == "deepspeed":
        train = f"(deepspeed --num_gpus {gpus} --master_port {port})"
    elif launch.launcher == "torchrun":
        train = f"(torchrun --standalone --nproc_per_node {gpus})"
    elif launch.launcher == "python":
        train = "(python)"
    elif launch.launcher == "deepspeed-hostfile":
        lines.append(
            f"# {launch.hostfile}: one line per node, `<host> slots={gpus}`; passwordless ssh from this node to the others"
        )
        train = f"(deepspeed --hostfile {_q(launch.hostfile)} --master_port {port})"
    elif launch.launcher == "torchrun-multinode":
        lines += [
            ': "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node, on every node}"',
            ': "${NODE_RANK:?set NODE_RANK: 0 on the first node, 1 .. '
            + str(launch.nodes - 1)
            + ' on the others}"',
            '[[ "$NODE_RANK" == 0 ]] || export RECORD_STATUS=0  # the first node records the status',
        ]
        # every node runs every step (the evaluation too, sharded over all GPUs), so the nodes stay in step
        train = eval_launcher = (
            f"(torchrun --nnodes {launch.nodes} --nproc_per_node {gpus} --rdzv_backend c10d "
            f'--rdzv_endpoint "$MASTER_ADDR:{port}")'
        )
    else:
        raise SweepError(f"no local job script for launcher {launch.launcher}")
    lines += [f"TRAIN={train}", f"EVAL={eval_launcher}"]
    return "\n".join(lines)


def _slurm_launch_vars(launch: LaunchSpec, job: str) -> str:
    if job == "eval":
        return f"EVAL=(torchrun --standalone --nproc_per_node {launch.gpus_per_node})"
    return "\n".join(
        [
            "# one torchrun per node (srun), rendezvous on the first node of the allocation",
            'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f'TRAIN=(srun --kill-on-bad-exit=1 torchrun --nnodes "$SLURM_NNODES" --nproc_per_node {launch.gpus_per_node} '
            f'--rdzv_backend c10d --rdzv_endpoint "$HEAD_NODE:{launch.master_port}" --rdzv_id "$SLURM_JOB_ID")',
        ]
    )


def _local_steps(launch: LaunchSpec, run: PlannedRun) -> str:
    lines = []
    for step in run.steps:
        line = _step_line(step, run, launch)
        if step.name in ("merge-lora", "negatives") and launch.launcher == "torchrun-multinode":
            # one node merges (shared folder); the others wait at the evaluation's rendezvous
            line = 'if [[ "$NODE_RANK" == 0 ]]; then\n  ' + line.replace("\n", "\n  ") + "\nfi"
        lines.append(line)
    return "\n".join(lines)


def _step_line(step: Step, run: PlannedRun, launch: LaunchSpec) -> str:
    head = f'step "$RUN" {step.name} {step.artifact} \\\n  '
    rdzv = f" --rdzv_id {run.name}-{step.name}" if launch.launcher == "torchrun-multinode" else ""
    if step.name in ("stage1", "stage2", "preference"):
        return head + f'"${{TRAIN[@]}}"{rdzv} train/train.py "$RUN/{step.name}.yaml"'
    if step.name == "merge-lora":
        return head + f'mof-llava merge-lora "$RUN/{run.trained}" "$RUN/{run.trained}/model"'
    if step.name == "negatives":
        return _negatives_line(run, head)
    bench_name = step.name[len("eval-") :]
    bench = next(b for b in run.evaluation.benchmarks if b.name == bench_name)
    args = " ".join(_q(a) for a in bench.args)
    return head + (
        f'"${{EVAL[@]}}"{rdzv} eval/run.py {bench.name} --model "$RUN/{run.trained}/model" --data {_q(bench.data)} '
        f'--output-dir "$RUN/eval/{bench.name}" --model-id {_q(run.name)}' + (f" {args}" if args else "")
    )


def _negatives_line(run: PlannedRun, head: str) -> str:
    """`mof-llava preference negatives` with the run's NegativesJob as flags, once the base run's
    model exists (run_all.sh runs the base run first; `--only` may have left it out)."""
    from ..options import to_flags

    job, base = run.negatives, run.base
    model = base.layout.root / base.trained / "model"
    guard = (
        f'step_done "$RUN" negatives {run.steps[0].artifact} || [[ -e {_q(model / "processor_config.json")} ]] || '
        f'{{ echo "[negatives] run {base.name} has no stage-2 model yet ({model}); run it first" >&2; exit 1; }}\n'
    )
    flags = " ".join(_q(f) for f in to_flags(job, "negatives"))
    return (
        guard
        + head
        + (
            f'mof-llava preference negatives {_q(job.data)} -o "$RUN/negatives/pairs.jsonl" {flags} --no-progress'
        )
    )


# -- helpers ---------------------------------------------------------------------------------------------
def _where(launch: LaunchSpec) -> str:
    if launch.launcher == "python":
        return "one process each (no launcher)"
    return f"{launch.nodes} node(s) x {launch.gpus_per_node} GPUs, launcher {launch.launcher}"


def _how(launch: LaunchSpec, path: Path) -> str:
    if launch.launcher == "torchrun-multinode":
        return (
            f"Start it on every node: NODE_RANK=<0..{launch.nodes - 1}> MASTER_ADDR=<first node> bash {path}"
        )
    if launch.launcher == "deepspeed-hostfile":
        return f"Start it on the first node of the hostfile: bash {path}"
    return f"Start it with: bash {path}"


def _lock(launch: LaunchSpec, root: Path) -> str:
    """One run_all.sh per machine at a time: a second would start the next runs on the same GPUs."""
    if launch.launcher == "torchrun-multinode":
        return "# (every node runs this script; the steps' markers keep them from starting a step twice)"
    return "\n".join(
        [
            "if command -v flock > /dev/null; then  # one at a time on this machine",
            f"  exec 9> {_q(root / '.run_all.lock')}",
            '  flock -n 9 || { echo "another run_all.sh of this sweep is running on this machine" >&2; exit 1; }',
            "fi",
        ]
    )


def _setup(launch: LaunchSpec) -> str:
    if launch.setup:
        return "\n".join(launch.setup)
    return "# (launch.setup in the sweep file: lines to run first, e.g. module load cuda; source .venv/bin/activate)"


def _q(value) -> str:
    return shlex.quote(str(value))


def _write_executable(path: Path, text: str) -> None:
    write_text_atomic(path, text)
    path.chmod(0o755)
