"""Pattern analysis: mapping files, per-pattern pair accuracy, Pearson's r, and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mof_llava.benchmarks import analysis
from mof_llava.cli import main


def test_mapping_files_in_csv_and_json(tmp_path):
    csv_path = tmp_path / "map.csv"
    csv_path.write_text("Index,Pattern\n1,Color\n2,color and appearance\n3,My own pattern\n")
    assert analysis.read_pattern_map(csv_path) == {
        1: "Color and Appearance",
        2: "Color and Appearance",
        3: "My own pattern",
    }
    by_pattern = tmp_path / "map.json"
    by_pattern.write_text(json.dumps({"Camera Perspective": [1, 2], "Text": [3, 4]}))
    assert analysis.read_pattern_map(by_pattern) == {
        1: "Viewpoint and Perspective",
        2: "Viewpoint and Perspective",
        3: "Texts",
        4: "Texts",
    }
    by_index = tmp_path / "map2.json"
    by_index.write_text(json.dumps({"1": "Spatial"}))
    assert analysis.read_pattern_map(by_index) == {1: "Positional and Relational Context"}
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Kind\n1,Color\n")
    with pytest.raises(analysis.PatternMapError, match="needs an Index column"):
        analysis.read_pattern_map(bad)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("gap.csv", "Index,Pattern\n1,Color\n2\n", r"gap.csv:3: no pattern for index '2'"),
        ("word.csv", "Index,Pattern\n1,Color\none,Color\n", r"word.csv:3: question index 'one' is not an integer"),
        ("key.json", json.dumps({"first": "Color"}), r"key.json: entry 'first': question index 'first' is not an integer"),
        ("list.json", json.dumps({"Color": [1, "x"]}), r"list.json: entry 'Color': question index 'x' is not an integer"),
        ("broken.json", '{"1": "Color"', r"broken.json: not valid JSON"),
    ],
)
def test_bad_mapping_files_name_the_line_or_entry(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(analysis.PatternMapError, match=message):
        analysis.read_pattern_map(path)


def test_max_new_tokens_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "run", "pope", "--model", str(tmp_path), "--data", str(tmp_path), "--max-new-tokens", "0"])
    assert "--max-new-tokens: must be at least 1, got 0" in capsys.readouterr().err


def test_per_pattern_pair_accuracy():
    correct = {1: True, 2: True, 3: True, 4: False, 5: True, 6: True, 7: False, 8: False}
    patterns = {
        1: "Texts",
        2: "Texts",
        3: "Texts",
        4: "Texts",
        5: "Color and Appearance",
        6: "Color and Appearance",
    }
    result = analysis.per_pattern_pair_accuracy(correct, patterns)
    assert result["per_pattern"] == {
        "Color and Appearance": {"accuracy": 100.0, "pairs": 1},
        "Texts": {"accuracy": 50.0, "pairs": 2},
    }
    assert result["unmapped_pairs"] == 1
    with pytest.raises(analysis.PatternMapError, match=r"questions \[1, 2\] form a pair but map to patterns"):
        analysis.per_pattern_pair_accuracy({1: True, 2: True}, {1: "Texts", 2: "Color and Appearance"})


def test_pearson_matches_numpy():
    x, y = (
        [13.3, 13.3, 20.0, 20.0, 13.3, 53.3, 20.0, 6.7, 13.3],
        [40.0, 20.0, 60.0, 20.0, 0.0, 80.0, 20.0, 0.0, 40.0],
    )
    assert analysis.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert analysis.pearson([1.0, 1.0], [2.0, 3.0]) is None
    assert analysis.pearson([1.0], [2.0]) is None


def _mmvp_metrics(correct):
    return {"benchmark": "mmvp", "per_question": {str(k): {"correct": v} for k, v in correct.items()}}


def test_analyze_command_writes_tables_and_figures(tmp_path, capsys):
    patterns = ["Color", "Text", "Spatial"]
    (tmp_path / "map.csv").write_text(
        "Index,Pattern\n" + "".join(f"{i},{patterns[(i - 1) // 4]}\n" for i in range(1, 13))
    )
    # MLLM: Color 2/2 pairs, Text 1/2, Spatial 0/2
    correct = {i: True for i in range(1, 7)} | {7: False, 8: True} | {i: False for i in range(9, 13)}
    (tmp_path / "mllm.json").write_text(json.dumps(_mmvp_metrics(correct)))
    clip = {
        "benchmark": "mmvp-vlm",
        "per_pattern": {
            "Color and Appearance": {"accuracy": 53.3},
            "Texts": {"accuracy": 20.0},
            "Positional and Relational Context": {"accuracy": 6.7},
        },
    }
    (tmp_path / "clip.json").write_text(json.dumps(clip))
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "analyze",
                "--patterns",
                str(tmp_path / "map.csv"),
                "--mllm",
                f"mof={tmp_path / 'mllm.json'}",
                "--clip",
                f"vit-l={tmp_path / 'clip.json'}",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    (corr,) = printed["correlations"]
    assert corr["mllm"] == "mof" and corr["clip"] == "vit-l"
    assert corr["pearson_r"] == pytest.approx(np.corrcoef([100.0, 50.0, 0.0], [53.3, 20.0, 6.7])[0, 1])
    result = json.loads((out / "patterns.json").read_text())
    assert result["mllm"]["mof"]["per_pattern"]["Texts"] == {"accuracy": 50.0, "pairs": 2}
    for name in (
        "mmvp_patterns_radar.png",
        "mmvp_patterns_bar.png",
        "mmvp_vlm_patterns_radar.png",
        "correlation_scatter.png",
    ):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert not list(out.glob(".*tmp*"))


def test_analyze_refuses_the_wrong_metrics(tmp_path):
    with pytest.raises(analysis.PatternMapError, match="not an MMVP metrics file"):
        analysis.analyze({"x": {"benchmark": "pope", "score": 1}}, {}, {1: "Texts"})


def test_a_pattern_without_a_score_is_a_gap_not_zero(tmp_path, monkeypatch):
    """A model that has no score for a pattern must not be drawn at 0% (a measured-looking value)."""
    import math

    from mof_llava.benchmarks import plots

    drawn = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: drawn.append(fig) or path)
    series = {"full": {"Color": 50.0, "Texts": 25.0, "Count": 75.0}, "partial": {"Color": 40.0, "Count": 60.0}}
    plots.radar_chart(series, tmp_path / "r.png")
    plots.bar_chart(series, tmp_path / "b.png")
    radar, bars = (fig.axes[0] for fig in drawn)

    lines = {line.get_label(): list(line.get_ydata()) for line in radar.get_lines()}
    assert lines["full"] == [50.0, 25.0, 75.0, 50.0]
    partial = lines["partial (no score for 1 pattern)"]
    assert partial[0] == 40.0 and math.isnan(partial[1]) and partial[2] == 60.0
    heights = {c.get_label(): [bar.get_height() for bar in c] for c in bars.containers}
    assert heights["full"] == [50.0, 25.0, 75.0]
    assert math.isnan(heights["partial (no score for 1 pattern)"][1])
