"""The BPO sweep (configs/experiments/sweeps/bpo_per_tower.yaml): preference arms on the LLaVA-1.5 and
I-MoF stage-2 models, the per-tower corruption ablation, the steps negatives -> preference ->
merge-lora -> evaluation in the job scripts (run here with fake launchers on PATH), and the BPO rows
of the tables beside their base models."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from experiments_helpers import EXPERIMENTS, metrics, write_metrics, write_sweep

from mof_llava.commands.dataclass_args import from_args
from mof_llava.commands.preference import add_parser
from mof_llava.experiments.expand import expand, modify
from mof_llava.experiments.plan import plan_sweep
from mof_llava.experiments.report import write_report
from mof_llava.experiments.spec import SweepError, load_sweep
from mof_llava.experiments.status import run_status
from mof_llava.preference.negatives import NegativesJob

SWEEP = EXPERIMENTS / "sweeps" / "bpo_per_tower.yaml"
BASES = {"bpo-llava-1.5-7b": "llava-1.5-7b_seed-42", "bpo-i-mof-7b": "i-mof-7b_seed-42"}
TARGETS = {  # run -> the tower weakened for its negatives
    "bpo-llava-1.5-7b_target-both_seed-42": "both",
    "bpo-i-mof-7b_target-both_seed-42": "both",
    "bpo-i-mof-7b_target-clip_seed-42": "clip",
    "bpo-i-mof-7b_target-dinov2_seed-42": "dinov2",
}
PREFERENCE_STEPS = ["negatives", "preference", "merge-lora", "eval-mmvp", "eval-pope"]

# Records its command line and writes the artifact the real command writes last.
FAKE = r"""#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
prev=""
for arg in "$@"; do
  case "$arg" in
    */stage1.yaml) mkdir -p "${arg%/*}/stage1/adapters"; echo {} > "${arg%/*}/stage1/adapters/adapters_config.json" ;;
    */stage2.yaml) mkdir -p "${arg%/*}/stage2/model"; echo {} > "${arg%/*}/stage2/model/processor_config.json" ;;
    */preference.yaml) mkdir -p "${arg%/*}/preference/lora"; echo {} > "${arg%/*}/preference/lora/adapter_config.json" ;;
  esac
  case "$prev" in
    --output-dir) mkdir -p "$arg"; echo '{"benchmark": "x", "score": 1}' > "$arg/metrics.json" ;;
    -o) mkdir -p "${arg%/*}"; echo '{}' > "$arg" ;;
  esac
  prev=$arg
done
if [[ "$1" == merge-lora ]]; then mkdir -p "$3"; echo {} > "$3/processor_config.json"; fi
"""


@pytest.fixture
def planned(tmp_path):
    return plan_sweep(modify(load_sweep(SWEEP), output_root=tmp_path / "runs"))


def _env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("deepspeed", "torchrun", "mof-llava"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt")}


def _negatives_job(command: str, run_dir: Path) -> NegativesJob:
    """The job a job script's negatives command gives, read back through the command's own parser."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    argv = shlex.split(command.replace("$RUN", str(run_dir)))
    assert argv[:3] == ["mof-llava", "preference", "negatives"]
    args = parser.parse_args(argv[1:])
    return replace(from_args(NegativesJob, args), output=args.output)


def test_the_sweep_plans_preference_runs_on_their_base_models(planned):
    runs = {r.name: r for r in planned.runs}
    assert list(runs) == ["llava-1.5-7b_seed-42", "i-mof-7b_seed-42", *TARGETS]
    for name, target in TARGETS.items():
        run, base = runs[name], runs[BASES[runs[name].record.arm]]
        model = base.layout.root / "stage2" / "model"
        assert [s.name for s in run.steps] == PREFERENCE_STEPS
        assert run.base is base and run.record.base == base.record.group
        assert (run.negatives.target, run.negatives.model, run.negatives.seed) == (target, str(model), 42)
        assert run.negatives.neg_types == ("mllm-hal", "llm-hal")
        assert run.negatives.output == str(run.layout.root / "negatives" / "pairs.jsonl")
        pref = run.preference
        assert pref.train.stage == "preference" and pref.model.init_from == str(model)
        assert (
            pref.data.data_path == run.negatives.output
            and pref.data.image_folder == run.negatives.image_folder
        )
        assert pref.train.output_dir == str(run.layout.root / "preference") and pref.train.seed == 42
        assert (run.layout.root / "preference.yaml").is_file() and not (
            run.layout.root / "stage1.yaml"
        ).exists()
    # the I-MoF runs keep their recipe's 2 pairs per GPU; the base runs are the paper's two stages
    assert runs["bpo-i-mof-7b_target-clip_seed-42"].preference.train.per_device_batch_size == 2
    assert [s.name for s in runs["i-mof-7b_seed-42"].steps] == ["stage1", "stage2", "eval-mmvp", "eval-pope"]
    # the pairs are made by the run itself: not reported missing; the seed records are
    assert "data/bpo/seeds.jsonl (negatives.data)" in planned.missing
    assert not any("negatives/pairs.jsonl" in m for m in planned.missing)


