"""The lmms-eval plugin, driven by lmms-eval's own evaluator: `simple_evaluate(model="mof_llava")` finds
the model through the `lmms_eval.models` entry point and answers local tasks that reuse lmms-eval's
real POPE and MMVP task code over parquet files laid out like lmms-lab's datasets.

A model with LION's parts (a mixture of adapters, the tag soft prompt) answers through the adapters
`moa_task` names and reads LION's tag sentence, as `mof-llava eval run` makes it, with the tags of
`tags_file`; what eval run refuses is refused in one line.

The answers must be the ones mof-llava's own generation path gives one question at a time (prompt,
template, image handling, left-padded batches); lmms-eval's MMVP scores of those answers must equal
our scorer's with lmms-eval's grader; and the log-likelihoods of a multiple-choice task must equal
the model's own loss on each unpadded prompt + choice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval", reason="the lmms-eval extra (scripts/setup.sh installs it)")

from mof_llava.prompts import SHORT_ANSWER  # noqa: E402

LMMS_TASKS = Path(lmms_eval.__file__).parent / "tasks"
COLOURS = ["red", "green", "blue", "yellow"]
# (Index, Question, Options, Correct Answer) in MMVP's columns, two pairs
MMVP_ROWS = [
    (1, "Is the shape red?", "(a) Yes (b) No", "(a)"),
    (2, "Is the shape red?", "(a) Yes (b) No", "(b)"),
    (3, "Which colour is the shape?", "(a) blue (b) yellow", "(a)"),
    (4, "Which colour is the shape?", "(a) blue (b) yellow", "(b)"),
]
POPE_QUESTIONS = ["Is there a circle in the image?", "Is there a dog in the image?"]


def _images():
    from PIL import Image

    return [Image.new("RGB", (40 + 8 * i, 56), colour) for i, colour in enumerate(COLOURS)]


def _write_parquet(rows: dict, path: Path) -> None:
    import datasets

    features = datasets.Features(
        {k: datasets.Image() if k == "image" else datasets.Value(_kind(v[0])) for k, v in rows.items()}
    )
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def _kind(value) -> str:
    return "int64" if isinstance(value, int) else "string"


def _choice_task(name: str, split: str, file: str, utils: str, target: str, choices: list[str]) -> str:
    """A multiple-choice task over a local parquet file, with a benchmark's own visual and text functions
    (`utils` + `_doc_to_visual`, `_doc_to_text`)."""
    return (
        f"task: {name}\ntest_split: {split}\noutput_type: multiple_choice\n"
        f"dataset_path: parquet\ndataset_kwargs:\n  data_files:\n    {split}: {file}\n"
        f"doc_to_visual: !function {utils}_doc_to_visual\ndoc_to_text: !function {utils}_doc_to_text\n"
        f"doc_to_target: {target}\ndoc_to_choice: {choices}\nmetric_list:\n  - metric: acc\n"
    )


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Three local tasks: lmms-eval's POPE and MMVP YAMLs (included, so their prompts, utils and
    metrics are lmms-eval's) over local parquet files, and a multiple-choice MMVP variant."""
    root = tmp_path_factory.mktemp("lmms_tasks")
    images = _images()
    _write_parquet(
        {
            "question_id": ["0", "1"],
            "question": POPE_QUESTIONS,
            "answer": ["yes", "no"],
            "category": ["adversarial"] * 2,
            "image": images[:2],
        },
        root / "pope.parquet",
    )
    columns = ["Index", "Question", "Options", "Correct Answer"]
    mmvp = {c: [row[i] for row in MMVP_ROWS] for i, c in enumerate(columns)}
    _write_parquet({**mmvp, "image": images}, root / "mmvp.parquet")
    local = "dataset_path: parquet\ndataset_kwargs:\n  data_files:\n    {split}: {file}\n"
    (root / "pope_local.yaml").write_text(
        f"include: {LMMS_TASKS / 'pope' / 'pope.yaml'}\ntask: pope_local\n"
        + local.format(split="test", file="pope.parquet")
    )
    (root / "mmvp_local.yaml").write_text(
        f"include: {LMMS_TASKS / 'mmvp' / 'mmvp.yaml'}\ntask: mmvp_local\n"
        + local.format(split="train", file="mmvp.parquet")
    )
    mmvp, pope = "lmms_eval.tasks.mmvp.utils.mmvp", "lmms_eval.tasks.pope.utils.pope"
    mmvp_target = f"!function {mmvp}_doc_to_target"
    (root / "mmvp_choice.yaml").write_text(
        _choice_task("mmvp_choice", "train", "mmvp.parquet", mmvp, mmvp_target, ["A", "B"])
    )
    (root / "pope_choice.yaml").write_text(
        _choice_task("pope_choice", "test", "pope.parquet", pope, "answer", ["yes", "no"])
        + f'lmms_eval_specific_kwargs:\n  default:\n    post_prompt: "\\n{SHORT_ANSWER}"\n'
    )
    return root


