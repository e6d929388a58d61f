"""The sweep verbs and `tables` called from Python, without argv (mof_llava.experiments.api)."""

from __future__ import annotations

import pytest
from experiments_helpers import EXPERIMENTS, metrics, plant_run, write_metrics

from mof_llava.experiments import api as sweep
from mof_llava.experiments.spec import SweepError

PAPER = EXPERIMENTS / "sweeps" / "paper.yaml"


def test_plan_launch_and_status(tmp_path):
    root = tmp_path / "paper"
    options = sweep.SweepOptions(PAPER, seeds=(1, 2), only=("i-mof-7b*",), output_root=root)
    plan = sweep.plan(options)
    assert len(plan.runs) == 2 * 11  # the paper's 11 runs (test_sweep_expansion), once per seed
    assert {r.name for r in plan.selected} == {"i-mof-7b_seed-1", "i-mof-7b_seed-2"}
    assert (root / "i-mof-7b_seed-2" / "jobs" / "run.sh").is_file()
    assert any("data.data_path" in item for item in plan.missing)

    dry = sweep.launch(sweep.LaunchOptions(options, dry_run=True))
    assert (dry.started, dry.command, dry.returncode) == (False, f"bash {root / 'run_all.sh'}", 0)
    with pytest.raises(SweepError, match="not launched, data not found"):
        sweep.launch(sweep.LaunchOptions(options), planned=plan)

    runs = sweep.status(root)
    assert sorted(r.name for r in runs) == sorted(r.name for r in plan.runs)
    assert {r.state for r in runs} == {"pending"}  # nothing was started
    record = runs[0].to_json()
    assert record["run"] == runs[0].name and record["folder"] == str(runs[0].folder)
    assert [s["step"] for s in record["steps"]] == [s.step for s in runs[0].steps]
    with pytest.raises(SweepError, match="no such folder"):
        sweep.status(tmp_path / "nowhere")


def test_launch_options_are_checked(tmp_path):
    base = {"output_root": tmp_path / "x"}
    with pytest.raises(SweepError, match="--nodes must be at least 1"):
        sweep.plan(sweep.SweepOptions(PAPER, nodes=0, **base))
    with pytest.raises(SweepError, match="--grid 'model.mixer.alpha': expected KEY=VALUE"):
        sweep.plan(sweep.SweepOptions(PAPER, grid=("model.mixer.alpha",), **base))
    assert sweep.spec(sweep.SweepOptions(PAPER, gpus_per_node=3, **base)).launch.gpus_per_node == 3
    assert not (tmp_path / "x").exists()


def test_tables_default_to_a_folder_beside_the_results(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    for seed, score in ((1, 20.0), (2, 30.0)):
        run = plant_run(root, f"llava-1.5-7b_seed-{seed}", "llava-1.5-7b", "llava-1.5-7b", seed)
        write_metrics(run, metrics("mmvp", score))
    report = sweep.tables(sweep.TablesOptions([root], proxy=None))
    assert report.out_dir == root / "tables" and (root / "tables" / "main.md").is_file()
    assert "25.0" in report.text  # the mean of the two seeds
    monkeypatch.chdir(tmp_path)
    one_file = root / "llava-1.5-7b_seed-1" / "eval" / "mmvp" / "metrics.json"
    sweep.tables(sweep.TablesOptions([one_file], proxy=None))
    assert (tmp_path / "tables" / "main.md").is_file()  # ./tables for a metrics file
