"""Negative generation end to end on a tiny I-MoF model: answers on the weakened image (per tower),
the contrast branch with its own KV cache, resume after a kill, and one-line input errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.conversation import get_template
from mof_llava.data.preference_records import read_pairs
from mof_llava.preference import negatives as neg
from mof_llava.preference.negatives import NegativesError, NegativesJob, negatives
from mof_llava.preference.weakened_sampling import (
    ContrastiveLogits,
    Decoding,
    WeakenedImageSampler,
    Weakening,
)
from mof_llava.preference.weakening import sample_generator

N_RECORDS, NEW_TOKENS = 4, 5
PROMPT = "<image>\nDescribe the image briefly."


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Four plain-colour pictures and their records (the ground truth mentions swappable words)."""
    root = tmp_path_factory.mktemp("seeds")
    rows = []
    for i in range(N_RECORDS):
        pixels = np.full((56, 56, 3), np.random.RandomState(i).randint(0, 255, 3), dtype="uint8")
        Image.fromarray(pixels).save(root / f"{i}.png")
        rows.append(
            {"id": f"r{i}", "image": f"{i}.png", "prompt": PROMPT, "chosen": f"Two red dogs near {i} cars."}
        )
    (root / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def imof(tiny_model_dirs):
    path = tiny_model_dirs("interleave")
    return (
        path,
        MofLlavaForConditionalGeneration.from_pretrained(path).eval(),
        MofLlavaProcessor.from_pretrained(path),
    )


def _job(seeds, model_dir, out, **kw):
    settings = dict(model=str(model_dir), image_folder=str(seeds), temperature=0.0, max_new_tokens=NEW_TOKENS,
                    batch_size=2, progress=False)  # fmt: skip
    return NegativesJob(seeds / "seeds.jsonl", out, **{**settings, **kw})


def _inputs(processor, seeds, i):
    image = Image.open(seeds / f"{i}.png").convert("RGB")
    return processor(text=[get_template("vicuna_v1").generation_prompt(PROMPT)], images=[image])


def _greedy(model, processor, inputs, pixel_values):
    out = model.generate(**inputs, pixel_values=pixel_values, max_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


def _bpo_noise(pixels, sample_id, seed=0, t=900):
    # BPO's forward diffusion written from its formula (not the library's DiffusionNoise).
    betas = 1 / (1 + np.exp(-np.linspace(-6, 6, 1000))) * (5e-3 - 1e-5) + 1e-5
    alpha_bar = float(np.cumprod(1 - betas)[t])
    noise = torch.randn(pixels.shape, generator=sample_generator(seed, sample_id))
    return math.sqrt(alpha_bar) * pixels + math.sqrt(1 - alpha_bar) * noise


def test_weakened_negatives_are_the_answers_on_the_noised_image(seeds, imof, tmp_path, one_torch_thread):
    model_dir, model, processor = imof
    result = negatives(_job(seeds, model_dir, tmp_path / "pairs.jsonl"))
    barely = tmp_path / "t0.jsonl"  # at t = 0, sqrt(1 - alpha_bar) = 0.003: the picture is kept
    negatives(_job(seeds, model_dir, barely, noise_step=0))
    pairs = read_pairs(tmp_path / "pairs.jsonl").pairs  # the output is a valid flat preference file
    assert result.written == N_RECORDS and [p.id for p in pairs] == [
        f"r{i}#mllm-hal" for i in range(N_RECORDS)
    ]
    assert {(p.neg_type, p.source) for p in pairs} == {("mllm-hal", "seeds")}
    answers = []
    with torch.inference_mode():
        for i, pair in enumerate(pairs):
            inputs = _inputs(processor, seeds, i)
            clean = inputs.pop("pixel_values")
            noisy = _bpo_noise(clean[0], f"r{i}")[None]
            assert pair.rejected == _greedy(model, processor, inputs, {"clip": noisy, "dinov2": noisy})
            answers.append(_greedy(model, processor, inputs, clean))
    # At t = 900 the picture is mostly noise and every answer changes; at t = 0 none does.
    assert all(pair.rejected != clean for pair, clean in zip(pairs, answers, strict=True))
    assert [p.rejected for p in read_pairs(barely).pairs] == answers


@pytest.mark.parametrize(
    "target, weakened", [("dinov2", {"dinov2"}), ("clip", {"clip"}), ("both", {"clip", "dinov2"})]
)
def test_a_target_weakens_only_that_towers_input(
    seeds, imof, tower_inputs, target, weakened, one_torch_thread
):
    _, model, processor = imof
    sampler = WeakenedImageSampler(
        model, processor, Weakening(target=target), Decoding(temperature=0, max_new_tokens=1)
    )
    image = Image.open(seeds / "0.png").convert("RGB")
    clean = processor(text=[PROMPT], images=[image])["pixel_values"]
    seen = tower_inputs(model)
    sampler.answer(["r0"], [image], [PROMPT])
    for tower in ("clip", "dinov2"):
        expected = _bpo_noise(clean[0], "r0")[None] if tower in weakened else clean
        torch.testing.assert_close(seen[tower][0], expected, rtol=0, atol=1e-6)


def test_the_contrast_branch_keeps_its_own_kv_cache(seeds, imof, one_torch_thread):
    """With the other image equal to the conditioning one, the second branch must give, at every step,
    the log-probs a plain generate computes; a branch that reused the first branch's cache, or fed
    only the first token, would not. Two prompts of different lengths: left padding included."""
    _, model, processor = imof
    images = [Image.open(seeds / f"{i}.png").convert("RGB") for i in (1, 3)]
    prompts = [
        get_template("vicuna_v1").generation_prompt(q) for q in (PROMPT, "<image>\nWhat colour is it?")
    ]
    inputs = processor(text=prompts, images=images)
    assert inputs["attention_mask"][:, 0].tolist() == [1, 0]  # the shorter prompt is left-padded
    with torch.inference_mode():
        plain = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                               return_dict_in_generate=True)  # fmt: skip
        branch = ContrastiveLogits(model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                                   alpha=1.0, beta=0.0, keep=True)  # fmt: skip
        mixed = model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, logits_processor=[branch]
        )
    assert torch.equal(mixed, plain.sequences)
    assert len(branch.history) == len(plain.scores) == NEW_TOKENS
    for step, scores in zip(branch.history, plain.scores, strict=True):
        torch.testing.assert_close(step, scores.float().log_softmax(-1), rtol=0, atol=1e-4)


