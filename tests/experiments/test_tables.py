"""Tables and figures from planted metrics files: rows per run group, mean ± sample std over seeds,
reported columns kept apart, Markdown / LaTeX / CSV, PNG figures, and the refusals."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from experiments_helpers import EXPERIMENTS, metrics, plant_run, write_metrics
from PIL import Image

from mof_llava.experiments.report import write_report
from mof_llava.experiments.reported import load_reported
from mof_llava.experiments.results import ResultsError

LLAVA_MMVP = [20.0, 24.0, 25.0]  # seeds 1, 2, 3
LLAVA_POPE = [85.0, 86.0, 87.5]
IMOF_MMVP = [28.0, 30.0]  # seeds 1, 2; POPE only for seed 1
AMOF = {0.0: (22.0, 60.0), 0.5: (26.0, 58.0), 1.0: (30.0, 50.0)}  # alpha -> (MMVP, MMBench)

# MMVP questions 1-4 test colour, 5-8 orientation (pairs (1,2), (3,4), (5,6), (7,8)).
PATTERNS = {i: "Color" if i <= 4 else "Orientation" for i in range(1, 9)}
IMOF_CORRECT = [  # per seed: which of questions 1..8 were right
    [True, True, True, False, True, True, True, True],  # colour 1/2 pairs, orientation 2/2
    [True, True, True, True, False, True, False, True],  # colour 2/2, orientation 0/2
]


def mean_std(values):
    """Computed here, by the textbook formulas, independently of the code under test."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std


def _per_question(correct):
    return {str(i + 1): {"correct": ok, "read": "a", "answer": "a"} for i, ok in enumerate(correct)}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "runs"
    for seed, mmvp, pope in zip((1, 2, 3), LLAVA_MMVP, LLAVA_POPE):
        run = plant_run(
            root, f"llava-1.5-7b_seed-{seed}", "llava-1.5-7b", "llava-1.5-7b", seed, ("mmvp", "pope")
        )
        write_metrics(run, metrics("mmvp", mmvp, per_question=_per_question([True] * 8)))
        write_metrics(run, metrics("pope", pope))
    towers = ("clip", "dinov2")
    for seed, mmvp, correct in zip((1, 2), IMOF_MMVP, IMOF_CORRECT):
        run = plant_run(root, f"i-mof-7b_seed-{seed}", "i-mof-7b", "i-mof-7b", seed, ("mmvp", "pope"))
        write_metrics(
            run, metrics("mmvp", mmvp, "interleave", towers=towers, per_question=_per_question(correct))
        )
        if seed == 1:
            write_metrics(run, metrics("pope", 86.0, "interleave", towers=towers))
    for alpha, (mmvp, mmbench) in AMOF.items():
        group = f"a-mof-7b_alpha-{alpha:g}"
        run = plant_run(root, f"{group}_seed-1", group, "a-mof-7b", 1, ("mmvp", "mmbench"))
        write_metrics(
            run, metrics("mmvp", mmvp, "additive", alpha, towers, per_question=_per_question([False] * 8))
        )
        write_metrics(run, metrics("mmbench", mmbench, "additive", alpha, towers))
    reported = tmp_path / "reported.yaml"
    reported.write_text(
        "models:\n"
        "  llava-1.5-7b:\n"
        "    source: Model zoo\n"
        "    pope: 85.9\n"
        "    mmvp: {value: 24.7, source: Paper figure, note: size not named}\n"
        "  some-other-model: {source: elsewhere, gqa: 50.0}\n"
    )
    patterns = tmp_path / "patterns.json"
    patterns.write_text(json.dumps({str(k): v for k, v in PATTERNS.items()}))
    return root, reported, patterns


@pytest.fixture
def report(results, tmp_path):
    root, reported, patterns = results
    return write_report([root], tmp_path / "tables", reported=reported, patterns=patterns)


