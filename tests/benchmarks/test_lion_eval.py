"""LION's options at evaluation time (benchmarks/lion.py) on tiny models through `evaluate`:
REC routes through the region adapter and VSR through the image one; a tag-prompt model reads
LION's tag sentence verbatim with the soft vector at its hint; the refusals are one line; the run
signature tells the ways of answering apart."""

from __future__ import annotations

import json

import pytest
import torch

from mof_llava.benchmarks.evaluate import EvalConfig, eval_task, evaluate
from mof_llava.benchmarks.lion import LionEvalError
from mof_llava.benchmarks.rec import RecOptions
from mof_llava.benchmarks.runner import RUN_FILE, Distributed, RunMismatchError
from mof_llava.constants import TAG_HINT_TOKEN_INDEX
from mof_llava.data.records import Record
from mof_llava.data.tag_prompt import TagPromptConfig, with_tag_prompt
from mof_llava.model import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.prompts import model_prompt

REC_IMAGES = [
    "COCO_train2014_000000000001.jpg",
    "COCO_train2014_000000000002.jpg",
]  # the fixture's image files
TEST_A = ["testA:4:0"]  # the question whose picture is inside its row


def _save(root, *, moa=False, tag_prompt=False):
    """A tiny LLaVA-1.5 model with LION's parts asked for; the region adapter gets non-zero
    up-projections (the image adapter stays at its zero init), so routing changes the answers."""
    from mof_llava.model import build_model, llava15_recipe
    from mof_llava.model.configuration import MoaSpec
    from mof_llava.testing.tiny import save_tiny_checkpoints

    parts = save_tiny_checkpoints(root / "components")
    recipe = llava15_recipe(str(parts.llm), str(parts.clip))
    recipe.moa = MoaSpec() if moa else None
    recipe.tag_soft_prompt = tag_prompt
    torch.manual_seed(0)
    model, processor = build_model(recipe)
    if moa:
        torch.manual_seed(3)
        with torch.no_grad():
            for router in model.moa.routers:
                router.adapters[1].up.weight.copy_(torch.randn_like(router.adapters[1].up.weight) * 0.5)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lion_eval")
    return {
        "plain": _save(root / "plain"),
        "moa": _save(root / "moa", moa=True),
        "tags": _save(root / "tags", tag_prompt=True),
    }


def _config(benchmark, options, model, out, **lion):
    return EvalConfig(
        benchmark=benchmark,
        options=options,
        model=model,
        output_dir=out,
        device="cpu",
        threads=1,
        batch_size=1,
        max_new_tokens=5,
        no_progress=True,
        dist=Distributed(),
        **lion,
    )


def _rec(fixtures_dir):
    return RecOptions(data=fixtures_dir / "rec", images=fixtures_dir / "rec" / "images")


def _answers(result):
    return {
        row["question_id"]: row["text"] for row in map(json.loads, result.answers.read_text().splitlines())
    }


def _direct_answers(model_dir, config, task_id):
    """Greedy answers of the saved model to the task's questions with `task_ids` given by hand."""
    model = MofLlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = MofLlavaProcessor.from_pretrained(model_dir)
    task, out = eval_task(config), {}
    for q in task.questions:
        inputs = processor(
            text=[model_prompt(q.text, task.template)], images=[q.load_image()], return_tensors="pt"
        )
        with torch.no_grad():
            ids = model.generate(
                **inputs, max_new_tokens=5, do_sample=False, task_ids=torch.tensor([task_id])
            )
        new = ids[:, inputs["input_ids"].shape[1] :]
        out[q.question_id] = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
    return out


def test_rec_routes_through_the_region_adapter(models, fixtures_dir, tmp_path, forwards):
    config = _config("rec", _rec(fixtures_dir), models["moa"], tmp_path / "rec")
    answers = _answers(evaluate(config))
    assert forwards and all(torch.equal(c["task_ids"], torch.tensor([1])) for c in forwards)
    forwards.clear()
    assert answers == _direct_answers(models["moa"], config, 1)
    assert answers != _direct_answers(models["moa"], config, 0)  # the image adapter answers otherwise
    assert json.loads((tmp_path / "rec" / RUN_FILE).read_text())["moa_task"] == "region"