def test_the_contrast_formula_and_cutoff():
    """(1 + a)·main − a·other on log-probs; tokens below beta times main's best are excluded."""
    branch = ContrastiveLogits.__new__(ContrastiveLogits)
    branch.alpha, branch.log_beta, branch.history = 1.0, math.log(0.2), None
    main_p, other_p = torch.tensor([[0.6, 0.3, 0.1]]), torch.tensor([[0.5, 0.1, 0.4]])
    branch.other_logps = lambda ids: other_p.log()
    out = branch(torch.zeros(1, 1, dtype=torch.long), main_p.log())
    assert out[0, 2] == -float("inf")  # 0.1 < 0.2 * 0.6
    expected = 2 * main_p[0, :2].log() - other_p[0, :2].log()
    torch.testing.assert_close(out[0, :2], expected)
    assert int(out.argmax()) == 1  # the contrast prefers what the other branch does not


@pytest.mark.parametrize(
    "contrast, first, second", [("amplify_bias", "noisy", "clean"), ("vcd", "clean", "noisy")]
)
def test_the_contrast_direction_says_which_image_conditions(seeds, imof, tower_inputs, contrast, first, second,
                                                           one_torch_thread):  # fmt: skip
    _, model, processor = imof
    decoding = Decoding(temperature=0, max_new_tokens=2, contrast=contrast)
    sampler = WeakenedImageSampler(model, processor, Weakening(), decoding)
    image = Image.open(seeds / "2.png").convert("RGB")
    clean = processor(text=[PROMPT], images=[image])["pixel_values"]
    pixels = {"clean": clean, "noisy": _bpo_noise(clean[0], "r2")[None]}
    seen = tower_inputs(model)
    sampler.answer(["r2"], [image], [PROMPT])
    assert len(seen["clip"]) == 2  # one prefill per branch; later steps reuse each branch's cache
    torch.testing.assert_close(seen["clip"][0], pixels[first], rtol=0, atol=1e-6)  # generate's own branch
    torch.testing.assert_close(seen["clip"][1], pixels[second], rtol=0, atol=1e-6)  # the contrast branch


