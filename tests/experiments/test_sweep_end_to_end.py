"""The real path a user pays GPU hours for, on CPU: the shipped A-MoF stage configs, pointed at tiny
models and the demo's data, swept over alpha, launched with `mof-llava sweep launch` (bash job
scripts -> train/train.py stage 1 -> stage 2 -> eval/run.py), then `sweep status` and `tables`."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from experiments_helpers import EXPERIMENTS, write_sweep

from mof_llava.experiments.status import sweep_status

ALPHAS = (0.0, 1.0)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    from mof_llava.cli import main
    from mof_llava.demo.synthetic import DatasetSizes, write_dataset
    from mof_llava.testing.tiny import save_tiny_checkpoints

    tmp = tmp_path_factory.mktemp("sweep")
    tiny = save_tiny_checkpoints(tmp / "components")
    data = write_dataset(tmp / "data", seed=3, sizes=DatasetSizes(pretrain=32, instruct=32, mmvp_pairs=3))
    sweep = write_sweep(
        tmp / "sweep.yaml",
        {
            "name": "cpu-rehearsal",
            "output_root": str(tmp / "runs"),
            "seeds": [5],
            "evaluation": {
                "benchmarks": {
                    "mmvp": {
                        "data": str(data.mmvp_dir),
                        "args": ["--device", "cpu", "--max-new-tokens", 4, "--no-progress"],
                    }
                }
            },
            "launch": {
                "launcher": "python",
                "setup": [f"export PATH={Path(sys.executable).parent}:$PATH", "export HF_HUB_OFFLINE=1"],
            },
            # the paper's A-MoF configs, with tiny models, tiny data and CPU settings
            "set": {
                "model.llm": str(tiny.llm),
                "model.towers": [
                    {"name": "clip", "path": str(tiny.clip), "feature_layer": -2},
                    {
                        "name": "dinov2",
                        "path": str(tiny.dinov2),
                        "feature_layer": -1,
                        "normalization": "shared",
                    },
                ],
                "stage1.data.data_path": str(data.pretrain_file),
                "stage2.data.data_path": str(data.instruct_file),
                "data.image_folder": str(data.image_folder),
                "data.max_length": 512,
                "data.cache_dir": str(tmp / "cache"),
                "train.deepspeed": None,
                "train.global_batch_size": 8,
                "train.per_device_batch_size": 8,
                "train.gradient_checkpointing": False,
                "train.report_to": "none",
                "train.dataloader_num_workers": 0,
            },
            "arms": {
                "a-mof": {
                    "stage1": str(EXPERIMENTS / "amof_7b" / "stage1.yaml"),
                    "stage2": str(EXPERIMENTS / "amof_7b" / "stage2.yaml"),
                    "grid": {"model.mixer.alpha": list(ALPHAS)},
                }
            },
        },
    )
    code = main(["sweep", "launch", str(sweep)])
    return tmp, sweep, code


@pytest.mark.slow
def test_launch_runs_every_step_of_every_run(launched):
    tmp, _, code = launched
    assert code == 0
    runs = sweep_status(tmp / "runs")
    assert [r.name for r in runs] == ["a-mof_alpha-0_seed-5", "a-mof_alpha-1_seed-5"]
    for run in runs:
        assert [(s.step, s.state) for s in run.steps] == [
            ("stage1", "done"),
            ("stage2", "done"),
            ("eval-mmvp", "done"),
        ]


@pytest.mark.slow
def test_each_run_trained_its_own_alpha_and_loaded_its_own_adapters(launched):
    tmp, _, _ = launched
    for alpha in ALPHAS:
        folder = tmp / "runs" / f"a-mof_alpha-{alpha:g}_seed-5"
        stage1 = yaml.safe_load((folder / "stage1" / "run_config.yaml").read_text())
        stage2 = yaml.safe_load((folder / "stage2" / "run_config.yaml").read_text())
        assert stage1["model"]["mixer"]["alpha"] == stage2["model"]["mixer"]["alpha"] == alpha
        assert stage2["model"]["adapters_from"] == str(folder / "stage1" / "adapters")
        assert (
            stage1["train"]["seed"],
            stage1["train"]["learning_rate"],
            stage2["train"]["learning_rate"],
        ) == (5, 1e-3, 2e-5)
        saved = json.loads((folder / "stage2" / "model" / "config.json").read_text())
        assert saved["mixer"]["mode"] == "additive" and saved["mixer"]["alpha"] == alpha
        answers = [
            json.loads(line) for line in (folder / "eval" / "mmvp" / "answers.jsonl").read_text().splitlines()
        ]
        assert len(answers) == 6 and {a["model_id"] for a in answers} == {folder.name}
        assert "exit status 0" in (folder / "status" / "stage1.log").read_text()


@pytest.mark.slow
def test_tables_from_the_launched_sweep(launched, tmp_path):
    from mof_llava.cli import main

    tmp, _, _ = launched
    assert main(["tables", str(tmp / "runs"), "--out", str(tmp_path / "tables")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tables" / "amof_ratio.csv").read_text())))
    assert [float(r["alpha"]) for r in rows] == list(ALPHAS)
    for row, alpha in zip(rows, ALPHAS):
        metrics = json.loads(
            (tmp / "runs" / f"a-mof_alpha-{alpha:g}_seed-5" / "eval" / "mmvp" / "metrics.json").read_text()
        )
        assert float(row["mmvp_mean"]) == metrics["score"] and row["mmvp_n"] == "1"
    assert (tmp_path / "tables" / "mmvp_vs_alpha.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_launching_again_skips_what_is_done(launched, capfd):
    from mof_llava.cli import main

    tmp, sweep, _ = launched
    adapters = tmp / "runs" / "a-mof_alpha-1_seed-5" / "stage1" / "adapters" / "adapters.safetensors"
    before = adapters.stat().st_mtime_ns
    capfd.readouterr()
    assert main(["sweep", "launch", str(sweep)]) == 0
    out = capfd.readouterr().out
    assert out.count("done before, skipped") == 6 and "all runs finished" in out
    assert adapters.stat().st_mtime_ns == before
