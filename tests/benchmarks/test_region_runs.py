"""REC and VSR through the one runner on the tiny model (`evaluate`), then re-scored from the answer
file alone (`score`): the questions the task builds are the ones answered, the metrics agree."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mof_llava.benchmarks.answers import read_answers
from mof_llava.benchmarks.evaluate import EvalConfig, ScoreConfig, evaluate, score
from mof_llava.benchmarks.rec import RecOptions
from mof_llava.benchmarks.runner import Distributed
from mof_llava.benchmarks.vsr import VsrOptions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mof_llava.testing.tiny import save_tiny_mof_llava

    torch.set_num_threads(1)
    return save_tiny_mof_llava(tmp_path_factory.mktemp("tiny_region"), mixer="interleave")


def _run(benchmark, options, model_dir, out):
    config = EvalConfig(
        benchmark=benchmark,
        options=options,
        model=model_dir,
        output_dir=out,
        device="cpu",
        threads=1,
        batch_size=4,
        max_new_tokens=6,
        no_progress=True,
        dist=Distributed(),
    )
    return evaluate(config)


def _rescore(benchmark, options, answers):
    return score(ScoreConfig(benchmark=benchmark, options=options, answers=answers))


def test_rec_runs_and_rescores(model_dir, fixtures_dir, tmp_path):
    options = RecOptions(data=fixtures_dir / "rec", images=fixtures_dir / "rec" / "images")
    result = _run("rec", options, model_dir, tmp_path / "rec")
    answers = read_answers(result.answers)
    assert sorted(a["question_id"] for a in answers) == sorted(
        ["val:0:0", "val:0:1", "val:1:0", "val:2:0", "testA:3:0", "testA:4:0", "testA:5:0"]
    )
    assert {a["question_id"]: a["split"] for a in answers}["testA:4:0"] == "testA"
    metrics = result.metrics
    assert set(metrics["per_split"]) == {"val", "testA"} and metrics["questions"] == 7
    assert metrics["run"]["settings"]["frame"] == "pad" and metrics["run"]["image_aspect_ratio"] == "pad"
    rescored = _rescore("rec", options, result.answers)
    assert rescored["score"] == metrics["score"] and rescored["per_split"] == metrics["per_split"]


def test_vsr_runs_and_rescores(model_dir, fixtures_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = [json.loads(line) for line in (fixtures_dir / "vsr" / "test.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        Image.new("RGB", (24, 16), (20 * i, 100, 50)).save(images / row["image"])
    options = VsrOptions(data=fixtures_dir / "vsr" / "test.jsonl", images=images)
    result = _run("vsr", options, model_dir, tmp_path / "vsr")
    answers = read_answers(result.answers)
    assert [a["question_id"] for a in answers] == list(range(12))
    assert answers[0]["prompt"].endswith("The car is behind the suitcase.\nAnswer with true or false.")
    metrics = result.metrics
    assert 0.0 <= metrics["score"] <= 100.0 and metrics["questions"] == 12
    assert sum(v["n"] for v in metrics["per_meta_category"].values()) == 12
    assert _rescore("vsr", VsrOptions(data=options.data), result.answers)["score"] == metrics["score"]
