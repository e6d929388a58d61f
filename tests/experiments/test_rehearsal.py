"""`mof-llava demo --sweep` at minimal sizes: the paper's sweep in miniature (LLaVA-1.5, A-MoF at
alpha 0 / 0.5 / 1, I-MoF with two seeds), each through stage 1, stage 2 and four benchmarks, then the
tables and figures through the code `mof-llava tables` runs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mof_llava.demo.run import DemoSettings
from mof_llava.demo.sweep import REHEARSAL_VARIANTS, run_rehearsal
from mof_llava.experiments.status import sweep_status
from mof_llava.training.config import load_run_config

BENCHMARKS = ("mmvp", "pope", "mmbench", "gqa")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    settings = DemoSettings(
        samples=48, mmvp_pairs=4, batch_size=8, language_steps=20, max_new_tokens=6, progress=False
    )
    return run_rehearsal(tmp_path_factory.mktemp("rehearsal") / "out", settings)


def _scores(out, variant: str, bench: str) -> float:
    return json.loads((out / variant / "eval" / bench / "metrics.json").read_text())["score"]


@pytest.mark.slow
def test_every_model_went_through_every_step(rehearsal):
    runs = sweep_status(rehearsal.demo.out_dir)
    assert sorted(r.name for r in runs) == sorted(v.name for v in REHEARSAL_VARIANTS)
    for run in runs:
        assert [s.step for s in run.steps] == ["stage1", "stage2", *(f"eval-{b}" for b in BENCHMARKS)]
        assert run.state == "done", run
    out = rehearsal.demo.out_dir
    assert load_run_config(out / "i-mof-seed1" / "stage2.yaml").train.seed == 1
    assert load_run_config(out / "i-mof" / "stage2.yaml").train.seed == 0
    assert load_run_config(out / "a-mof-0.5" / "stage1.yaml").model.mixer.alpha == 0.5


@pytest.mark.slow
def test_tables_hold_the_evaluation_scores(rehearsal):
    out, tables = rehearsal.demo.out_dir, rehearsal.tables_dir
    main = {r["model"]: r for r in csv.DictReader(io.StringIO((tables / "main.csv").read_text()))}
    assert set(main) == {"llava-1.5", "i-mof"} and (main["llava-1.5"]["runs"], main["i-mof"]["runs"]) == (
        "1",
        "2",
    )
    for bench in BENCHMARKS:
        assert float(main["llava-1.5"][f"{bench}_mean"]) == _scores(out, "llava-1.5", bench)
        both = [_scores(out, "i-mof", bench), _scores(out, "i-mof-seed1", bench)]
        assert float(main["i-mof"][f"{bench}_mean"]) == pytest.approx(sum(both) / 2)
        assert float(main["i-mof"][f"{bench}_std"]) == pytest.approx(abs(both[0] - both[1]) / 2**0.5)
    ratio = list(csv.DictReader(io.StringIO((tables / "amof_ratio.csv").read_text())))
    assert [(r["model"], float(r["alpha"])) for r in ratio] == [
        ("a-mof-0", 0.0),
        ("a-mof-0.5", 0.5),
        ("a-mof-1", 1.0),
    ]
    for row in ratio:
        assert float(row["mmvp_mean"]) == _scores(out, row["model"], "mmvp")
    assert "### MMVP pair accuracy per visual pattern" in (tables / "mmvp_patterns.md").read_text()
    for name in ("main.tex", "amof_ratio.md", "results.csv", "tables.md"):
        assert (tables / name).is_file()
    for figure in ("mmvp_vs_alpha.png", "mmvp_patterns_radar.png", "mmvp_patterns_radar_amof.png"):
        assert (tables / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_line_flag(tmp_path):
    from mof_llava.cli import main

    with pytest.raises(SystemExit, match="--sweep trains and evaluates its own list"):
        main(["demo", "--sweep", "--model", "i-mof", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="drop --model / --no-eval"):
        main(["demo", "--sweep", "--no-eval", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
