"""The evaluation verbs called from Python, no argv: `evaluate(EvalConfig)` on the tiny model and a
synthetic POPE folder gives the answers the runner gives for the same task, resumes a finished
folder without the model, and `score` / `merge` agree with it."""

from __future__ import annotations

import json

import pytest
import torch

from mof_llava.benchmarks import generation, pope, synthetic
from mof_llava.benchmarks.answers import read_answers
from mof_llava.benchmarks.evaluate import (
    EvalConfig,
    EvalConfigError,
    ExportConfig,
    MergeConfig,
    ScoreConfig,
    evaluate,
    export,
    merge,
    score,
)
from mof_llava.benchmarks.gqa import GqaOptions
from mof_llava.benchmarks.pope import PopeOptions
from mof_llava.benchmarks.runner import Distributed, RunOptions, run_task


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mof_llava.testing.tiny import save_tiny_mof_llava

    torch.set_num_threads(1)
    return save_tiny_mof_llava(tmp_path_factory.mktemp("tiny_evaluate"), mixer="interleave")


@pytest.fixture(scope="module")
def pope_dir(tmp_path_factory):
    return synthetic.write_pope(tmp_path_factory.mktemp("pope"), per_split=2)


def _config(model_dir, pope_dir, out, **extra) -> EvalConfig:
    return EvalConfig(
        benchmark="pope",
        options=PopeOptions(data=pope_dir),
        model=model_dir,
        output_dir=out,
        device="cpu",
        threads=1,
        batch_size=4,
        max_new_tokens=5,
        no_progress=True,
        dist=Distributed(),
        **extra,
    )


def _texts(path):
    return [(r["question_id"], r["text"]) for r in read_answers(path)]


def test_evaluate_answers_as_the_runner_does_and_resumes_without_the_model(
    model_dir, pope_dir, tmp_path, monkeypatch
):
    result = evaluate(_config(model_dir, pope_dir, tmp_path / "out", model_id="tiny"))
    assert result.metrics == json.loads(result.metrics_file.read_text())
    assert result.answers == tmp_path / "out" / "answers.jsonl" and result.benchmark == "pope"
    assert result.metrics["run"]["max_new_tokens"] == 5 and result.metrics["run"]["device"] == "cpu"

    # the reference: the runner on the same task with the generator built by hand
    model, processor = generation.load_model(model_dir, "cpu", "float32")
    task = pope.build_task(pope.resolve_paths(pope_dir), max_new_tokens=5)
    options = RunOptions(output_dir=tmp_path / "ref", model=str(model_dir), model_id="tiny", progress=False)
    generate = generation.make_generate_fn(model, processor, 5)
    reference = run_task(task, lambda: generate, options, Distributed())
    assert _texts(result.answers) == _texts(tmp_path / "ref" / "answers.jsonl")
    assert result.metrics["score"] == reference["score"]
    assert {a["model_id"] for a in read_answers(result.answers)} == {"tiny"}

    def no_model(*args):
        raise AssertionError("a finished folder must not load the model")

    monkeypatch.setattr(generation, "load_model", no_model)
    again = evaluate(_config(model_dir, pope_dir, tmp_path / "out", model_id="tiny"))
    assert again.metrics["score"] == result.metrics["score"]
    assert again.metrics["run"]["generated_by_rank0_this_run"] == 0

    rescored = score(
        ScoreConfig(benchmark="pope", options=PopeOptions(data=pope_dir), answers=result.answers)
    )
    assert rescored["score"] == result.metrics["score"] and rescored["answers"] == str(result.answers)


def test_merge_finishes_the_parts_of_an_interrupted_run(model_dir, pope_dir, tmp_path):
    finished = evaluate(_config(model_dir, pope_dir, tmp_path / "done"))
    lines = finished.answers.read_text().splitlines(keepends=True)
    out = tmp_path / "parts"
    out.mkdir()
    (out / "answers.part-000-of-002.jsonl").write_text("".join(lines[0::2]))
    (out / "answers.part-001-of-002.jsonl").write_text("".join(lines[1::2]))
    merged = merge(MergeConfig(benchmark="pope", options=PopeOptions(data=pope_dir), output_dir=out))
    assert merged.answers.read_text() == finished.answers.read_text()
    assert merged.metrics["score"] == finished.metrics["score"] and not list(out.glob("answers.part-*"))


def test_configs_that_cannot_run_say_what_is_wrong(model_dir, pope_dir, tmp_path, fixtures_dir):
    with pytest.raises(EvalConfigError, match="^pope: options must be a PopeOptions, got GqaOptions$"):
        evaluate(EvalConfig(benchmark="pope", options=GqaOptions(data=pope_dir), model=model_dir))
    with pytest.raises(EvalConfigError, match=r"^pope has no export; .*\bgqa\b.* do$"):
        export(ExportConfig(benchmark="pope", answers=tmp_path / "a.jsonl", output=tmp_path / "x"))
    out = tmp_path / "testdev_balanced_predictions.json"
    answers = fixtures_dir / "gqa/llava-v1.5-13b.jsonl"
    assert export(ExportConfig(benchmark="gqa", answers=answers, output=out)) == out
    assert out.read_bytes() == (fixtures_dir / "gqa/expected_testdev_balanced_predictions.json").read_bytes()
