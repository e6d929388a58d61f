"""Training shows its progress on one bar with the loss on it; the Trainer's line per logged step
(what metrics.jsonl holds) appears only with MOF_LLAVA_VERBOSE=1 (`mof-llava -v`); `train(progress=False)`
shows neither."""

from __future__ import annotations

import pytest
from toydata import losses, run_config

from mof_llava.training.run import train


def _set_verbose(monkeypatch, verbose: bool) -> None:
    if verbose:
        monkeypatch.setenv("MOF_LLAVA_VERBOSE", "1")
    else:
        monkeypatch.delenv("MOF_LLAVA_VERBOSE", raising=False)


@pytest.mark.parametrize("verbose", [False, True])
def test_a_line_per_step_only_when_verbose(tiny_parts, toy_data, tmp_path, capsys, monkeypatch, verbose):
    _set_verbose(monkeypatch, verbose)
    train(run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=3, save_steps=3))
    printed = capsys.readouterr()
    step_lines = [line for line in (printed.out + printed.err).splitlines() if line.startswith("{'loss'")]
    assert len(step_lines) == (3 if verbose else 0)
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]  # every step is in metrics.jsonl either way
    if not verbose:
        assert "3/3" in printed.err and "loss=" in printed.err  # the bar, with the loss on it


@pytest.mark.parametrize("verbose", [False, True])
def test_no_bar_and_no_step_lines_without_progress(tiny_parts, toy_data, tmp_path, capsys, monkeypatch, verbose):
    # the lab commands' --quiet: train(progress=False) draws nothing per step, verbose or not
    _set_verbose(monkeypatch, verbose)
    train(run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=3, save_steps=3), progress=False)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "3/3" not in printed and "loss=" not in printed and "{'loss'" not in printed
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]
