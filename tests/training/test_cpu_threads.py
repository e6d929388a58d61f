"""Training on CPU takes its torch thread count from mof_llava/threads.py: `train.cpu_threads` when
set, and says so in one log line."""

from __future__ import annotations

import pytest
import torch
from toydata import run_config

from mof_llava.training.config import ConfigError, load_run_config
from mof_llava.training.run import train


def test_train_cpu_threads_sets_torch_threads(tiny_parts, toy_data, tmp_path, capsys):
    before = torch.get_num_threads()
    config = run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=1, save_steps=1, cpu_threads=1)
    torch.set_num_threads(2)
    try:
        train(config)  # sets up its own logging (to stderr)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    logged = [line for line in capsys.readouterr().err.splitlines() if "torch CPU threads" in line]
    assert len(logged) == 1 and logged[0].endswith("mof_llava.threads: torch CPU threads: 1 (train.cpu_threads)")


def test_cpu_threads_is_a_checked_config_key(tiny_parts, toy_data, tmp_path):
    run_config(tiny_parts, toy_data, tmp_path / "run").save(tmp_path / "run.yaml")
    assert load_run_config(tmp_path / "run.yaml", ["train.cpu_threads=3"]).train.cpu_threads == 3
    with pytest.raises(ConfigError, match="cpu_threads"):
        load_run_config(tmp_path / "run.yaml", ["train.cpu_threads=many"])
