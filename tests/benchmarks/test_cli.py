"""`mof-llava eval score/export/merge` on LLaVA's released answer files and on finished runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mof_llava.cli import main


def _score(argv, capsys):
    assert main(argv) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_score_pope_with_llavas_files(fixtures_dir, capsys, tmp_path):
    out = tmp_path / "pope_metrics.json"
    printed, err = _score(
        [
            "eval",
            "score",
            "pope",
            "--answers",
            str(fixtures_dir / "pope/answers/llava-v1.5-13b.jsonl"),
            "--questions",
            str(fixtures_dir / "pope/llava_pope_test.jsonl"),
            "--annotations",
            str(fixtures_dir / "pope/coco"),
            "--output",
            str(out),
            "--llava-report",
        ],
        capsys,
    )
    assert printed["score"] == pytest.approx(80.0) and printed["splits"]["popular"]["f1"] == pytest.approx(
        80.0
    )
    assert err == (fixtures_dir / "pope/expected_eval_pope.txt").read_text()
    assert json.loads(out.read_text())["score"] == printed["score"]


def test_score_mmbench_with_llavas_answers(fixtures_dir, capsys, tmp_path):
    tsv = tmp_path / "dev.tsv"
    pd.DataFrame(
        [json.loads(x) for x in (fixtures_dir / "mmbench/gt.jsonl").read_text().splitlines()]
    ).to_csv(tsv, sep="\t", index=False)
    out = tmp_path / "m.json"
    printed, _ = _score(
        [
            "eval",
            "score",
            "mmbench",
            "--answers",
            str(fixtures_dir / "mmbench/llava-v1.5-13b.answers.jsonl"),
            "--data",
            str(tsv),
            "--output",
            str(out),
        ],
        capsys,
    )
    assert printed["score"] == pytest.approx(80.0) and "groups" not in printed
    assert (
        json.loads(out.read_text())["groups"]
        == json.loads((fixtures_dir / "mmbench/expected.json").read_text())["groups"]
    )


def test_export_gqa_predictions(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "testdev_balanced_predictions.json"
    assert (
        main(
            [
                "eval",
                "export",
                "gqa",
                "--answers",
                str(fixtures_dir / "gqa/llava-v1.5-13b.jsonl"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes() == (fixtures_dir / "gqa/expected_testdev_balanced_predictions.json").read_bytes()


def test_judge_grader_needs_a_url(tmp_path, capsys):
    from mof_llava.benchmarks.synthetic import write_mmvp

    data = write_mmvp(tmp_path / "mmvp", pairs=1)
    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": "A"}\n{"question_id": 2, "text": "B"}\n')
    with pytest.raises(SystemExit, match="--grader judge needs --judge-url"):
        main(
            [
                "eval",
                "score",
                "mmvp",
                "--answers",
                str(tmp_path / "a.jsonl"),
                "--data",
                str(data),
                "--grader",
                "judge",
            ]
        )
    printed, _ = _score(
        ["eval", "score", "mmvp", "--answers", str(tmp_path / "a.jsonl"), "--data", str(data)], capsys
    )
    assert printed["score"] == 100.0 and printed["labels"] == "original"


def test_merge_command_finishes_a_sharded_run(tmp_path, capsys):
    from mof_llava.benchmarks.synthetic import write_pope

    data = write_pope(tmp_path / "pope", per_split=2)
    questions = [json.loads(x) for x in (data / "llava_pope_test.jsonl").read_text().splitlines()]
    out = tmp_path / "run"
    out.mkdir()
    lines = [
        json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": "Yes"}) + "\n"
        for q in questions
    ]
    (out / "answers.part-000-of-002.jsonl").write_text("".join(lines[0::2]))
    (out / "answers.part-001-of-002.jsonl").write_text("".join(lines[1::2]))
    printed, _ = _score(["eval", "merge", "pope", "--data", str(data), "--output-dir", str(out)], capsys)
    merged = [json.loads(x)["question_id"] for x in (out / "answers.jsonl").read_text().splitlines()]
    assert merged == [q["question_id"] for q in questions] and not list(out.glob("answers.part-*"))
    # all "yes" with alternating labels: precision .5, recall 1
    assert printed["score"] == pytest.approx(200 / 3)
