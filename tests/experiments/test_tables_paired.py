"""`mof-llava tables --baseline`: a paired bootstrap over the units both rows answered marks the
differences it does not support; tower-ablated evaluations are rows of their own, with an
attribution figure beside the radar."""

from __future__ import annotations

import csv
import io
import json

import pytest
from experiments_helpers import metrics, plant_run, write_metrics

from mof_llava.experiments.report import write_report
from mof_llava.experiments.results import ResultsError

PAIRS = 150
TOWERS = ("clip", "dinov2")


def _answers(pairs_right: set[int]) -> dict:
    """MMVP per_question with exactly `pairs_right` (0-based pair numbers) both right; in every other
    pair the first question is right and the second wrong."""
    return {
        str(2 * k + q + 1): {"correct": k in pairs_right or q == 0, "read": "a", "answer": "a"}
        for k in range(PAIRS)
        for q in (0, 1)
    }


def _plant(root, group, seed, pairs_right, mode="interleave", benchmark_dir="mmvp", **run_changes):
    folder = plant_run(root, f"{group}_seed-{seed}", group, group, seed, ("mmvp",))
    content = metrics(
        "mmvp", 100 * len(pairs_right) / PAIRS, mode, towers=TOWERS if mode != "none" else ("clip",),
        per_question=_answers(pairs_right), **run_changes,
    )  # fmt: skip
    path = folder / "eval" / benchmark_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return folder


def _rows(path):
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in path.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| model")
    }


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "runs"
    weak = set(range(10))  # 10 of 150 pairs
    _plant(root, "llava-1.5-7b", 1, weak, mode="none")
    write_metrics(root / "llava-1.5-7b_seed-1", metrics("pope", 85.0))
    _plant(root, "same-7b", 1, weak)  # the very same answers
    _plant(root, "near-7b", 1, weak | {10})  # one pair more
    for seed, extra in ((1, 0), (2, 5)):  # 140 and 135 pairs: clearly better on both seeds
        run = _plant(root, "i-mof-7b", seed, set(range(140 - extra)))
        write_metrics(run, metrics("pope", 86.0 + seed, "interleave", towers=TOWERS))
    return root


def test_differences_the_paired_bootstrap_does_not_support_are_marked(planted, tmp_path):
    report = write_report([planted], tmp_path / "tables", proxy=None, baseline="llava-1.5-7b")
    rows = _rows(report.out_dir / "main.md")
    mmvp = {name: cells[3] for name, cells in rows.items()}  # model, mixer, runs, MMVP, POPE
    assert mmvp["same-7b"].endswith("†") and mmvp["near-7b"].endswith("†")
    assert "†" not in mmvp["i-mof-7b"] and "†" not in mmvp["llava-1.5-7b"]
    assert mmvp["i-mof-7b"] == "91.7 ± 2.4"  # seeds still pool as mean ± std
    text = (report.out_dir / "main.md").read_text()
    assert "not supported" in text and "POPE: no paired comparison with llava-1.5-7b" in text

    table = {r["model"]: r for r in csv.DictReader(io.StringIO((report.out_dir / "main.csv").read_text()))}
    # the row's units averaged over its seeds minus the baseline's: (137.5 - 10) / 150 pairs
    assert float(table["i-mof-7b"]["mmvp_diff"]) == pytest.approx(100 * 127.5 / 150)
    assert float(table["i-mof-7b"]["mmvp_diff_ci95_lo"]) > 0
    assert float(table["same-7b"]["mmvp_diff"]) == 0.0 and table["llava-1.5-7b"]["mmvp_diff"] == ""
    assert float(table["near-7b"]["mmvp_diff"]) == pytest.approx(100 / 150)
    assert float(table["near-7b"]["mmvp_diff_ci95_lo"]) <= 0

    per_run = list(csv.DictReader(io.StringIO((report.out_dir / "results.csv").read_text())))
    assert {r["score_ci95_lo"] for r in per_run} == {""}  # the planted files record no interval


def test_an_unknown_baseline_names_the_rows(planted, tmp_path):
    with pytest.raises(ResultsError, match=r"--baseline 'llava' is not a row.*'llava-1.5-7b'"):
        write_report([planted], tmp_path / "tables", proxy=None, baseline="llava")