def test_the_job_script_runs_negatives_then_preference_then_eval(planned, tmp_path):
    env = _env(tmp_path)
    result = subprocess.run(["bash", str(planned.scripts.entry)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    runs = {r.name: r for r in planned.runs}
    for name in TARGETS:
        run, root = runs[name], runs[name].layout.root
        mine = [c for c in calls if f"{root}/" in c]
        assert [c.split()[0:3] for c in mine] == [
            ["mof-llava", "preference", "negatives"],
            ["deepspeed", "--num_gpus", "8"],
            ["mof-llava", "merge-lora", f"{root}/preference"],
            ["torchrun", "--standalone", "--nproc_per_node"],
            ["torchrun", "--standalone", "--nproc_per_node"],
        ]
        assert mine[1].endswith(f"train/train.py {root}/preference.yaml")
        assert f"--model {root}/preference/model" in mine[3] and f"--model {root}/preference/model" in mine[4]
        base_stage2 = calls.index(next(c for c in calls if c.endswith(f"{run.base.layout.root}/stage2.yaml")))
        assert base_stage2 < calls.index(mine[0])  # the base model is trained before its negatives
        assert {s.step: s.state for s in run_status(root).steps} == dict.fromkeys(PREFERENCE_STEPS, "done")
        script = (run.layout.jobs / "run.sh").read_text()
        command = next(
            line.strip() for line in script.splitlines() if "mof-llava preference negatives" in line
        )
        assert _negatives_job(command, root) == run.negatives
    again = subprocess.run(["bash", str(planned.scripts.entry)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and (tmp_path / "calls.txt").read_text().splitlines() == calls
    assert again.stdout.count("done before, skipped") == 2 * 4 + 4 * 5


def test_negatives_wait_for_the_base_model(tmp_path):
    plan = plan_sweep(
        modify(load_sweep(SWEEP), output_root=tmp_path / "runs"), only=["bpo-i-mof-7b_target-clip*"]
    )
    run = plan.selected[0]
    env = _env(tmp_path)
    result = subprocess.run(
        ["bash", str(run.layout.jobs / "run.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "run i-mof-7b_seed-42 has no stage-2 model yet" in result.stderr
    assert not (tmp_path / "calls.txt").exists()  # nothing started


def _preference_sweep(tmp_path: Path, arms: dict, **top) -> Path:
    base = {
        "stage1": str(EXPERIMENTS / "imof_7b" / "stage1.yaml"),
        "stage2": str(EXPERIMENTS / "imof_7b" / "stage2.yaml"),
    }
    content = {
        "name": "b",
        "output_root": str(tmp_path / "runs"),
        "seeds": [1],
        **top,
        "arms": {"i-mof": base, **arms},
    }
    return write_sweep(tmp_path / "sweep.yaml", content)


def _bpo_arm(**changes) -> dict:
    arm = {
        "base": "i-mof",
        "preference": str(EXPERIMENTS / "bpo_imof_7b" / "preference.yaml"),
        "negatives": {"data": "seeds.jsonl"},
    }
    return {**arm, **changes}


@pytest.mark.parametrize(
    ("arms", "top", "message"),
    [
        (
            {"bpo": _bpo_arm(base="nowhere")},
            {},
            r"arms.bpo.base: 'nowhere' is not a two-stage arm listed before it",
        ),
        ({"bpo": _bpo_arm(negatives={"target": "clip"})}, {}, r"arms.bpo.negatives: `data` .* is missing"),
        (
            {"bpo": _bpo_arm(negatives={"data": "s.jsonl", "output": "x"})},
            {},
            r"negatives \['output'\]: not a negatives setting",
        ),
        (
            {"bpo": _bpo_arm(negatives={"data": "s.jsonl", "batch_size": "many"})},
            {},
            r"run bpo_seed-1: negatives.*batch_size",
        ),
        (
            {"bpo": _bpo_arm(set={"negatives.seed": 3})},
            {},
            r"sets negatives.seed, which its seeds \[1\] replace",
        ),
        (
            {"bpo": _bpo_arm(negatives={"data": "s.jsonl", "seed": 3})},
            {},
            "negatives seed 3: the run's seed 1 seeds",
        ),
        (
            {"bpo": _bpo_arm(set={"stage2.train.num_epochs": 1})},
            {},
            "sets stage2.train.num_epochs, but a preference arm",
        ),
        (
            {"bpo": _bpo_arm(preference=str(EXPERIMENTS / "imof_7b" / "stage2.yaml"))},
            {},
            "must be a preference config",
        ),
        ({"bpo": _bpo_arm(seeds=[2])}, {}, "arm i-mof has no run i-mof_seed-2 to start from"),
        ({"bpo": _bpo_arm(stage1="x.yaml")}, {}, "a preference arm .* has no stage1 or stage2"),
    ],
)
def test_preference_arms_that_cannot_work_are_refused(tmp_path, arms, top, message):
    with pytest.raises(SweepError, match=message):
        expand(load_sweep(_preference_sweep(tmp_path, arms, **top)))


def test_negatives_keys_belong_to_preference_arms_and_slurm_is_refused(tmp_path):
    arm = {"set": {"negatives.target": "clip"}}
    path = _preference_sweep(tmp_path, {})
    spec = load_sweep(path)
    spec = replace(spec, arms=(replace(spec.arms[0], set=arm["set"]),))
    with pytest.raises(SweepError, match="arm i-mof sets negatives.target, but only a preference arm"):
        expand(spec)
    # the sweep's own negatives axis reaches the preference arms only (the base stays one model)
    runs = expand(
        modify(
            load_sweep(_preference_sweep(tmp_path, {"bpo": _bpo_arm()})),
            grid=[("negatives.target", ["clip", "dinov2"])],
        )
    )
    assert [r.name for r in runs] == ["i-mof_seed-1", "bpo_target-clip_seed-1", "bpo_target-dinov2_seed-1"]
    # an arm's unprefixed settings reach its preference config, not its base
    set_arm = _bpo_arm(set={"train.num_epochs": 3})
    (_, run) = expand(load_sweep(_preference_sweep(tmp_path, {"bpo": set_arm})))
    assert (run.preference.train.num_epochs, run.base.stage2.train.num_epochs) == (3, 1)  # not the base
    # a sweep-level stage2. key is the two-stage arms': it never reaches a preference run's config
    staged = _preference_sweep(tmp_path, {"bpo": _bpo_arm()}, set={"stage2.train.num_epochs": 5})
    (base, run) = expand(load_sweep(staged))
    assert (base.stage2.train.num_epochs, run.preference.train.num_epochs) == (5, 2)  # 2: preference.yaml's
    slurm = _preference_sweep(tmp_path, {"bpo": _bpo_arm()}, launch={"launcher": "slurm"})
    with pytest.raises(SweepError, match="preference arms have no SLURM jobs yet"):
        plan_sweep(load_sweep(slurm))


SCORES = {  # group -> (MMVP, POPE), planted
    "llava-1.5-7b": (24.0, 85.9),
    "i-mof-7b": (31.3, 86.3),
    "bpo-llava-1.5-7b_target-both": (25.0, 87.5),
    "bpo-i-mof-7b_target-both": (32.0, 88.0),
    "bpo-i-mof-7b_target-clip": (30.0, 87.0),
    "bpo-i-mof-7b_target-dinov2": (33.5, 86.5),
}


def test_tables_show_the_bpo_rows_below_their_base_models(planned, tmp_path):
    for run in planned.runs:
        mode, towers = ("interleave", ("clip", "dinov2")) if "i-mof" in run.name else ("none", ("clip",))
        for bench, score in zip(("mmvp", "pope"), SCORES[run.record.group]):
            write_metrics(run.layout.root, metrics(bench, score, mode, towers=towers))
    report = write_report([planned.root], tmp_path / "tables", proxy=None)
    text = (report.out_dir / "main.md").read_text()
    rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]
    assert rows[0] == ["model", "mixer", "runs", "MMVP", "POPE"]
    order = [
        "llava-1.5-7b",
        "bpo-llava-1.5-7b_target-both",
        "i-mof-7b",
        "bpo-i-mof-7b_target-both",
        "bpo-i-mof-7b_target-clip",
        "bpo-i-mof-7b_target-dinov2",
    ]
    body = [r for r in rows[1:] if not set(r[0]) <= set("-: ")]
    assert body == [
        [g, "interleave" if "i-mof" in g else "none", "1", f"{SCORES[g][0]:.1f}", f"{SCORES[g][1]:.1f}"]
        for g in order
    ]
    assert "bpo-i-mof-7b_target-clip from i-mof-7b" in text
    assert "bpo-llava-1.5-7b_target-both from llava-1.5-7b" in text
