"""The console entry point prints the project's own errors as one line and exits 2; anything else
(a bug) keeps its traceback."""

from __future__ import annotations

import pytest

from mof_llava import cli
from mof_llava.benchmarks.mmvp import MMVPDataError


def test_project_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)
    argv = ["eval", "score", "mmvp", "--answers", str(tmp_path / "a.jsonl"), "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"mof-llava: error: {tmp_path / 'Questions.csv'}: MMVP Questions.csv not found\n"

    monkeypatch.setenv("MOF_LLAVA_TRACEBACK", "1")
    with pytest.raises(MMVPDataError):
        cli.run(argv)


def test_bugs_keep_their_traceback(monkeypatch):
    def broken(argv=None):
        raise KeyError("not a user error")

    monkeypatch.setattr(cli, "main", broken)
    with pytest.raises(KeyError):
        cli.run(["demo"])


def test_success_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["eval", "--help"])
    assert exit_info.value.code == 0
    assert "export" in capsys.readouterr().out