def test_image_level_and_moa_less_models_route_as_declared(
    models, fixtures_dir, tmp_path, forwards, monkeypatch
):
    from mof_llava.benchmarks import registry

    # REC declared image-level (a frozen registration: the lookup is patched)
    image_level = _as_image_level(registry.get("rec"))
    monkeypatch.setattr(registry, "get", lambda name: image_level)
    evaluate(_config("rec", _rec(fixtures_dir), models["moa"], tmp_path / "image"))
    assert forwards and all(torch.equal(c["task_ids"], torch.tensor([0])) for c in forwards)
    forwards.clear()
    evaluate(_config("rec", _rec(fixtures_dir), models["plain"], tmp_path / "plain"))
    assert forwards and all(c["task_ids"] is None for c in forwards)
    signatures = [json.loads((tmp_path / d / RUN_FILE).read_text()) for d in ("image", "plain")]
    assert [s["moa_task"] for s in signatures] == ["image", None]
    assert [s["tags"] for s in signatures] == [None, None]
    monkeypatch.undo()  # REC region-level again: its answers do not resume into the image-level folder
    with pytest.raises(RunMismatchError, match="different moa_task"):
        evaluate(_config("rec", _rec(fixtures_dir), models["moa"], tmp_path / "image"))


def _as_image_level(bench):
    from dataclasses import replace

    return replace(bench, moa_task="image")


def test_every_registered_benchmark_declares_its_task():
    from mof_llava.benchmarks import registry

    assert {b.name: b.moa_task for b in registry.benchmarks()} == {
        name: ("region" if name == "rec" else "image") for name in registry.names()
    }


def test_tags_reach_the_prompt_verbatim_and_the_hint(models, fixtures_dir, tmp_path, forwards):
    tags_file = tmp_path / "tags.jsonl"
    tags = {REC_IMAGES[0]: ["red cube", "table"], REC_IMAGES[1]: ["dog"]}
    # files keyed by a tail of their path; a picture inside its row by its question id
    tags = {f"images/{k}": v for k, v in tags.items()} | {"testA:4:0": ["cat"]}
    tags_file.write_text("".join(json.dumps({"image": k, "tags": v}) + "\n" for k, v in tags.items()))
    config = _config("rec", _rec(fixtures_dir), models["tags"], tmp_path / "rec", tags_file=tags_file)
    result = evaluate(config)
    plain = {q.question_id: q for q in eval_task(config).questions}
    processor = MofLlavaProcessor.from_pretrained(models["tags"])
    prefills = [
        c["input_ids"] for c in forwards if c["input_ids"] is not None and c["input_ids"].shape[1] > 1
    ]
    assert len(prefills) == len(plain)
    seen = set()
    for ids in prefills:
        (position,) = (ids[0] == TAG_HINT_TOKEN_INDEX).nonzero()[0].tolist()  # exactly one hint per prompt
        text = processor.tokenizer.decode(ids[0, position + 1 :].clamp(min=0))
        seen.add(text.split("]")[0])
    # LION's sentence (lion_t5.py:131) with the file's tags in order, no dropout or shuffle
    assert seen == {
        ", you are allowed to use or partially use the following tags: [red cube, table",
        ", you are allowed to use or partially use the following tags: [dog",
        ", you are allowed to use or partially use the following tags: [cat",
    }
    lines = [json.loads(line) for line in result.answers.read_text().splitlines()]
    assert {a["prompt"] for a in lines} == {q.text for q in plain.values()}  # answer lines keep the question
    signature = json.loads((tmp_path / "rec" / RUN_FILE).read_text())
    assert signature["tags"]["sha256"] and signature["tags"]["file"] == str(tags_file.resolve())


