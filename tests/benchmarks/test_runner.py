"""The runner end to end on the tiny model: every benchmark from small folders in the real
formats, batched = one at a time, resume after a crash, shards merged."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mof_llava.benchmarks import mmvp, pope, synthetic
from mof_llava.benchmarks.answers import AnswerFileError, read_answers
from mof_llava.benchmarks.generation import load_model, make_generate_fn
from mof_llava.benchmarks.runner import Distributed, RunMismatchError, RunOptions, run_task
from mof_llava.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mof_llava.testing.tiny import save_tiny_mof_llava

    return save_tiny_mof_llava(tmp_path_factory.mktemp("tiny_eval"), mixer="interleave")


@pytest.fixture(scope="module")
def generator(model_dir):
    model, processor = load_model(model_dir, "cpu", "float32")
    return make_generate_fn(model, processor, max_new_tokens=6)


@pytest.fixture(scope="module")
def pope_dir(tmp_path_factory):
    return synthetic.write_pope(tmp_path_factory.mktemp("pope"), per_split=4)


def _task(pope_dir):
    return pope.build_task(pope.resolve_paths(pope_dir), max_new_tokens=6)


def _options(out, model_dir, batch_size=4):
    return RunOptions(
        output_dir=out, model=str(model_dir), model_id="tiny", batch_size=batch_size, progress=False
    )


def _texts(path):
    return [(r["question_id"], r["text"]) for r in read_answers(path)]


def test_batched_answers_equal_one_at_a_time(pope_dir, model_dir, generator, tmp_path):
    task = _task(pope_dir)
    one = run_task(
        task, lambda: generator, _options(tmp_path / "one", model_dir, batch_size=1), Distributed()
    )
    many = run_task(
        task, lambda: generator, _options(tmp_path / "many", model_dir, batch_size=5), Distributed()
    )
    assert _texts(tmp_path / "one" / "answers.jsonl") == _texts(tmp_path / "many" / "answers.jsonl")
    assert [q for q, _ in _texts(tmp_path / "many" / "answers.jsonl")] == [
        q.question_id for q in task.questions
    ]
    assert one["score"] == many["score"]


def test_generate_fn_pads_left_and_preprocesses_pictures_as_asked(model_dir):
    model, processor = load_model(model_dir, "cpu", "float32")
    seen = []
    generate = model.generate

    def spy(**inputs):
        seen.append(inputs)
        return generate(**inputs)

    model.generate = spy
    wide = synthetic.picture(0, size=(112, 40))
    prompts = ["<image>\nHi", "<image>\nIs there a dog in the image? Answer the question."]
    for aspect in ("pad", "crop"):
        make_generate_fn(model, processor, 2, image_aspect_ratio=aspect)([wide, wide], prompts)
    pad, crop = seen
    assert torch.equal(pad["pixel_values"][0], processor.preprocess_images([wide], "pad")[0])
    assert torch.equal(crop["pixel_values"][0], processor.preprocess_images([wide], "crop")[0])
    assert not torch.equal(pad["pixel_values"], crop["pixel_values"])
    mask = pad["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()  # the shorter prompt is padded on the left


def test_resume_after_a_crash_loses_and_duplicates_nothing(pope_dir, model_dir, generator, tmp_path, caplog):
    task = _task(pope_dir)
    run_task(task, lambda: generator, _options(tmp_path / "reference", model_dir), Distributed())

    calls = []

    def crashing(images, prompts):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return generator(images, prompts)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_task(task, lambda: crashing, _options(out, model_dir), Distributed())
    part = out / "answers.part-000-of-001.jsonl"
    assert len(part.read_text().splitlines()) == 8 and not (out / "answers.jsonl").exists()
    with open(part, "a") as handle:  # a crash in the middle of a write leaves a torn line
        handle.write('{"question_id": 20000001, "prompt": "Is th')

    generated = []

    def counting(images, prompts):
        generated.extend(prompts)
        return generator(images, prompts)

    with caplog.at_level(logging.WARNING):
        metrics = run_task(task, lambda: counting, _options(out, model_dir), Distributed())
    assert "incomplete last line" in caplog.text
    assert len(generated) == len(task.questions) - 8
    assert _texts(out / "answers.jsonl") == _texts(tmp_path / "reference" / "answers.jsonl")
    assert not part.exists() and metrics["run"]["generated_by_rank0_this_run"] == 4

    # a finished run resumes to a no-op that never loads the model
    def must_not_load():
        raise AssertionError("the model was loaded for a finished run")

    again = run_task(task, must_not_load, _options(out, model_dir), Distributed())
    assert again["score"] == metrics["score"]


def test_parts_left_by_a_sharded_run_are_reused_by_a_single_process(pope_dir, model_dir, generator, tmp_path):
    task = _task(pope_dir)
    reference = tmp_path / "reference"
    run_task(task, lambda: generator, _options(reference, model_dir), Distributed())
    lines = (reference / "answers.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "run"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("answers.jsonl", "metrics.json"))
    # rank 0 of 2 finished, rank 1 died after two answers, mid-line
    (out / "answers.part-000-of-002.jsonl").write_text("".join(lines[0::2]))
    (out / "answers.part-001-of-002.jsonl").write_text("".join(lines[1::2][:2]) + lines[5][:30])
    generated = []
    run_task(
        task,
        lambda: lambda i, p: generated.extend(p) or generator(i, p),
        _options(out, model_dir),
        Distributed(),
    )
    assert len(generated) == len(lines) - len(lines[0::2]) - 2
    assert _texts(out / "answers.jsonl") == _texts(reference / "answers.jsonl")
    assert not list(out.glob("answers.part-*"))


def test_merge_refuses_duplicate_answers(pope_dir, model_dir, generator, tmp_path):
    task = _task(pope_dir)
    out = tmp_path / "run"
    run_task(task, lambda: generator, _options(out, model_dir), Distributed())
    first = json.loads((out / "answers.jsonl").read_text().splitlines()[0])
    # the same line left in a part (crash after the merge, before the parts were removed): one answer
    (out / "answers.part-000-of-002.jsonl").write_text(json.dumps(first) + "\n")
    run_task(task, lambda: generator, _options(out, model_dir), Distributed())
    assert not list(out.glob("answers.part-*"))
    # a second, different answer to the same question: refused
    (out / "answers.part-000-of-002.jsonl").write_text(json.dumps(first | {"answer_id": "other"}) + "\n")
    with pytest.raises(AnswerFileError, match="question_id 1 is answered twice"):
        run_task(task, lambda: generator, _options(out, model_dir), Distributed())


def test_resuming_with_other_settings_is_refused(pope_dir, model_dir, generator, tmp_path):
    out = tmp_path / "run"
    run_task(_task(pope_dir), lambda: generator, _options(out, model_dir), Distributed())
    other = pope.build_task(pope.resolve_paths(pope_dir), max_new_tokens=9)
    with pytest.raises(RunMismatchError, match="different max_new_tokens"):
        run_task(other, lambda: generator, _options(out, model_dir), Distributed())


def test_scoring_settings_may_change_on_resume_but_prompts_may_not(model_dir, generator, tmp_path):
    data = synthetic.write_mmvp(tmp_path / "mmvp", pairs=2)
    out = tmp_path / "run"
    first = run_task(
        mmvp.build_task(data, max_new_tokens=6), lambda: generator, _options(out, model_dir), Distributed()
    )
    rescored = run_task(
        mmvp.build_task(data, grader="lmms-eval", labels="corrected", max_new_tokens=6),
        lambda: pytest.fail("nothing to generate"),
        _options(out, model_dir),
        Distributed(),
    )
    assert (first["grader"], rescored["grader"], rescored["labels"]) == ("ours", "lmms-eval", "corrected")
    with pytest.raises(RunMismatchError, match="different prompts_sha256"):
        run_task(
            mmvp.build_task(data, prompt="cambrian", max_new_tokens=6),
            lambda: generator,
            _options(out, model_dir),
            Distributed(),
        )


def _run_cli(argv, capsys):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("bench", ["mmvp", "pope", "mmbench", "gqa"])
def test_each_benchmark_runs_and_rescores_from_the_command_line(bench, model_dir, tmp_path, capsys):
    data = {
        "mmvp": lambda: synthetic.write_mmvp(tmp_path / "mmvp", pairs=3, header="lndex"),
        "pope": lambda: synthetic.write_pope(tmp_path / "pope", per_split=4),
        "mmbench": lambda: synthetic.write_mmbench(tmp_path / "mmbench_dev.tsv", questions=3),
        "gqa": lambda: synthetic.write_gqa(tmp_path / "gqa", questions=4),
    }[bench]()
    out = tmp_path / "out"
    summary = _run_cli(
        [
            "eval",
            "run",
            bench,
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--batch-size",
            "3",
            "--max-new-tokens",
            "5",
            "--no-progress",
        ],
        capsys,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["score"] == metrics["score"] is not None and 0.0 <= metrics["score"] <= 100.0
    run = metrics["run"]
    assert run["model"] == str(model_dir.resolve()) and run["model_config"]["model_type"] == "mof_llava"
    assert run["max_new_tokens"] == 5 and run["code_version"]["mof_llava"] and run["data_files"]
    assert all("path" in v for v in run["data_files"].values())
    answers = read_answers(out / "answers.jsonl")
    expected_count = {"mmvp": 6, "pope": 12, "mmbench": 9, "gqa": 4}[bench]
    # the model folder is <dir>/model, so the answers are named after <dir> (see result_name)
    assert len(answers) == expected_count and all(a["model_id"] == model_dir.parent.name for a in answers)
    rescore = ["eval", "score", bench, "--answers", str(out / "answers.jsonl"), "--data", str(data)]
    assert _run_cli(rescore, capsys)["score"] == metrics["score"]
    if bench == "mmbench":
        assert answers[0]["round_id"] == 0 and answers[0]["option_char"] == ["A", "B"]
        assert answers[0]["prompt"] == "Which picture is shown?\nA. a red square\nB. a green square"
    if bench == "gqa":
        predictions = json.loads((out / "testdev_balanced_predictions.json").read_text())
        assert [p["questionId"] for p in predictions] == [str(a["question_id"]) for a in answers]
    if bench == "mmvp":
        assert answers[0]["prompt"].endswith(
            "\nA. Yes\nB. No\nAnswer with the option's letter from the given choices directly."
        )


def test_two_runs_models_evaluated_with_default_folders_stay_apart(
    pope_dir, model_dir, tmp_path, monkeypatch, capsys
):
    from mof_llava.experiments.results import collect

    monkeypatch.chdir(tmp_path)
    for run in ("imof-7b", "amof-7b"):  # both stage 2s wrote <run>/stage2/model
        model = shutil.copytree(model_dir, tmp_path / "runs" / run / "stage2" / "model")
        argv = [
            "eval",
            "run",
            "pope",
            "--model",
            str(model),
            "--data",
            str(pope_dir),
            "--max-new-tokens",
            "2",
        ]
        _run_cli([*argv, "--no-progress"], capsys)
    folders = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.json"))
    assert folders == ["eval_results/amof-7b-stage2/pope", "eval_results/imof-7b-stage2/pope"]
    # the tables name the rows after the runs, not "model"
    assert sorted(r.group for r in collect([tmp_path / "eval_results"]).results) == [
        "amof-7b-stage2",
        "imof-7b-stage2",
    ]


def test_missing_image_names_the_question(model_dir, tmp_path, capsys):
    data = synthetic.write_mmvp(tmp_path / "mmvp", pairs=2)
    (data / "MMVP Images" / "3.jpg").unlink()
    from mof_llava.data.images import ImageLoadError

    with pytest.raises(ImageLoadError, match=r"3.jpg: file not found \(image of question 3\)"):
        main(
            [
                "eval",
                "run",
                "mmvp",
                "--model",
                str(model_dir),
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_shards_and_merges(pope_dir, model_dir, generator, tmp_path):
    task = _task(pope_dir)
    run_task(task, lambda: generator, _options(tmp_path / "single", model_dir), Distributed())
    out = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "eval" / "run.py"),
        "pope",
        "--model",
        str(model_dir),
        "--data",
        str(pope_dir),
        "--output-dir",
        str(out),
        "--batch-size",
        "4",
        "--max-new-tokens",
        "6",
        "--no-progress",
    ]
    # own process group, so a hung launch can be killed with its workers
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    assert _texts(out / "answers.jsonl") == _texts(tmp_path / "single" / "answers.jsonl")
    assert json.loads((out / "metrics.json").read_text())["run"]["world_size"] == 2
    assert not list(out.glob("answers.part-*"))


def test_limited_smoke_run_writes_its_answers_and_is_not_scored(pope_dir, tmp_path):
    task = _task(pope_dir)
    options = _options(tmp_path / "smoke", "tiny")
    options.limit = 3
    metrics = run_task(task, lambda: lambda images, prompts: ["No"] * len(prompts), options, Distributed())
    assert metrics["score"] is None and "3 of 12 questions" in metrics["note"]
    assert [q for q, _ in _texts(tmp_path / "smoke" / "answers.jsonl")] == [
        q.question_id for q in task.questions[:3]
    ]
    assert json.loads((tmp_path / "smoke" / "metrics.json").read_text())["run"]["limit"] == 3


def test_merge_by_hand_keeps_the_runs_provenance(pope_dir, model_dir, generator, tmp_path):
    out = tmp_path / "run"
    finished = run_task(_task(pope_dir), lambda: generator, _options(out, model_dir), Distributed())
    (out / "metrics.json").unlink()  # as if the run stopped before its own merge
    assert main(["eval", "merge", "pope", "--output-dir", str(out), "--data", str(pope_dir)]) == 0
    merged = json.loads((out / "metrics.json").read_text())
    assert merged["score"] == finished["score"]
    for key in ("model", "model_id", "template", "max_new_tokens", "settings", "data_files", "batch_size"):
        assert merged["run"][key] == finished["run"][key], key
    assert merged["run"]["merged_by"] == "mof-llava eval merge"
