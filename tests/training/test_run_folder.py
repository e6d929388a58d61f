"""The run folder: one launch at a time, a finished run run again trains nothing, a fresh start moves the
old run aside, a resume with other settings or other data is refused (or applied and logged), and a
full disk while writing a checkpoint stops with one line and leaves no COMPLETE checkpoint."""

import dataclasses
import errno
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from toydata import run_config, write_dataset

from mof_llava.data.config import DataConfig
from mof_llava.training import checkpoints
from mof_llava.training.config import ConfigError, TrainConfig
from mof_llava.training.run import _check_resumable_config, train
from mof_llava.training.run_folder import (
    RESUME_APPLIED,
    RESUME_FREE,
    RESUME_REFUSED,
    RunFolderError,
    RunLock,
)
from mof_llava.training.trainer import CheckpointWriteError

HOLD_LOCK = "import sys, time; from mof_llava.training.run_folder import RunLock; RunLock(sys.argv[1]).acquire(); " \
            "print('held', flush=True); time.sleep(600)"


class _Messages(logging.Handler):
    """The run's log lines (train() replaces the root logger's handlers, so caplog sees nothing)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def train_log():
    handler = _Messages()
    logging.getLogger("mof_llava.train").addHandler(handler)
    yield handler.messages
    logging.getLogger("mof_llava.train").removeHandler(handler)


def _logged_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_a_second_launch_into_a_busy_folder_is_refused_naming_the_holder(tiny_parts, toy_data, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"{run}: another training run is using this folder \(pid {holder.pid} on "):
            train(run_config(tiny_parts, toy_data, run, max_steps=1))
        assert not (run / "run_config.yaml").exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock went with it, so the folder is free again.
    with RunLock(run) as lock:
        assert f"pid {os.getpid()} on " in lock.path.read_text()


def test_a_file_system_without_locks_trains_with_a_warning(tmp_path, monkeypatch, train_log):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunLock(tmp_path / "run") as lock:
        assert lock._fd is None
    assert train_log == [f"{tmp_path / 'run' / '.run.lock'}: this file system does not support file locks "
                         "(Function not implemented); a second launch into the same folder would not be detected"]


def test_only_the_launch_rank_0_takes_the_lock():
    from mof_llava.training.rendezvous import launch_rank

    assert launch_rank({}) == 0
    assert launch_rank({"RANK": "3", "SLURM_PROCID": "1"}) == 3  # torchrun on a SLURM node: torch's rank
    assert launch_rank({"OMPI_COMM_WORLD_RANK": "2"}) == 2  # mpirun: RANK comes later, from DeepSpeed
    assert launch_rank({"SLURM_PROCID": "5"}) == 5


def test_every_setting_is_either_refused_applied_or_free_on_resume():
    listed = RESUME_REFUSED + RESUME_APPLIED + RESUME_FREE
    keys = ["name", "model"] + [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)] \
        + [f"data.{f.name}" for f in dataclasses.fields(DataConfig)]
    # A key is applied or free when listed so, else refused; every setting is listed somewhere (a new
    # setting left out would be refused, but should be classified deliberately).
    for key in keys:
        owners = [entry for entry in listed if key == entry or key.startswith(entry + ".")]
        assert owners, f"{key}: not classified"
        assert len(set(owners) & set(RESUME_APPLIED + RESUME_FREE)) <= 1, f"{key}: classified by {owners}"
    assert len(set(listed)) == len(listed)


def test_a_finished_run_run_again_only_writes_the_missing_artifact(tiny_parts, toy_data, tmp_path):
    # 4 steps, 3 per epoch: the final checkpoint is mid-epoch, where the Trainer would train step 5.
    config = run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=4, save_steps=2)
    first = train(config)
    run = tmp_path / "run"
    adapters = load_file(str(run / "adapters" / "adapters.safetensors"))
    shutil.rmtree(run / "adapters")  # as if killed after checkpoint-4, before the artifact was written

    again = train(config)
    assert again.global_step == first.global_step == 4
    rewritten = load_file(str(run / "adapters" / "adapters.safetensors"))
    assert rewritten.keys() == adapters.keys()
    assert all(torch.equal(rewritten[k], adapters[k]) for k in adapters)
    assert _logged_steps(run) == [1, 2, 3, 4]
    assert [p.name for _, p, _ in checkpoints.checkpoints(run)] == ["checkpoint-2", "checkpoint-4"]


def test_starting_over_moves_the_previous_run_aside(tiny_parts, toy_data, tmp_path, train_log):
    run = tmp_path / "run"
    train(run_config(tiny_parts, toy_data, run, max_steps=2, save_steps=2, learning_rate=1e-3))
    train(run_config(tiny_parts, toy_data, run, max_steps=3, save_steps=3, learning_rate=5e-4, resume="none"))
    previous = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(previous) == 1
    assert {p.name for p in previous[0].iterdir()} == {"checkpoint-2", "metrics.jsonl", "run_config.yaml",
                                                       "run_record.json", "adapters"}
    assert [m for m in train_log if "moved the previous run" in m] == [
        f"starting a new run in {run}: moved the previous run's 5 file(s) to {previous[0]}"]
    assert _logged_steps(run) == [1, 2, 3]
    assert _logged_steps(previous[0]) == [1, 2]
    assert [p.name for _, p, _ in checkpoints.checkpoints(run)] == ["checkpoint-3"]
    # The automatic resume now continues the new run (finished: it trains nothing more).
    again = train(run_config(tiny_parts, toy_data, run, max_steps=3, save_steps=3, learning_rate=5e-4))
    assert again.global_step == 3 and _logged_steps(run) == [1, 2, 3]
    # Its checkpoints deleted (as docs/training.md suggests once a run is done), it is not retrained unasked.
    shutil.rmtree(run / "checkpoint-3")
    with pytest.raises(RunFolderError, match=rf"{run} holds a finished run \(adapters/\) and no complete checkpoint"):
        train(run_config(tiny_parts, toy_data, run, max_steps=3, save_steps=3, learning_rate=5e-4))
    assert _logged_steps(run) == [1, 2, 3]


@pytest.mark.parametrize(("key", "value"), [
    ("weight_decay", 0.1), ("lr_scheduler", "constant"), ("adapter_learning_rate", 1e-5), ("warmup_ratio", 0.1),
    ("per_device_batch_size", 1), ("learning_rate", 1e-5), ("global_batch_size", 8), ("precision", "bf16"),
])
def test_resuming_with_a_setting_that_changes_the_run_is_refused(tmp_path, key, value):
    from mof_llava.training.config import run_config_from_dict

    out = tmp_path / "run"
    config = run_config_from_dict({"data": {"data_path": "d.json"}, "train": {"output_dir": str(out)}})
    config.save(out / "run_config.yaml")
    (out / "checkpoint-2").mkdir()
    checkpoints.mark_complete(out / "checkpoint-2")
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, **{key: value}))
    with pytest.raises(ConfigError, match=rf"{out} holds checkpoints of a run with different \['train\.{key}'\]"):
        _check_resumable_config(changed, out)


def test_the_same_deepspeed_json_at_another_path_resumes_and_other_settings_do_not(tmp_path):
    """A checkout moved or copied elsewhere names its DeepSpeed JSON by another absolute path: the run
    record keeps the JSON's settings, and only different settings are refused."""
    from mof_llava.training.config import run_config_from_dict
    from mof_llava.training.run_folder import write_run_record

    out, old_json, new_json = tmp_path / "run", tmp_path / "old" / "zero2.json", tmp_path / "new" / "zero2.json"
    for path in (old_json, new_json):
        path.parent.mkdir()
        path.write_text('{"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}')
    config = run_config_from_dict({"data": {"data_path": "d.json"},
                                   "train": {"output_dir": str(out), "deepspeed": str(old_json)}})
    config.save(out / "run_config.yaml")
    write_run_record(out, config, {"size": 1}, resumed_from=None)
    (out / "checkpoint-2").mkdir()
    checkpoints.mark_complete(out / "checkpoint-2")
    old_json.unlink()  # the old checkout is gone
    moved = dataclasses.replace(config, train=dataclasses.replace(config.train, deepspeed=str(new_json)))
    _check_resumable_config(moved, out)
    new_json.write_text('{"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}')
    with pytest.raises(ConfigError, match=r"with different \['train\.deepspeed'\]"):
        _check_resumable_config(moved, out)