def test_eval_prompt_is_the_training_prompt(models, fixtures_dir, tmp_path):
    from mof_llava.benchmarks import lion

    tags_file = tmp_path / "tags.json"
    tags_file.write_text(json.dumps({name: ["cat", "sofa"] for name in REC_IMAGES}))  # val's first is a file
    question = eval_task(_config("rec", _rec(fixtures_dir), models["tags"], tmp_path)).questions[0]
    (tagged,) = lion.tagged_questions([question], tags_file)
    record = Record(id="0", image="x.jpg", turns=((f"<image>\n{question.text}", "ok"),), tags=("cat", "sofa"))
    trained = with_tag_prompt(record, TagPromptConfig(), 0, "t").turns[0][0]
    assert f"<image>\n{tagged.text}" == trained
    lion_sentence = "According to <tag_hint>, you are allowed to use or partially use the following tags: "
    assert tagged.text == f"{lion_sentence}[cat, sofa]. {question.text}"


@pytest.mark.parametrize(
    ("model", "lion", "message"),
    [
        ("tags", {}, "trained with LION's tag soft prompt .* or evaluate without them with --no-tags"),
        ("plain", {"tags_file": "TAGS"}, "--tags-file .*tags.json: the model has no tag soft prompt"),
        ("plain", {"no_tags": True}, "--no-tags: the model has no tag soft prompt"),
        ("tags", {"tags_file": "TAGS", "no_tags": True}, "--tags-file and --no-tags exclude each other"),
        (
            "tags",
            {"tags_file": "PARTIAL"},
            r"partial.json: no tags for question \S+ \(image \S+/images/\S+02.jpg\)$",
        ),
    ],
)
def test_refusals_are_one_line(models, fixtures_dir, tmp_path, model, lion, message):
    (tmp_path / "tags.json").write_text(json.dumps({name: ["x"] for name in REC_IMAGES + TEST_A}))
    (tmp_path / "partial.json").write_text(json.dumps({name: ["x"] for name in REC_IMAGES[:1] + TEST_A}))
    files = {"TAGS": tmp_path / "tags.json", "PARTIAL": tmp_path / "partial.json"}
    lion = {k: files.get(v, v) for k, v in lion.items()}
    with pytest.raises(LionEvalError, match=message) as err:
        evaluate(_config("rec", _rec(fixtures_dir), models[model], tmp_path / "out", **lion))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / RUN_FILE).exists()  # refused before anything is recorded


def test_no_tags_runs_and_is_recorded_apart(models, fixtures_dir, tmp_path, forwards):
    out = tmp_path / "rec"
    evaluate(_config("rec", _rec(fixtures_dir), models["tags"], out, no_tags=True))
    assert all((c["input_ids"] != TAG_HINT_TOKEN_INDEX).all() for c in forwards if c["input_ids"] is not None)
    assert json.loads((out / RUN_FILE).read_text())["tags"] == "none"
    tags_file = tmp_path / "tags.json"
    tags_file.write_text(json.dumps({name: ["x"] for name in REC_IMAGES + TEST_A}))
    with pytest.raises(RunMismatchError, match="different prompts_sha256, tags"):
        evaluate(_config("rec", _rec(fixtures_dir), models["tags"], out, tags_file=tags_file))


def test_the_command_prints_a_refusal_as_one_line(models, fixtures_dir, tmp_path, capsys):
    from mof_llava.cli import run

    rec = fixtures_dir / "rec"
    argv = [
        "eval",
        "run",
        "rec",
        "--model",
        str(models["tags"]),
        "--data",
        str(rec),
        "--images",
        str(rec / "images"),
        "--output-dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mof-llava: error: the model was trained with LION's tag soft prompt")
    assert err[-1].endswith("or evaluate without them with --no-tags")
    assert not (tmp_path / "out" / RUN_FILE).exists()