def test_tower_ablated_evaluations_are_rows_of_their_own_with_an_attribution_figure(tmp_path):
    root = tmp_path / "runs"
    _plant(root, "i-mof-7b", 1, set(range(100)))
    for tower, right in (("clip", 60), ("dinov2", 90)):
        label = f"without-{tower}-zero"
        _plant(
            root, "i-mof-7b", 1, set(range(right)), benchmark_dir=f"mmvp-{label}",
            ablation={"tower": tower, "mode": "zero", "label": label},
        )  # fmt: skip
    patterns = tmp_path / "patterns.json"
    patterns.write_text(
        json.dumps({str(i): "Color" if i <= PAIRS else "Orientation" for i in range(1, 2 * PAIRS + 1)})
    )
    report = write_report([root], tmp_path / "tables", proxy=None, patterns=patterns, baseline="i-mof-7b")
    rows = _rows(report.out_dir / "main.md")
    assert list(rows) == ["i-mof-7b", "i-mof-7b/without-clip-zero", "i-mof-7b/without-dinov2-zero"]
    assert rows["i-mof-7b/without-clip-zero"][3] == "40.0"  # 60 of 150 pairs; clearly below the model
    assert [f.name for f in report.figures] == [
        "mmvp_patterns_radar.png",
        "mmvp_patterns_attribution.png",
    ]
    patterns_md = (report.out_dir / "mmvp_patterns.md").read_text()
    header = next(line for line in patterns_md.splitlines() if line.startswith("| model"))
    color = [c.strip() for c in header.split("|")[1:-1]].index("Color and Appearance")
    patterns_rows = _rows(report.out_dir / "mmvp_patterns.md")
    # pairs 0-74 are Color: the model has all 75 right, without CLIP 60, without DINOv2 75
    assert [patterns_rows[n][color] for n in rows] == ["100.0", "80.0", "100.0"]
    per_run = list(csv.DictReader(io.StringIO((report.out_dir / "results.csv").read_text())))
    assert sorted(r["ablation"] for r in per_run) == ["", "without-clip-zero", "without-dinov2-zero"]


def _pope_questions(wrong: int | None) -> dict:
    """POPE per_question, two splits of 300 (the first 150 labelled yes): "yes" to everything when
    `wrong` is None, else the first `wrong` yes- and no-questions of each split answered wrongly."""
    other = {"yes": "no", "no": "yes"}
    out = {}
    for split in ("random", "popular"):
        labels = {str(i): "yes" if i < 150 else "no" for i in range(300)}
        out[split] = {
            q: ["yes" if wrong is None else other[label] if int(q) % 150 < wrong else label, label]
            for q, label in labels.items()
        }
    return out


def test_pope_and_gqa_rows_are_compared_on_their_own_statistic(tmp_path):
    root = tmp_path / "runs"
    gqa_right = {"base": 200, "same": 200, "better": 320}  # of 400 questions
    for group, pope_wrong in (("base", None), ("same", None), ("better", 5)):
        run = plant_run(root, f"{group}_seed-1", group, group, 1, ("pope", "gqa"))
        per_question = _pope_questions(pope_wrong)
        write_metrics(run, metrics("pope", 0.0, per_question=per_question))
        gqa = {str(q): q < gqa_right[group] for q in range(400)}
        write_metrics(run, metrics("gqa", 100 * gqa_right[group] / 400, per_question=gqa))
    old = plant_run(root, "old_seed-1", "old", "old", 1, ("pope", "gqa"))
    write_metrics(old, metrics("pope", 80.0))  # written before per-question results were kept
    write_metrics(old, metrics("gqa", 50.0, per_question={str(q): True for q in range(399)}))

    report = write_report([root], tmp_path / "tables", proxy=None, baseline="base")
    table = {r["model"]: r for r in csv.DictReader(io.StringIO((report.out_dir / "main.csv").read_text()))}
    # yes to everything: F1 2/3; 5 of 150 wrong on each side: precision = recall = 145/150 (by hand)
    assert float(table["better"]["pope_diff"]) == pytest.approx(100 * (145 / 150 - 2 / 3))
    assert float(table["better"]["pope_diff_ci95_lo"]) > 0 and float(table["better"]["gqa_diff_ci95_lo"]) > 0
    assert float(table["better"]["gqa_diff"]) == pytest.approx(100 * 120 / 400)
    assert float(table["same"]["pope_diff"]) == 0.0 and float(table["same"]["gqa_diff"]) == 0.0
    assert table["old"]["pope_diff"] == "" and table["old"]["gqa_diff"] == ""

    text = (report.out_dir / "main.md").read_text()
    rows = _rows(report.out_dir / "main.md")
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    columns = [c.strip() for c in header.split("|")[1:-1]]
    pope_col, gqa_col = columns.index("POPE"), columns.index("GQA")
    assert rows["same"][pope_col].endswith("†") and rows["same"][gqa_col].endswith("†")
    assert "†" not in rows["better"][pope_col] + rows["better"][gqa_col]
    assert "POPE: no paired comparison with base" in text
    assert "old: GQA holds other units than base; not compared" in text
