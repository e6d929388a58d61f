"""A sweep file into runs: names, per-run output folders, stage 2 on its own stage 1, overrides, errors,
and the run folders `plan` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from experiments_helpers import EXPERIMENTS, write_sweep

from mof_llava.experiments.expand import expand, modify, select
from mof_llava.experiments.plan import plan_sweep
from mof_llava.experiments.spec import SweepError, load_sweep, parse_assignment, parse_seeds
from mof_llava.training.config import load_run_config

PAPER = EXPERIMENTS / "sweeps" / "paper.yaml"
ALPHAS = [0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0]


@pytest.fixture(scope="module")
def paper_runs():
    return {run.name: run for run in expand(load_sweep(PAPER))}


def test_the_paper_sweep_has_every_run_of_the_paper(paper_runs):
    expected = {f"{arm}_seed-42" for arm in ("llava-1.5-7b", "i-mof-7b", "llava-1.5-13b", "i-mof-13b")}
    expected |= {f"a-mof-7b_alpha-{a:g}_seed-42" for a in ALPHAS}
    assert set(paper_runs) == expected
    alphas = sorted(
        r.stage1.model.mixer.alpha for r in paper_runs.values() if r.stage1.model.mixer.mode == "additive"
    )
    assert alphas == [float(a) for a in ALPHAS]
    for run in paper_runs.values():
        assert run.evaluation.names == ["mmvp", "pope", "mmbench", "gqa"]
        assert run.stage1.train.seed == run.stage2.train.seed == 42 == run.record.seed


def test_every_run_has_its_own_folders_and_stage2_loads_its_own_stage1(paper_runs):
    outputs = []
    for run in paper_runs.values():
        root = run.layout.root
        assert root.name == run.name
        assert run.stage1.train.output_dir == str(root / "stage1")
        assert run.stage2.train.output_dir == str(root / "stage2")
        assert run.stage2.model.adapters_from == str(root / "stage1" / "adapters")
        assert (
            run.stage1.model.mixer == run.stage2.model.mixer
            and run.stage1.model.towers == run.stage2.model.towers
        )
        outputs += [run.stage1.train.output_dir, run.stage2.train.output_dir]
    assert len(set(outputs)) == len(outputs) == 2 * len(paper_runs)


def test_arms_keep_the_recipe_of_their_configs(paper_runs):
    imof = paper_runs["i-mof-13b_seed-42"]
    assert imof.stage2.model.llm == "lmsys/vicuna-13b-v1.5" and imof.stage2.model.mixer.mode == "interleave"
    assert (imof.stage1.train.global_batch_size, imof.stage1.train.learning_rate) == (256, 1e-3)
    assert (imof.stage2.train.global_batch_size, imof.stage2.train.learning_rate) == (128, 2e-5)
    amof = paper_runs["a-mof-7b_alpha-0.75_seed-42"]
    assert [t.name for t in amof.stage1.model.towers] == ["clip", "dinov2"]
    assert amof.record.group == "a-mof-7b_alpha-0.75" and amof.record.point == {"model.mixer.alpha": 0.75}


def test_seeds_from_the_command_line_multiply_runs_and_share_groups():
    spec = modify(load_sweep(PAPER), seeds=parse_seeds("1,2,3"))
    runs = [r for r in expand(spec) if r.record.group == "i-mof-7b"]
    assert [r.name for r in runs] == ["i-mof-7b_seed-1", "i-mof-7b_seed-2", "i-mof-7b_seed-3"]
    assert [(r.stage1.train.seed, r.stage2.train.seed) for r in runs] == [(1, 1), (2, 2), (3, 3)]


def test_a_seed_set_where_the_sweeps_seeds_would_replace_it_is_refused(tmp_path):
    # the paper sweep has seeds: [42], which would silently replace train.seed=7
    for key in ("train.seed", "stage1.train.seed"):
        with pytest.raises(SweepError, match=f"--set {key}: .* give it with --seeds 7"):
            modify(load_sweep(PAPER), settings=[parse_assignment(f"{key}=7", "--set")])
    with pytest.raises(SweepError, match="--set train.seed: .* --seeds 7"):
        modify(load_sweep(PAPER), settings=[("train.seed", 7)], seeds=(1, 2))
    path = _sweep(tmp_path, seeds=[1], set={"stage2.train.seed": 7})
    with pytest.raises(SweepError, match="arm a-mof sets stage2.train.seed, which its seeds \\[1\\] replace"):
        expand(load_sweep(path))
    # without seeds nothing replaces it: the value is used
    runs = expand(modify(load_sweep(_sweep(tmp_path)), settings=[("train.seed", 7)]))
    assert [(r.stage1.train.seed, r.stage2.train.seed, r.record.seed) for r in runs] == [(7, 7, 7)] * 2


def test_grid_and_set_from_the_command_line():
    spec = modify(
        load_sweep(PAPER),
        grid=[parse_assignment("train.learning_rate=[1.0e-5, 2.0e-5]", "--grid")],
        settings=[parse_assignment("stage1.train.per_device_batch_size=8", "--set")],
    )
    runs = select(expand(spec), ["llava-1.5-7b*"])
    assert [r.name for r in runs] == [
        "llava-1.5-7b_learning_rate-1e-05_seed-42",
        "llava-1.5-7b_learning_rate-2e-05_seed-42",
    ]
    for run, lr in zip(runs, (1e-5, 2e-5)):
        assert run.stage1.train.learning_rate == run.stage2.train.learning_rate == lr
        # a stage1. prefix reaches stage 1 only
        assert (run.stage1.train.per_device_batch_size, run.stage2.train.per_device_batch_size) == (8, 16)


def test_the_command_line_wins_over_the_arms_grid_and_set(tmp_path):
    # the arm sweeps alpha and sets the learning rate itself: --grid and --set must still reach it
    arm_set = {"train.learning_rate": 1.0e-4}
    path = _sweep(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["arms"]["a-mof"]["set"] = arm_set
    path = write_sweep(path, raw)
    spec = modify(
        load_sweep(path),
        grid=[parse_assignment("model.mixer.alpha=[0.5]", "--grid")],
        settings=[parse_assignment("train.learning_rate=3e-5", "--set")],
    )
    runs = expand(spec)
    assert [r.name for r in runs] == ["a-mof_alpha-0.5"]
    assert runs[0].stage1.model.mixer.alpha == 0.5 and runs[0].stage1.train.learning_rate == 3e-5
    with pytest.raises(SweepError, match="--set model.mixer.alpha: arm a-mof sweeps this key"):
        modify(load_sweep(path), settings=[("model.mixer.alpha", 0.5)])


def test_seeds_on_the_command_line_replace_the_arms_own(tmp_path):
    path = _sweep(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["seeds"], raw["arms"]["a-mof"]["seeds"] = [42], [1]
    path = write_sweep(path, raw)
    assert {r.stage1.train.seed for r in expand(load_sweep(path))} == {1}  # the arm's own wins over the file's
    runs = expand(modify(load_sweep(path), seeds=(5, 6)))
    assert sorted((r.stage1.train.seed, r.stage2.train.seed) for r in runs) == [(5, 5), (5, 5), (6, 6), (6, 6)]


def test_a_grid_over_towers_names_its_values(tmp_path):
    spec = load_sweep(EXPERIMENTS / "sweeps" / "dinov2_normalization.yaml")
    runs = {r.name: r for r in expand(spec)}
    assert set(runs) == {"i-mof-7b_towers-shared_seed-42", "i-mof-7b_towers-own_seed-42"}
    for label in ("shared", "own"):
        run = runs[f"i-mof-7b_towers-{label}_seed-42"]
        assert [t.normalization for t in run.stage2.model.towers] == ["shared", label]
        assert run.stage1.model.towers == run.stage2.model.towers


def _sweep(tmp_path: Path, **changes) -> Path:
    content = {
        "name": "tiny",
        "output_root": str(tmp_path / "runs"),
        "arms": {
            "a-mof": {
                "stage1": str(EXPERIMENTS / "amof_7b" / "stage1.yaml"),
                "stage2": str(EXPERIMENTS / "amof_7b" / "stage2.yaml"),
                "grid": {"model.mixer.alpha": [0, 1]},
            }
        },
    }
    content.update(changes)
    return write_sweep(tmp_path / "sweep.yaml", content)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"evalution": {}}, "unknown keys \\['evalution'\\]"),
        ({"arms": {"x": {"stage1": "a.yaml"}}}, "`stage2` must name a run config file"),
        ({"set": {"optimizer.lr": 1}}, "'optimizer.lr' is not a run-config key"),
        ({"grid": {"model.towers": [[{"name": "clip"}]]}}, "is not a scalar; name each value"),
        ({"grid": {"model.mixer.alpha": [0.5, 0.5]}}, "repeated values"),
        ({"seeds": [1, 1]}, "repeated seeds"),
        ({"launch": {"launcher": "mpirun"}}, "launcher 'mpirun' is not one of"),
        ({"evaluation": {"benchmarks": {"mmvp-vlm": {"data": "x"}}}}, "unknown benchmark"),
        ({"name": "has space"}, "cannot name a run folder"),
    ],
)
def test_bad_sweep_files_say_what_is_wrong(tmp_path, changes, message):
    path = _sweep(tmp_path, **changes)
    with pytest.raises(SweepError, match=message) as info:
        expand(load_sweep(path))
    assert str(path) in str(info.value)


def test_stages_that_would_not_fit_are_refused(tmp_path):
    spec = load_sweep(_sweep(tmp_path, set={"stage2.model.mixer.alpha": 0.3}))
    with pytest.raises(SweepError, match="model.mixer differs between stage 1 and stage 2"):
        expand(spec)
    spec = load_sweep(_sweep(tmp_path, set={"train.learning_rate": "fast"}))
    with pytest.raises(SweepError, match="run a-mof_alpha-0, stage 1: .*train.learning_rate"):
        expand(spec)


def test_global_batch_must_divide_over_the_launch(tmp_path):
    launch = {"launcher": "torchrun-multinode", "nodes": 2, "gpus_per_node": 8}
    spec = load_sweep(_sweep(tmp_path, launch=launch))
    with pytest.raises(SweepError, match="per_device_batch_size=32 x 16 device"):
        plan_sweep(spec)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun", "python"])
def test_one_node_launchers_refuse_several_nodes(tmp_path, launcher):
    spec = load_sweep(_sweep(tmp_path, launch={"launcher": launcher, "nodes": 2, "gpus_per_node": 4}))
    with pytest.raises(SweepError, match=f"launcher {launcher} runs on one node, not 2"):
        plan_sweep(spec)
    assert not (tmp_path / "runs").exists()


def test_plan_writes_run_folders_that_read_back(tmp_path):
    plan = plan_sweep(load_sweep(_sweep(tmp_path, seeds=[3])))
    for run, alpha in zip(plan.runs, (0.0, 1.0)):
        folder = tmp_path / "runs" / f"a-mof_alpha-{alpha:g}_seed-3"
        assert run.layout.root == folder
        stage1, stage2 = load_run_config(folder / "stage1.yaml"), load_run_config(folder / "stage2.yaml")
        assert stage1.to_dict() == run.stage1.to_dict() and stage2.to_dict() == run.stage2.to_dict()
        assert stage2.model.adapters_from == str(folder / "stage1" / "adapters")
        assert (stage1.model.mixer.alpha, stage1.train.seed, stage1.name) == (
            alpha,
            3,
            f"{folder.name}-stage1",
        )
        record = json.loads((folder / "experiment.json").read_text())
        assert record["group"] == f"a-mof_alpha-{alpha:g}" and record["seed"] == 3
        assert [s["name"] for s in record["steps"]] == ["stage1", "stage2"]
    summary = json.loads((tmp_path / "runs" / "plan.json").read_text())
    assert summary["runs"] == [r.name for r in plan.runs] and summary["launcher"] == "deepspeed"


def test_a_started_run_keeps_its_config_unless_forced(tmp_path):
    path = _sweep(tmp_path)
    plan_sweep(load_sweep(path))
    plan_sweep(load_sweep(path))  # unchanged: fine
    folder = tmp_path / "runs" / "a-mof_alpha-0"
    (folder / "stage1").mkdir()  # the run has started
    changed = modify(load_sweep(path), settings=[("train.learning_rate", 5e-4)])
    with pytest.raises(SweepError, match="run a-mof_alpha-0 has started.*train.learning_rate"):
        plan_sweep(changed)
    assert load_run_config(folder / "stage1.yaml").train.learning_rate == 1e-3
    plan_sweep(changed, force=True)
    assert load_run_config(folder / "stage1.yaml").train.learning_rate == 5e-4


def test_the_resolved_config_says_where_it_came_from(tmp_path):
    plan_sweep(load_sweep(_sweep(tmp_path)))
    text = (tmp_path / "runs" / "a-mof_alpha-1" / "stage2.yaml").read_text()
    assert text.startswith("# a-mof_alpha-1, stage 2: resolved from ")
    assert yaml.safe_load(text)["model"]["mixer"]["alpha"] == 1.0


def test_select_refuses_patterns_matching_nothing(paper_runs):
    with pytest.raises(SweepError, match="no run matches"):
        select(list(paper_runs.values()), ["z-mof*"])
    assert len(select(list(paper_runs.values()), ["a-mof-7b_alpha-0.*"])) == 5


def test_the_commands_plan_and_refuse_to_launch_without_data(tmp_path, capsys):
    from mof_llava.cli import main

    root = tmp_path / "paper"
    assert main(["sweep", "plan", str(PAPER), "--output-root", str(root), "--only", "i-mof-7b*"]) == 0
    printed = capsys.readouterr()
    assert (
        " * i-mof-7b_seed-42  (stage1, stage2, eval-mmvp, eval-pope, eval-mmbench, eval-gqa)" in printed.out
    )
    assert (
        "   llava-1.5-7b_seed-42" in printed.out and f"start with: bash {root / 'run_all.sh'}" in printed.out
    )
    assert "warning: not found: data/llava_v1_5_mix665k.json (data.data_path)" in printed.err
    assert str(root / "i-mof-7b_seed-42" / "jobs" / "run.sh") in (root / "run_all.sh").read_text()
    assert "llava-1.5-7b_seed-42/jobs" not in (root / "run_all.sh").read_text()
    with pytest.raises(SystemExit, match="not launched, data not found"):
        main(["sweep", "launch", str(PAPER), "--output-root", str(root)])
    capsys.readouterr()
    # a dry run only prints: missing data is a warning there, not a refusal
    assert main(["sweep", "launch", str(PAPER), "--output-root", str(root), "--dry-run"]) == 0
    printed = capsys.readouterr()
    assert "warning: data not found" in printed.out and "would be refused" in printed.out
    assert "warning: not found: data/llava_v1_5_mix665k.json (data.data_path)" in printed.err
    assert f"dry run; would start: bash {root / 'run_all.sh'}" in printed.out
    assert (
        main(["sweep", "launch", str(PAPER), "--output-root", str(root), "--dry-run", "--skip-data-check"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "warning: data not found" not in printed
    assert f"dry run; would start: bash {root / 'run_all.sh'}" in printed
    with pytest.raises(SystemExit, match="--launcher: launcher 'mpi' is not one of"):
        main(["sweep", "plan", str(PAPER), "--output-root", str(root), "--launcher", "mpi"])
    with pytest.raises(SystemExit, match="--grid 'model.mixer.alpha': expected KEY=VALUE"):
        main(["sweep", "plan", str(PAPER), "--output-root", str(root), "--grid", "model.mixer.alpha"])
