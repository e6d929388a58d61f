"""A packed run killed mid-epoch resumes exactly: the packed order is a function of seed and epoch, the
resumed epoch skips the micro-batches already trained, and the next epoch gets its own order."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from toydata import run_config

from mof_llava.training import checkpoints

HERE = Path(__file__).parent


def _launch(config_path, *extra):
    cmd = [sys.executable, str(HERE / "run_until.py"), str(config_path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


@pytest.mark.slow
def test_killed_packed_run_resumes_with_identical_losses(tiny_parts, toy_data, tmp_path):
    # 16 stage-2 samples, 4 per step: 4 steps per epoch; killed after step 4, resumed from checkpoint-3
    # (one step of epoch 0 left to skip to), then steps 5-6 in epoch 1.
    for name in ("straight", "killed"):
        config = run_config(tiny_parts, toy_data, tmp_path / name, stage="finetune", max_steps=6, save_steps=3)
        config.data = replace(config.data, packing=True)
        config.save(tmp_path / f"{name}.yaml")
    straight = _launch(tmp_path / "straight.yaml")
    assert straight.returncode == 0, straight.stderr[-3000:]
    died = _launch(tmp_path / "killed.yaml", "--die-after-step", "4")
    assert died.returncode == 137
    assert checkpoints.latest_complete_checkpoint(tmp_path / "killed") == tmp_path / "killed" / "checkpoint-3"
    resumed = _launch(tmp_path / "killed.yaml")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-3" in resumed.stderr

    expected, got = _losses(tmp_path / "straight"), _losses(tmp_path / "killed")
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"
