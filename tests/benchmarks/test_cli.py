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


def _fixture_tsv(fixtures_dir, tmp_path):
    tsv = tmp_path / "dev.tsv"
    pd.DataFrame(
        [json.loads(x) for x in (fixtures_dir / "mmbench/gt.jsonl").read_text().splitlines()]
    ).to_csv(tsv, sep="\t", index=False)
    return tsv


def test_export_mmbench_submission(fixtures_dir, tmp_path):
    """The .xlsx the OpenCompass server grades: every TSV row once, the raw answer in `prediction`
    next to the question and its options."""
    tsv, answers = _fixture_tsv(fixtures_dir, tmp_path), fixtures_dir / "mmbench/llava-v1.5-13b.answers.jsonl"
    out = tmp_path / "upload" / "submission.xlsx"
    assert main(["eval", "export", "mmbench", "--answers", str(answers), "--data", str(tsv), "--output", str(out)]) == 0
    sheet = pd.read_excel(out, engine="openpyxl", keep_default_na=False)
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    gt = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    assert sheet["index"].tolist() == gt["index"].tolist()
    texts = {json.loads(x)["question_id"]: json.loads(x)["text"] for x in answers.read_text().splitlines()}
    assert sheet["prediction"].tolist() == [texts[i] for i in gt["index"]]
    assert sheet[["question", "A", "B", "C", "D", "answer"]].equals(gt[["question", "A", "B", "C", "D", "answer"]])


def test_export_mmbench_refuses_missing_answers(fixtures_dir, tmp_path):
    tsv = _fixture_tsv(fixtures_dir, tmp_path)
    lines = (fixtures_dir / "mmbench/llava-v1.5-13b.answers.jsonl").read_text().splitlines()
    dropped = json.loads(lines[3])["question_id"]
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    out = tmp_path / "submission.xlsx"
    with pytest.raises(ValueError, match=f"1 of 16 questions have no answer \\(first: {dropped}\\)"):
        main(["eval", "export", "mmbench", "--answers", str(partial), "--data", str(tsv), "--output", str(out)])
    assert not out.exists()


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
