"""`mof-llava data check` on preference files: errors name file and line, pairs are counted by
neg_type and source, and no model is needed."""

from __future__ import annotations

import json

import pytest

from mof_llava.cli import main
from mof_llava.data.check_job import CheckJob, check
from mof_llava.data.preference_check import PreferenceReport

PROMPT = "<image>\nWhat is shown?"


def _native(image="a.jpg", responses=("A cat.", "A dog.", "A bird."), **extra):
    types = ("gt", "llm-hal", "mllm-hal")
    completions = [{"score": int(t == "gt"), "response": r, "type": t} for r, t in zip(responses, types)]
    return {"prompt": PROMPT, "image": image, "source": "coco", "completions": completions, **extra}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_valid_file_is_counted_by_neg_type_and_source(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"")  # existence is what the preference check asks
    flat = {"id": "f", "image": "a.jpg", "prompt": PROMPT, "chosen": "x", "rejected": "y", "neg_type": "mllm-hal",
            "source": "vg"}  # fmt: skip
    long = _native(responses=("word " * 351, "b", "c"))
    data = _write(tmp_path / "pairs.jsonl", [_native(id="n"), flat, long])
    code = main(
        ["data", "check", str(data), "--image-folder", str(tmp_path), "--json", str(tmp_path / "r.json")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "pairs: 3\n" in out
        and "by neg_type: llm-hal 1, mllm-hal 2" in out
        and "by source: coco 2, vg 1" in out
    )
    assert f"dropped, a response over 350 words: 1\n    {data}:3 (record 2)" in out
    assert json.loads((tmp_path / "r.json").read_text())["by_neg_type"] == {"llm-hal": 1, "mllm-hal": 2}


def test_invalid_records_are_one_line_each_naming_file_and_line(tmp_path, capsys):
    rows = [_native(id="ok", image="a.jpg"), _native(id="two", responses=("A cat.", "", "c")),
            {**_native(id="three"), "prompt": "no marker"}]  # fmt: skip
    data = _write(tmp_path / "bad.jsonl", rows)
    assert main(["data", "check", str(data), "--no-images"]) == 1
    out = capsys.readouterr().out
    assert "invalid records: 2" in out
    assert (
        f"{data}:2 (record 1, id 'two'): completion 1: 'response' must be a non-empty string, got ''" in out
    )
    assert f"{data}:3 (record 2, id 'three'): 'prompt' must hold exactly one <image>, it holds 0" in out


def test_a_missing_image_names_its_record(tmp_path):
    data = _write(tmp_path / "p.jsonl", [_native(id="m", image="missing.jpg")])
    report = check(CheckJob(data, image_folder=tmp_path))
    assert isinstance(report, PreferenceReport) and not report.ok
    assert report.malformed == [
        f"{data}:1 (record 0, id 'm'): image 'missing.jpg' not found under {tmp_path}"
    ]


def test_llava_data_still_needs_a_model_or_tokenizer(tmp_path):
    data = tmp_path / "llava.json"
    data.write_text(json.dumps([{"id": "1", "conversations": [{"from": "human", "value": "hi"},
                                                              {"from": "gpt", "value": "yo"}]}]))  # fmt: skip
    with pytest.raises(SystemExit, match="give one of --model and --tokenizer"):
        main(["data", "check", str(data), "--no-images"])