def test_resuming_with_a_longer_schedule_or_other_clipping_is_applied_and_logged(tiny_parts, toy_data, tmp_path, train_log):
    train(run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=2, save_steps=2))
    result = train(run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=3, save_steps=2, max_grad_norm=0.5))
    assert result.global_step == 3 and _logged_steps(tmp_path / "run") == [1, 2, 3]
    assert result.trainer.args.max_grad_norm == 0.5
    logged = [m for m in train_log if m.startswith("resuming with")]
    assert logged == ["resuming with train.max_grad_norm changed from 1.0 to 0.5: applied from the resumed step on",
                      "resuming with train.max_steps changed from 2 to 3: applied from the resumed step on"]


def test_resuming_on_a_changed_data_file_is_refused_and_a_touched_one_is_not(tiny_parts, tmp_path, train_log):
    data = write_dataset(tmp_path / "data")
    config = run_config(tiny_parts, data, tmp_path / "run", max_steps=2, save_steps=2)
    train(config)
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["data"]["size"] == data["pretrain"].stat().st_size and len(record["data"]["index_sha256"]) == 64

    os.utime(data["pretrain"], ns=(1, 1))  # copied elsewhere, same contents: resumes (and trains nothing more)
    assert train(config).global_step == 2
    assert any("modification time changed" in m for m in train_log)

    records = json.loads(data["pretrain"].read_text())
    data["pretrain"].write_text(json.dumps(records + records[:1]))  # one more record, same path
    with pytest.raises(ConfigError, match=rf"data.data_path {data['pretrain']}: the file changed since the run in "
                                          rf"{tmp_path / 'run'} started \(size, index_sha256 differ"):
        train(config)


TORCH_WRITER_ERROR = "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"


@pytest.mark.parametrize("failure", ["torch_writer", "enospc"])
def test_a_full_disk_while_writing_a_checkpoint_gives_one_line_and_no_complete_checkpoint(
        tiny_parts, toy_data, tmp_path, monkeypatch, failure):
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-4" not in str(f):
            return original(obj, f, *args, **kwargs)
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half")  # the disk filled up part-way
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        raise RuntimeError(TORCH_WRITER_ERROR)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as caught:
        train(run_config(tiny_parts, toy_data, run, max_steps=6, save_steps=2))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{run / 'checkpoint-4' / 'optimizer.pt'}: no space left on the device while writing checkpoint-4")
    assert checkpoints.latest_complete_checkpoint(run) == run / "checkpoint-2"
    assert checkpoints.incomplete_checkpoints(run) == [run / "checkpoint-4"]
