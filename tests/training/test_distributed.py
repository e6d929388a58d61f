"""Two processes on CPU (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3 through the Trainer. Every step one rank
gets an image sample and the other a text-only one; nothing hangs and both ranks end with identical weights.
The ZeRO runs' checkpoints then pass the pickle check, and a resume from one with a planted pickle (which
DeepSpeed would unpickle with weights_only=False) is refused on both ranks without running it."""

import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from toydata import run_config, write_dataset

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "stage"),
    [("ddp", "finetune"), ("zero2", "pretrain"), ("zero2", "finetune"), ("zero3", "finetune")],
)
def test_two_ranks_stay_identical_with_a_text_only_rank(tiny_parts, tmp_path, mode, stage):
    data = write_dataset(tmp_path / "data", n_images=1, n_text=1)  # one image + one text-only sample per step
    overrides = {
        "global_batch_size": 2, "per_device_batch_size": 1, "max_steps": 3, "save_steps": 100,
        "learning_rate": 1e-3,
    }
    if mode != "ddp":
        overrides["deepspeed"] = str(ROOT / "configs" / "deepspeed" / f"{mode}.json")
    config = run_config(tiny_parts, data, tmp_path / "run", stage=stage, **overrides)
    # Plain shuffling of one image + one text-only sample: every step one rank has no image. Stage 1 gets
    # the mixed file too (its caption file has no text-only samples).
    config.data = replace(config.data, data_path=str(data["finetune"]), template="vicuna_v1",
                          group_by_modality_length=False)
    config.save(tmp_path / "run.yaml")

    done = _launch(tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["trainer_world_size"] for r in reports] == [2, 2]
    assert [r["deepspeed"] for r in reports] == [mode != "ddp"] * 2
    assert [r["global_step"] for r in reports] == [3, 3]
    assert reports[0]["digest"] == reports[1]["digest"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # finite, one per step
    if mode != "ddp" and stage == "finetune":
        _resume_with_a_planted_pickle_is_refused(tmp_path)


def _launch(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "distributed_worker.py"), str(tmp_path / "run.yaml"),
           str(tmp_path), *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _resume_with_a_planted_pickle_is_refused(tmp_path):
    import torch

    from mof_llava.safe_load import check_checkpoint

    checkpoint = tmp_path / "run" / "checkpoint-3"
    shards = sorted((checkpoint / "global_step3").glob("*optim_states.pt"))
    assert len(shards) == 2 and len(check_checkpoint(checkpoint)) >= 4  # DeepSpeed's real files pass the check
    marker = tmp_path / "MARKER-the-pickle-ran"
    state = torch.load(shards[1], weights_only=False)  # our own file, just written
    state["planted"] = _Planted(marker)
    torch.save(state, shards[1])
    resumed = _launch(tmp_path, "train.max_steps=4")
    assert resumed.returncode != 0
    assert f"{shards[1]}: refused to load, it holds the global(s) io.open" in resumed.stderr
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoint-4").exists()


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