def _row(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _fmt(values) -> str:
    mean, std = mean_std(values)
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def test_main_table_markdown(report):
    text = (report.out_dir / "main.md").read_text()
    header = _row(text, "model")
    assert header == ["model", "mixer", "runs", "MMVP", "MMVP (reported)", "POPE", "POPE (reported)"]
    assert _row(text, "llava-1.5-7b") == [
        "llava-1.5-7b",
        "none",
        "3",
        _fmt(LLAVA_MMVP),
        "24.7 [1]",
        _fmt(LLAVA_POPE),
        "85.9 [2]",
    ]
    assert _row(text, "i-mof-7b") == ["i-mof-7b", "interleave", "2", _fmt(IMOF_MMVP), "–", "86.0", "–"]
    # the golden strings, worked out by hand: mean 23, sqrt(7) = 2.65; mean 86.17, sqrt(19/12) = 1.26; 29, sqrt(2)
    assert (_fmt(LLAVA_MMVP), _fmt(LLAVA_POPE), _fmt(IMOF_MMVP)) == ("23.0 ± 2.6", "86.2 ± 1.3", "29.0 ± 1.4")
    assert "- [1] reported: Paper figure (size not named)" in text
    assert "- [2] reported: Model zoo" in text
    assert "i-mof-7b: POPE on 1 of 2 runs" in text
    assert "sample standard deviation (n - 1)" in text
    assert "some-other-model" not in text and "elsewhere" not in text


def test_ratio_table_orders_alpha(report):
    text = (report.out_dir / "amof_ratio.md").read_text()
    assert _row(text, "model") == ["model", "alpha", "runs", "MMVP", "MMBench"]
    rows = [_row(text, f"a-mof-7b_alpha-{a:g}") for a in AMOF]
    assert rows == [
        [f"a-mof-7b_alpha-{a:g}", f"{a:g}", "1", f"{m:.1f}", f"{b:.1f}"] for a, (m, b) in AMOF.items()
    ]
    lines = [line for line in text.splitlines() if line.startswith("| a-mof")]
    assert [line.split("|")[2].strip() for line in lines] == ["0", "0.5", "1"]


def test_latex_is_booktabs_with_escapes(report):
    tex = (report.out_dir / "main.tex").read_text()
    assert "\\begin{tabular}{llrrrrr}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    mean, std = mean_std(LLAVA_MMVP)
    assert (
        f"llava-1.5-7b & none & 3 & {mean:.1f} $\\pm$ {std:.1f} & \\textit{{24.7}}\\textsuperscript{{1}}"
        in tex
    )
    ratio = (report.out_dir / "amof_ratio.tex").read_text()
    assert "a-mof-7b\\_alpha-0.5 & 0.5 & 1 & 26.0 & 58.0 \\\\" in ratio


def test_csv_keeps_full_precision(report):
    rows = list(csv.DictReader(io.StringIO((report.out_dir / "main.csv").read_text())))
    llava = next(r for r in rows if r["model"] == "llava-1.5-7b")
    mean, std = mean_std(LLAVA_POPE)
    assert float(llava["pope_mean"]) == pytest.approx(mean, abs=1e-12)
    assert float(llava["pope_std"]) == pytest.approx(std, abs=1e-12)
    assert (llava["pope_n"], llava["runs"], llava["mmvp_reported"]) == ("3", "3", "24.7")
    assert llava["mmvp_reported_source"] == "Paper figure (size not named)"
    imof = next(r for r in rows if r["model"] == "i-mof-7b")
    assert (imof["pope_mean"], imof["pope_std"], imof["pope_n"]) == ("86.0", "", "1")
    every = list(csv.DictReader(io.StringIO((report.out_dir / "results.csv").read_text())))
    assert len(every) == 3 * 2 + 2 + 1 + 3 * 2
    assert {r["seed"] for r in every if r["group"] == "llava-1.5-7b"} == {"1", "2", "3"}


def test_pattern_table_and_figures(report):
    text = (report.out_dir / "mmvp_patterns.md").read_text()
    # the paper's pattern order (MMVP-VLM's), long names
    assert _row(text, "model") == ["model", "runs", "Orientation and Direction", "Color and Appearance"]
    # i-mof: orientation pairs right 2/2 then 0/2 -> 100, 0; colour 1/2 then 2/2 -> 50, 100
    assert _row(text, "i-mof-7b") == ["i-mof-7b", "2", _fmt([100.0, 0.0]), _fmt([50.0, 100.0])]
    assert _row(text, "llava-1.5-7b") == ["llava-1.5-7b", "3", "100.0 ± 0.0", "100.0 ± 0.0"]
    assert _row(text, "a-mof-7b_alpha-0.5") == ["a-mof-7b_alpha-0.5", "1", "0.0", "0.0"]
    assert {p.name for p in report.figures} == {
        "mmvp_vs_alpha.png",
        "mmvp_patterns_radar.png",
        "mmvp_patterns_radar_amof.png",
    }
    for figure in report.figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(figure) as image:
            image.verify()
        with Image.open(figure) as image:
            assert image.size[0] > 300 and image.size[1] > 300


def test_everything_in_one_summary(report):
    summary = (report.out_dir / "tables.md").read_text()
    for title in ("Baseline vs Interleaved-MoF", "Additive-MoF", "per visual pattern"):
        assert title in summary
    assert "Figures: mmvp_vs_alpha.png" in summary


def test_seeds_without_a_sweep_record_group_by_model_id(tmp_path):
    for name, score in (("one", 10.0), ("two", 20.0)):
        path = tmp_path / "eval_results" / name / "mmvp" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(metrics("mmvp", score, model_id=name)))
    report = write_report([tmp_path / "eval_results"], tmp_path / "out", proxy=None)
    text = (report.out_dir / "main.md").read_text()
    assert _row(text, "one")[3] == "10.0" and _row(text, "two")[3] == "20.0"


