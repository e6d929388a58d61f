"""`mof-llava eval` settings without a model: result names, help texts, and the image loading that
reaches the runner (a fake generator reports the picture it was given)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mof_llava.benchmarks import synthetic
from mof_llava.benchmarks.evaluate import EvalConfig, eval_task
from mof_llava.benchmarks.runner import (
    Distributed,
    RunMismatchError,
    RunOptions,
    default_output_dir,
    result_name,
    run_task,
)
from mof_llava.benchmarks.task import EvalQuestion, EvalTask
from mof_llava.cli import build_parser, main
from mof_llava.commands import eval as eval_command


@pytest.mark.parametrize(
    "model, name",
    [
        ("runs/imof-7b/stage2/model", "imof-7b-stage2"),  # what a sweep's stage 2 writes
        ("runs/imof-7b/model", "imof-7b"),  # a stage 2 run with output_dir runs/imof-7b
        ("runs/imof-7b/stage2/checkpoint-500", "imof-7b-stage2-checkpoint-500"),
        ("checkpoints/llava-v1.5-7b", "llava-v1.5-7b"),  # a named folder keeps its name
        ("runs/models/model-a", "model-a"),
    ],
)
def test_results_are_named_after_the_run(tmp_path, model, name):
    assert result_name(tmp_path / model) == name
    assert default_output_dir(tmp_path / model, "pope") == Path("eval_results") / name / "pope"


def test_two_runs_stage2_models_get_different_result_folders(tmp_path):
    a, b = (default_output_dir(tmp_path / f"runs/{r}/stage2/model", "mmvp") for r in ("a", "b"))
    assert a != b


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("action", ["run", "score"])
def test_benchmark_list_says_what_each_benchmark_is(action, capsys):
    text = _help(["eval", action, "--help"], capsys)
    # a long name gets its description on the next line
    listed = re.findall(r"^ {4}(\S+)(?: +|\n +)(\S.*)$", text, re.MULTILINE)
    names = [name for name, _ in listed]
    assert names == ["mmvp", "mmvp-vlm", "pope", "mmbench", "gqa", "naturalbench", "cvbench", "rec", "vsr"]
    for name, description in listed:  # not `mmvp  mmvp`: a description, not the name again
        assert description.strip() not in (name, name.upper()) and len(description.split()) > 3


def _explained(text: str, flag_with_metavar: str) -> str:
    """The help of one option in `--help` output ('' when the option has none)."""
    flat = " ".join(text.split())
    after = flat[flat.index(flag_with_metavar + " ") + len(flag_with_metavar) :].strip()
    return "" if after.startswith("-") else after.split(" --")[0]


def test_dtype_judge_temperature_and_image_loading_are_explained(capsys):
    text = _help(["eval", "run", "mmbench", "--help"], capsys)
    assert "bfloat16 on a GPU" in _explained(text, "--dtype {auto,float32,bfloat16,float16}")
    assert "temperature" in _explained(text, "--judge-temperature JUDGE_TEMPERATURE")
    assert "convert('RGB')" in _explained(text, "--image-loading {reference,viewer}")
    assert _explained(text, "--no-progress")  # the helper sees help where there is some


@pytest.mark.parametrize("value", ["-0.1", "nan", "warm"])
def test_judge_temperature_must_be_a_non_negative_number(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "score", "mmbench", "--answers", "a", "--data", "d", "--judge-temperature", value])
    assert exit_info.value.code == 2 and "--judge-temperature" in capsys.readouterr().err


def test_mmvp_prompt_help_says_what_the_default_is(capsys):
    text = " ".join(_help(["eval", "run", "mmvp", "--help"], capsys).split())
    assert "llava (default): LLaVA-1.5's multiple-choice convention" in text
    assert "not the paper's protocol" in text


@pytest.mark.parametrize("flag, expected", [([], "reference"), (["--image-loading", "viewer"], "viewer")])
def test_image_loading_flag_reaches_the_task(tmp_path, flag, expected):
    data = synthetic.write_pope(tmp_path / "pope", per_split=1)
    args = build_parser().parse_args(["eval", "run", "pope", "--model", "m", "--data", str(data), *flag])
    config = eval_command.config_from_args(EvalConfig, args)
    assert eval_task(config).image_loading == expected


def _rotated_task(tmp_path: Path, loading: str | None) -> EvalTask:
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 20 x 40
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    task = EvalTask(
        benchmark="probe",
        questions=[EvalQuestion(1, "What size?", image_path=path)],
        template="vicuna_v1",
        max_new_tokens=4,
        settings={},
        data_files={},
        score=lambda answers: {"benchmark": "probe", "score": 0.0},
    )
    if loading is not None:
        task.image_loading = loading
    return task


def _picture_sizes(images, prompts):
    return [f"{image.width}x{image.height}" for image in images]


def test_runner_loads_pictures_the_way_the_task_says_and_records_it(tmp_path):
    out = tmp_path / "default"
    options = RunOptions(output_dir=out, model="m", model_id="m", progress=False)
    run_task(_rotated_task(tmp_path, None), lambda: _picture_sizes, options, Distributed())
    assert json.loads((out / "answers.jsonl").read_text())["text"] == "40x20"  # as stored, like PIL
    assert json.loads((out / "run.json").read_text())["image_loading"] == "reference"
    viewer = RunOptions(output_dir=tmp_path / "viewer", model="m", model_id="m", progress=False)
    metrics = run_task(_rotated_task(tmp_path, "viewer"), lambda: _picture_sizes, viewer, Distributed())
    assert json.loads((tmp_path / "viewer" / "answers.jsonl").read_text())["text"] == "20x40"
    assert metrics["run"]["image_loading"] == "viewer"
    with pytest.raises(RunMismatchError, match="different image_loading"):
        run_task(_rotated_task(tmp_path, "viewer"), lambda: _picture_sizes, options, Distributed())