def test_a_killed_run_resumes_to_the_same_file(seeds, imof, tmp_path, monkeypatch, one_torch_thread):
    model_dir = imof[0]
    kinds = dict(neg_types=("mllm-hal", "llm-hal"), rewriter="rule", temperature=0.7)  # sampled: seeds matter
    negatives(_job(seeds, model_dir, tmp_path / "one.jsonl", **kinds))
    out = tmp_path / "two.jsonl"
    from mof_llava.benchmarks.answers import AnswerWriter

    real_write = AnswerWriter.write

    def write_then_die(self, records):
        real_write(self, records)
        with open(self.path, "a") as handle:  # the kill comes in the middle of the next line
            handle.write('{"question_id": "r2#mllm-hal", "id": "r2", "ne')
        raise KeyboardInterrupt

    monkeypatch.setattr(AnswerWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        negatives(_job(seeds, model_dir, out, **kinds))
    monkeypatch.setattr(AnswerWriter, "write", real_write)
    assert not out.exists()
    result = negatives(_job(seeds, model_dir, out, **kinds))
    assert result.generated == 4  # the second batch only: 2 records x 2 kinds
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not (tmp_path / "two.jsonl.part").exists()
    assert json.loads((tmp_path / "two.jsonl.run.json").read_text())["pairs"] == 2 * N_RECORDS


def test_a_resume_with_other_settings_is_refused(seeds, imof, tmp_path):
    out = tmp_path / "pairs.jsonl"
    job = _job(seeds, imof[0], out, neg_types=("llm-hal",), rewriter="rule")
    neg._check_resume(out.with_name("pairs.jsonl.run.json"), job, out, out.with_name("pairs.jsonl.part"))
    (tmp_path / "pairs.jsonl.part").write_text("")
    with pytest.raises(NegativesError, match=r"pairs.jsonl.part was made with other settings \(noise_step\)"):
        negatives(_job(seeds, imof[0], out, neg_types=("llm-hal",), rewriter="rule", noise_step=500))


def test_a_rewrite_equal_to_the_ground_truth_is_skipped_and_counted(seeds, tmp_path):
    data = tmp_path / "in.jsonl"
    rows = [{"id": "a", "image": "0.png", "prompt": PROMPT, "chosen": "Two red dogs."},
            {"id": "b", "image": "1.png", "prompt": PROMPT, "chosen": "Nothing to swap here."}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = NegativesJob(data, tmp_path / "out.jsonl", neg_types=("llm-hal",), rewriter="rule", image_folder=str(seeds),
                       progress=False)  # fmt: skip
    result = negatives(job)
    assert result.written == 1 and result.skipped == {"same as chosen": ["b#llm-hal"]}
    assert "1 same as chosen" in result.describe()
    assert [p.rejected for p in read_pairs(tmp_path / "out.jsonl").pairs] == ["Three blue cats."]


@pytest.mark.parametrize(
    "line, message",
    [
        ({"id": "x", "image": "0.png", "prompt": PROMPT}, r"in.jsonl:2 \(record 1, id 'x'\): 'chosen' must be a non-empty"),
        ({"id": "x", "image": "0.png", "prompt": "<image><image>", "chosen": "a"}, r"in.jsonl:2 .*exactly one <image>, it holds 2"),
        ({"id": "x", "image": "missing.png", "prompt": PROMPT, "chosen": "a"}, r"in.jsonl:2 .*image 'missing.png' not found"),
        ({"id": "a", "image": "0.png", "prompt": PROMPT, "chosen": "b"}, r"in.jsonl:2 .*id 'a' is already used at line 1"),
        ({"id": "x", "image": "0.png", "conversations": [{"from": "human", "value": PROMPT}]},
         r"in.jsonl:2 .*one round \(human, gpt\), got roles \['human'\]"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_file_and_line(seeds, tmp_path, line, message):
    good = {"id": "a", "image": "0.png", "prompt": PROMPT, "chosen": "Two red dogs."}
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    job = NegativesJob(
        data, tmp_path / "out.jsonl", neg_types=("llm-hal",), rewriter="rule", image_folder=str(seeds)
    )
    with pytest.raises(NegativesError, match=message) as err:
        negatives(job)
    assert "\n" not in str(err.value)


def test_llava_records_give_their_one_round(seeds, tmp_path):
    row = {"id": "v", "image": "0.png", "conversations": [{"from": "human", "value": PROMPT},
                                                          {"from": "gpt", "value": "A white cat."}]}  # fmt: skip
    (tmp_path / "llava.json").write_text(json.dumps([row]))
    [seed] = neg.read_seeds(tmp_path / "llava.json", seeds)
    assert (seed.id, seed.prompt, seed.chosen, seed.source) == ("v", PROMPT, "A white cat.", "llava")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(neg_types=("mllm-hal",)), "--neg-type mllm-hal needs --model"),
        (dict(neg_types=("llm-hal",)), "--neg-type llm-hal needs --rewriter"),
        (
            dict(neg_types=("llm-hal",), rewriter="endpoint", rewriter_url="http://127.0.0.1:1/v1"),
            "needs --rewriter-model",
        ),
        (
            dict(neg_types=("llm-hal",), rewriter="precomputed"),
            "--rewriter precomputed needs --rewriter-file",
        ),
        (
            dict(neg_types=("llm-hal",), rewriter="rule", noise_step=1000),
            r"--noise-step must be in \[0, 1000\), got 1000",
        ),
        (
            dict(neg_types=("llm-hal",), rewriter="rule", cd_beta=1.0),
            r"--cd-beta must be in \[0, 1\), got 1.0",
        ),
        (dict(model="/absent/model"), "--model: folder not found: /absent/model"),
    ],
)
def test_missing_or_bad_settings_name_their_flag(seeds, tmp_path, settings, message):
    from mof_llava.paths import ModelPathError

    with pytest.raises((NegativesError, ModelPathError), match=message):
        negatives(
            NegativesJob(seeds / "seeds.jsonl", tmp_path / "o.jsonl", image_folder=str(seeds), **settings)
        )


def test_the_command_runs_the_verb(seeds, tmp_path, capsys):
    from mof_llava.cli import main

    out = tmp_path / "cli.jsonl"
    argv = ["preference", "negatives", str(seeds / "seeds.jsonl"), "-o", str(out), "--neg-type", "llm-hal",
            "--rewriter", "rule", "--image-folder", str(seeds), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert f"{out}: {N_RECORDS} pair(s)" in capsys.readouterr().out
    assert [p.neg_type for p in read_pairs(out).pairs] == ["llm-hal"] * N_RECORDS


def test_the_command_prints_bad_input_as_one_line(tmp_path, capsys):
    from mof_llava.cli import run

    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "image": "0.png", "prompt": "no marker", "chosen": "x"}\n')
    with pytest.raises(SystemExit) as exit:
        run(["preference", "negatives", str(data), "-o", str(tmp_path / "o.jsonl"), "--neg-type", "llm-hal",
             "--rewriter", "rule"])  # fmt: skip
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"mof-llava: error: {data}:1 (record 0, id 'a'): 'prompt' must hold exactly one <image>, it holds 0\n"
    )