def test_metrics_files_given_one_by_one_still_group_by_their_run_record(results, tmp_path):
    root, _, _ = results
    files = sorted(root.glob("llava-1.5-7b_seed-*/eval/mmvp/metrics.json"))
    assert len(files) == 3
    report = write_report(files, tmp_path / "out", proxy=None)
    row = _row((report.out_dir / "main.md").read_text(), "llava-1.5-7b")
    assert row[2] == "3" and row[3] == _fmt(LLAVA_MMVP)


def test_scores_made_differently_are_not_put_in_one_column(results, tmp_path):
    root, _, _ = results
    other = plant_run(root, "other", "other", "other", 1, ("mmvp",))
    changed = metrics("mmvp", 50.0, data_files={"questions": {"path": "/x", "bytes": 3, "sha256": "e" * 64}})
    write_metrics(other, changed)
    with pytest.raises(
        ResultsError, match="mmvp: the runs were evaluated differently \\(data_files differ\\)"
    ):
        write_report([root], tmp_path / "out")
    limited = plant_run(root, "other", "other", "other", 1, ("mmvp",))
    write_metrics(limited, metrics("mmvp", 50.0, limit=20))
    with pytest.raises(ResultsError, match="limit differ"):
        write_report([root], tmp_path / "out")
    report = write_report([root], tmp_path / "out", allow_mixed=True)
    assert _row((report.out_dir / "main.md").read_text(), "other")[3] == "50.0"


def test_a_group_holding_two_models_is_refused(results, tmp_path):
    root, _, _ = results
    wrong = plant_run(root, "a-mof-7b_alpha-0.5_seed-2", "a-mof-7b_alpha-0.5", "a-mof-7b", 2, ("mmvp",))
    write_metrics(wrong, metrics("mmvp", 10.0, "additive", 0.75, ("clip", "dinov2")))
    with pytest.raises(ResultsError, match="group a-mof-7b_alpha-0.5 holds different models"):
        write_report([root], tmp_path / "out")


