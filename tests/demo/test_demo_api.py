"""`mof-llava demo` called from Python, without argv: demo.api.demo(DemoConfig). Training itself
is test_demo_run.py's; here the verb's checks and what it hands to the pipeline."""

import pytest

from mof_llava.demo import api, run
from mof_llava.demo.run import DemoSettings


def test_options_that_do_not_go_together(tmp_path):
    for config in (
        api.DemoConfig(tmp_path / "x", sweep=True, models=("i-mof",)),
        api.DemoConfig(tmp_path / "x", sweep=True, evaluate=False),
    ):
        with pytest.raises(api.DemoConfigError, match="--sweep trains and evaluates its own list"):
            api.demo(config)
    with pytest.raises(api.DemoConfigError, match="unknown demo model 'mof'"):
        api.demo(api.DemoConfig(tmp_path / "x", models=("i-mof", "mof")))
    assert not (tmp_path / "x").exists()


def test_models_and_settings_reach_the_pipeline(tmp_path, monkeypatch):
    calls = []

    def fake_run_demo(out, settings, variants, evaluate):
        calls.append((out, settings, [v.name for v in variants], evaluate))
        return "the result"

    monkeypatch.setattr(run, "run_demo", fake_run_demo)
    settings = DemoSettings(samples=8)
    outcome = api.demo(api.DemoConfig(tmp_path, settings, models=("a-mof-0.5", "llava-1.5"), evaluate=False))
    assert calls == [(tmp_path, settings, ["a-mof-0.5", "llava-1.5"], False)]
    assert outcome.result == "the result" and outcome.rehearsal is None
    api.demo(api.DemoConfig(tmp_path))
    assert calls[-1][2:] == (["i-mof"], True)  # the default model, evaluated


def test_the_command_builds_the_config_and_prints_the_outcome(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from mof_llava.cli import main
    from mof_llava.demo import report

    calls = []
    monkeypatch.setattr(run, "run_demo", lambda *args, **kw: calls.append((args, kw)) or "result")
    monkeypatch.setattr(report, "format_report", lambda result: f"report of {result}")
    argv = [
        "demo",
        "--out",
        str(tmp_path),
        "--model",
        "llava-1.5",
        "--no-eval",
        "--epochs",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    (out, settings, variants), kw = calls[0]
    assert out == tmp_path and [v.name for v in variants] == ["llava-1.5"] and kw == {"evaluate": False}
    assert (settings.stage1_epochs, settings.stage2_epochs, settings.progress) == (2.0, 2.0, False)
    assert capsys.readouterr().out == "report of result\n"

    rehearsal = SimpleNamespace(tables_dir=tmp_path / "tables", report=SimpleNamespace(text="TABLES"))
    lines = api.DemoOutcome(SimpleNamespace(out_dir=tmp_path), rehearsal).describe().split("\n")
    assert lines[1:3] == ["", "TABLES"] and lines[-1] == api.SCALE_NOTE
    assert (
        lines[3]
        == f"tables and figures in {tmp_path / 'tables'}/ (the same as `mof-llava tables {tmp_path}`)"
    )