@pytest.fixture(scope="module")
def evaluated(tiny_model, task_dir, tmp_path_factory):
    import os

    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    # lmms-eval's datasets cache, read when a task loads: keep it out of ~/.cache
    os.environ["LMMS_EVAL_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("lmms_cache"))
    threads = torch.get_num_threads()  # the plugin sets one thread (threads=1); put it back after
    yield simple_evaluate(
        model="mof_llava",
        model_args=f"pretrained={tiny_model},threads=1",
        tasks=["pope_local", "mmvp_local", "mmvp_choice"],
        batch_size=3,  # batches of 3 and 1: padding inside a batch must not change an answer
        # only the local tasks: indexing lmms-eval's 3000 task YAMLs takes longer than the evaluation
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        process_docs_parallel=1,
    )
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from mof_llava.testing.tiny import save_tiny_mof_llava

    return save_tiny_mof_llava(tmp_path_factory.mktemp("tiny_lmms"), mixer="interleave")


@pytest.fixture(scope="module")
def ours(tiny_model):
    from mof_llava.benchmarks.generation import load_model

    return load_model(tiny_model, "cpu", "float32")


def _one_by_one(ours, images, texts, max_new_tokens):
    from mof_llava.benchmarks.generation import make_generate_fn
    from mof_llava.prompts import model_prompt

    generate = make_generate_fn(*ours, max_new_tokens)
    return [generate([image], [model_prompt(text)])[0] for image, text in zip(images, texts)]


def test_the_entry_point_registers_the_model():
    from lmms_eval.models import get_model

    from mof_llava.integrations.lmms_model import MofLlava

    assert get_model("mof_llava") is MofLlava


def test_pope_answers_are_mof_llavas_own(evaluated, ours, one_torch_thread):
    samples = sorted(evaluated["samples"]["pope_local"], key=lambda s: s["doc_id"])
    texts = [f"{q}\n{SHORT_ANSWER}" for q in POPE_QUESTIONS]  # LLaVA-1.5's POPE prompt
    assert [s["arguments"][0] for s in samples] == texts
    answers = [s["resps"][0][0] for s in samples]
    assert answers == _one_by_one(ours, _images()[:2], texts, max_new_tokens=128)  # pope.yaml's limit
    assert set(evaluated["results"]["pope_local"]) >= {"pope_accuracy,none", "pope_f1_score,none"}


def test_mmvp_scores_agree_with_ours(evaluated, ours, one_torch_thread):
    from mof_llava.benchmarks.mmvp import MMVPQuestion, parse_options, question_text, score_mmvp

    questions = [MMVPQuestion(i, q, parse_options(o), o, a.strip("()")) for i, q, o, a in MMVP_ROWS]
    samples = sorted(evaluated["samples"]["mmvp_local"], key=lambda s: s["doc_id"])
    assert [s["arguments"][0] for s in samples] == [question_text(q, "llava") for q in questions]
    answers = [s["resps"][0][0] for s in samples]
    assert answers == _one_by_one(ours, _images(), [question_text(q) for q in questions], 16)
    metrics = score_mmvp(
        {str(q.index): {"text": a} for q, a in zip(questions, answers)}, questions, grader="lmms-eval"
    )
    theirs = evaluated["results"]["mmvp_local"]
    assert 100 * theirs["mmvp_accuracy,none"] == pytest.approx(metrics["question_accuracy"])
    assert 100 * theirs["mmvp_pair_accuracy,none"] == pytest.approx(metrics["pair_accuracy"])


def test_loglikelihood_is_the_models_own_loss(evaluated, ours, one_torch_thread):
    import torch

    from mof_llava.prompts import model_prompt

    model, processor = ours
    samples = sorted(evaluated["samples"]["mmvp_choice"], key=lambda s: s["doc_id"])
    for sample, image in zip(samples, _images()):
        prompt = model_prompt(sample["arguments"][0])
        for choice, [(loglikelihood, _)] in zip(["A", "B"], sample["resps"]):
            full = processor(text=[prompt + " " + choice], images=[image])
            n_prompt = len(processor(text=[prompt], images=[image])["input_ids"][0])
            labels = full["input_ids"].clone()
            labels[:, :n_prompt] = -100
            with torch.inference_mode():
                loss = model(**full, labels=labels).loss
            assert loglikelihood == pytest.approx(-loss.item() * (labels.shape[1] - n_prompt), rel=1e-4)


def test_model_args_are_checked_in_one_line(tiny_model, tmp_path):
    from mof_llava.integrations.lmms_model import read_model_args
    from mof_llava.paths import ModelPathError
    from mof_llava.typed_config import ConfigError

    assert read_model_args({"pretrained": str(tiny_model), "batch_size": "4", "device": None}).batch_size == 4
    refusals = {
        "unknown model_args ['batch']": {"pretrained": str(tiny_model), "batch": 2},
        "batch_size must be": {"pretrained": str(tiny_model), "batch_size": 0},
        "unknown conversation template 'vicuna'": {"pretrained": str(tiny_model), "template": "vicuna"},
        "--model_args pretrained: folder not found": {"pretrained": str(tmp_path / "absent")},
    }
    for expected, raw in refusals.items():
        with pytest.raises((ConfigError, ModelPathError)) as err:
            read_model_args(raw)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_requests_it_cannot_answer_are_refused(caplog):
    from mof_llava.integrations.lmms_model import LmmsRequestError, greedy_settings, rgb_images

    for _ in range(2):  # a setting greedy decoding does not read is logged, once per task
        greedy_settings({"max_new_tokens": 8, "image_aspect_ratio": "original"}, "mmbench_logged")
    logged = [r.getMessage() for r in caplog.records if "mmbench_logged" in r.getMessage()]
    assert logged == [
        "task mmbench_logged: generation settings ['image_aspect_ratio'] are not used by mof_llava"
    ]

    assert greedy_settings({"max_new_tokens": 16, "temperature": 0, "until": "\n\n"}, "t") == (16, ["\n\n"])
    assert greedy_settings({}, "t") == (128, [])  # LLaVA's default limit
    for sampling in ({"temperature": 0.2}, {"do_sample": True}, {"num_beams": 3}):
        with pytest.raises(LmmsRequestError, match="task mmvp: asks for sampling or beam search"):
            greedy_settings(sampling, "mmvp")
    with pytest.raises(LmmsRequestError, match="task videomme, doc 7: .* got a str visual"):
        rgb_images(["clip.mp4"], "videomme", 7)


def test_prompts_put_the_picture_first_and_answers_stop_at_until():
    from mof_llava.integrations.lmms_model import cut_at_stops, user_turn

    assert user_turn("Is it red?", 1) == "<image>\nIs it red?"
    assert user_turn("Is it red?", 0) == "Is it red?"
    assert user_turn("Compare <image> and <image>.", 2) == "Compare <image> and <image>."
    assert cut_at_stops("B\n\nASSISTANT: more", ["ASSISTANT:", "\n\n"]) == "B"


# -- LION's options ----------------------------------------------------------------------------------
POPE_TAGS = {"0": ["red", "square"], "1": ["green"]}  # POPE's question_id -> tags


@pytest.fixture(scope="module")
def lion_model(tmp_path_factory) -> Path:
    """A tiny I-MoF with a mixture of adapters and the tag soft prompt; the region adapters get
    non-zero up-projections (the image ones stay at their zero init), so routing changes answers."""
    import torch

    from mof_llava import MofLlavaForConditionalGeneration
    from mof_llava.testing.tiny import save_tiny_mof_llava

    path = save_tiny_mof_llava(tmp_path_factory.mktemp("tiny_lion"), moa=True, tag_soft_prompt=True)
    model = MofLlavaForConditionalGeneration.from_pretrained(path)
    torch.manual_seed(3)
    with torch.no_grad():
        for router in model.moa.routers:
            router.adapters[1].up.weight.copy_(torch.randn_like(router.adapters[1].up.weight) * 0.5)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tags_file(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("tags") / "pope_tags.jsonl"
    path.write_text("".join(json.dumps({"image": k, "tags": v}) + "\n" for k, v in POPE_TAGS.items()))
    return path


def _lion_evaluate(model_args: str, task_dir, tmp_path) -> dict:
    import os

    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    os.environ["LMMS_EVAL_DATASETS_CACHE"] = str(tmp_path / "lmms_cache")
    threads = torch.get_num_threads()
    try:
        return simple_evaluate(
            model="mof_llava",
            model_args=model_args + ",threads=1",
            tasks=["pope_local", "pope_choice"],
            batch_size=2,
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
            process_docs_parallel=1,
        )
    finally:
        torch.set_num_threads(threads)


def _direct(model_dir, prompts, images, task_id, max_new_tokens=128):
    """Greedy answers of the saved model, one by one, with `task_ids` given by hand."""
    import torch

    from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor

    model = MofLlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = MofLlavaProcessor.from_pretrained(model_dir)
    out = []
    for prompt, image in zip(prompts, images):
        inputs = processor(text=[prompt], images=[image])
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 task_ids=torch.tensor([task_id]))  # fmt: skip
        new = ids[:, inputs["input_ids"].shape[1] :]
        out.append(processor.batch_decode(new, skip_special_tokens=True)[0].strip())
    return out


def _logprob(model_dir, prompt, continuation, image, task_id):
    """The model's summed log-probability of `continuation` after `prompt`, routed by hand."""
    import torch

    from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor

    model = MofLlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = MofLlavaProcessor.from_pretrained(model_dir)
    full = processor(text=[prompt + continuation], images=[image])
    n_prompt = len(processor(text=[prompt], images=[image])["input_ids"][0])
    labels = full["input_ids"].clone()
    labels[:, :n_prompt] = -100
    with torch.inference_mode():
        loss = model(**full, labels=labels, task_ids=torch.tensor([task_id])).loss
    return -loss.item() * (labels.shape[1] - n_prompt)


def test_a_lion_model_answers_through_the_named_adapters_with_lions_tag_sentence(
    lion_model, tags_file, task_dir, tmp_path, forwards, one_torch_thread
):
    import torch

    from mof_llava.constants import TAG_HINT_TOKEN_INDEX
    from mof_llava.prompts import model_prompt

    args = f"pretrained={lion_model},moa_task=region,tags_file={tags_file}"
    result = _lion_evaluate(args, task_dir, tmp_path)
    assert forwards and all(torch.equal(c["task_ids"], torch.full_like(c["task_ids"], 1)) for c in forwards)
    prompt_forwards = [c["input_ids"] for c in forwards if c["input_ids"].shape[1] > 1]  # not decoding steps
    assert prompt_forwards  # every prompt holds one hint per row
    assert all((ids == TAG_HINT_TOKEN_INDEX).sum(1).eq(1).all() for ids in prompt_forwards)
    # LION's sentence, written out here, after the <image> line (model_prompt puts that first)
    hint = "According to <tag_hint>, you are allowed to use or partially use the following tags: [{}]. "
    prompts = [model_prompt(hint.format(", ".join(POPE_TAGS[str(i)])) + f"{q}\n{SHORT_ANSWER}")
               for i, q in enumerate(POPE_QUESTIONS)]  # fmt: skip
    answers = [s["resps"][0][0] for s in sorted(result["samples"]["pope_local"], key=lambda s: s["doc_id"])]
    assert answers == _direct(lion_model, prompts, _images()[:2], task_id=1)
    # the image adapters answer otherwise
    assert answers != _direct(lion_model, prompts, _images()[:2], task_id=0)
    choices = sorted(result["samples"]["pope_choice"], key=lambda s: s["doc_id"])
    for sample, prompt, image in zip(choices, prompts, _images()):
        for choice, [(loglikelihood, _)] in zip(["yes", "no"], sample["resps"]):
            expected = _logprob(lion_model, prompt, " " + choice, image, task_id=1)
            assert loglikelihood == pytest.approx(expected, rel=1e-4)
    forwards.clear()
    _lion_evaluate(f"pretrained={lion_model},no_tags=true", task_dir, tmp_path / "default")
    assert forwards and all(torch.equal(c["task_ids"], torch.zeros_like(c["task_ids"])) for c in forwards)
    assert not any((c["input_ids"] == TAG_HINT_TOKEN_INDEX).any() for c in forwards)


def test_lion_options_the_model_lacks_are_refused_in_one_line(lion_model, tiny_model, tags_file):
    from mof_llava.benchmarks.lion import LionEvalError
    from mof_llava.integrations.lmms_model import MofLlava
    from mof_llava.typed_config import ConfigError

    no_prompt = ": the model has no tag soft prompt"
    refusals = [
        (lion_model, {}, "trained with LION's tag soft prompt .* without them with --model_args no_tags"),
        (tiny_model, {"tags_file": str(tags_file)}, "--model_args tags_file .*pope_tags.jsonl" + no_prompt),
        (tiny_model, {"no_tags": "true"}, "--model_args no_tags" + no_prompt),
        (tiny_model, {"moa_task": "image"}, "moa_task=image: the model has no mixture of adapters"),
        (lion_model, {"tags_file": str(tags_file), "no_tags": "true"}, "tags_file and --model_args no_tags"),
    ]
    for model, extra, expected in refusals:
        with pytest.raises(LionEvalError, match=expected) as err:
            MofLlava(pretrained=str(model), threads=1, **extra)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="moa_task"):
        MofLlava(pretrained=str(lion_model), threads=1, no_tags="true", moa_task="caption")