def test_files_that_are_not_scores_are_left_out_and_said(results, tmp_path):
    root, _, _ = results
    (root / "notes").mkdir()
    (root / "notes" / "metrics.json").write_text('{"loss": 1}')
    vlm = plant_run(root, "clip", "clip", "clip", None, ())
    write_metrics(vlm, {"benchmark": "mmvp-vlm", "score": 20.0, "per_pattern": {}})
    gqa = plant_run(root, "gqa-only", "gqa-only", "x", None, ())
    write_metrics(
        gqa,
        {"benchmark": "gqa", "score": None, "note": "no testdev_balanced_questions.json given: not scored"},
    )
    report = write_report([root], tmp_path / "out")
    assert any("not an evaluation metrics file" in n for n in report.notes)
    assert any("MMVP-VLM scores a CLIP model" in n for n in report.notes)
    assert any("not scored" in n for n in report.notes)
    assert "Left out:" in report.text


def test_nothing_to_tabulate_is_an_error(tmp_path):
    with pytest.raises(ResultsError, match="no scored evaluation metrics"):
        write_report([tmp_path], tmp_path / "out")


def test_the_command(results, tmp_path, capsys):
    from mof_llava.cli import main

    root, reported, patterns = results
    out = tmp_path / "cli"
    assert (
        main(
            [
                "tables",
                str(root),
                "--out",
                str(out),
                "--reported",
                str(reported),
                "--patterns",
                str(patterns),
                "--decimals",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    mean, std = mean_std(LLAVA_MMVP)
    assert f"{mean:.2f} ± {std:.2f}" in printed
    assert {p.name for p in out.iterdir()} >= {
        "main.md",
        "main.tex",
        "main.csv",
        "amof_ratio.csv",
        "mmvp_vs_alpha.png",
    }
    assert main(["tables", str(root)]) == 0 and (root / "tables" / "main.md").is_file()
    with pytest.raises(SystemExit, match="no scored evaluation metrics"):
        main(["tables", str(tmp_path / "cli")])


def test_the_shipped_reported_numbers_are_only_the_verified_ones():
    reported = load_reported(EXPERIMENTS / "reported.yaml")
    assert set(reported) == {"llava-1.5-7b", "llava-1.5-13b"}  # no I-MoF numbers: not verified
    values = {model: {b: v.value for b, v in entries.items()} for model, entries in reported.items()}
    # benchmarks.md section 7: LLaVA's model zoo, and the MMVP bar chart's LLaVA-1.5
    assert values["llava-1.5-7b"] == {"gqa": 62.0, "pope": 85.9, "mmbench": 64.3, "mmvp": 24.7}
    assert values["llava-1.5-13b"] == {"gqa": 63.3, "pope": 85.9, "mmbench": 67.7}
    assert "size" in reported["llava-1.5-7b"]["mmvp"].note


def test_a_missing_proxy_is_said(results, tmp_path):
    root, _, _ = results
    report = write_report([root], tmp_path / "out", proxy="gqa")
    assert (
        "instruction-following proxy gqa: no such scores for the A-MoF runs; mmvp_vs_alpha.png shows MMVP only"
        in report.notes
    )
    assert report.figures[0].name == "mmvp_vs_alpha.png"


def test_a_missing_proxy_without_mmvp_scores_says_no_figure_was_made(tmp_path):
    root = tmp_path / "runs"
    run = plant_run(root, "a-mof-7b_alpha-0.5_seed-1", "a-mof-7b_alpha-0.5", "a-mof-7b", 1, ("pope",))
    write_metrics(run, metrics("pope", 86.0, "additive", 0.5, ("clip", "dinov2")))
    report = write_report([root], tmp_path / "out", proxy="gqa")
    assert report.figures == [] and not (tmp_path / "out" / "mmvp_vs_alpha.png").exists()
    note = next(n for n in report.notes if n.startswith("instruction-following proxy gqa"))
    assert note == (
        "instruction-following proxy gqa: no such scores for the A-MoF runs; "
        "no MMVP scores for them either, so no alpha figure"
    )
    assert "MMVP only" not in report.text
