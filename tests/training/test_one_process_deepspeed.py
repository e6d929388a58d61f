"""`mof-llava train CONFIG` with a DeepSpeed config and no launcher: one process, rendezvous set for a
world of one (DeepSpeed would otherwise look for MPI and fail with `No module named 'mpi4py'`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toydata import run_config, write_dataset

from mof_llava.training.rendezvous import RENDEZVOUS_VARIABLES, set_single_process_rendezvous

ROOT = Path(__file__).resolve().parents[2]


def test_rendezvous_is_set_only_without_a_launcher():
    environ = {}
    assert set_single_process_rendezvous(environ)
    assert {k: environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    assert 0 < int(environ["MASTER_PORT"]) < 65536
    kept = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    environ = dict(kept)
    assert set_single_process_rendezvous(environ) and {k: environ[k] for k in kept} == kept
    # torchrun/deepspeed set the rank variables; MPI and srun start several processes without them
    for launched in ({"RANK": "3", "WORLD_SIZE": "8"}, {"LOCAL_RANK": "0"}, {"OMPI_COMM_WORLD_SIZE": "4"},
                     {"SLURM_NTASKS": "8"}):
        environ = dict(launched)
        assert not set_single_process_rendezvous(environ) and environ == launched


@pytest.mark.slow
def test_one_process_zero2_run_without_a_launcher(tiny_parts, tmp_path):
    data = write_dataset(tmp_path / "data", n_images=4, n_text=0)
    config = run_config(tiny_parts, data, tmp_path / "run", stage="pretrain", global_batch_size=2,
                        per_device_batch_size=2, max_steps=2, save_steps=100,
                        deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"))
    config.save(tmp_path / "run.yaml")
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MOF_LLAVA_TRACEBACK="1")
    done = subprocess.run([sys.executable, "-m", "mof_llava.cli", "train", str(tmp_path / "run.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    assert f"artifact: {tmp_path / 'run' / 'adapters'}" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
