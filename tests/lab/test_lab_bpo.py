"""The toy lab's BPO run (mof_llava/lab/bpo.py): seeds from the stage-2 records, the prior-following
measure on hand-made answers, the whole chain at a tiny size, and resuming by its manifest."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mof_llava.benchmarks.gqa import LLAVA_QUESTIONS, OFFICIAL_QUESTIONS
from mof_llava.data.preference_records import read_pairs
from mof_llava.demo.synthetic import dataset_paths
from mof_llava.lab import bpo, mllm_data, world
from mof_llava.prompts import LETTER_ANSWER, SHORT_ANSWER

STEPS = ["seeds", "grey", "negatives", "before", "preference", "merge", "after"]


def _gold(questions: dict[str, tuple[str, str]]) -> dict:
    """A GQA questions file's records: question id -> (attribute, gold answer)."""
    return {qid: {"question": "q", "answer": answer, "imageId": qid, "isBalanced": True, "semantic": [],
                  "types": {"structural": "query", "semantic": attribute}, "groups": {"global": attribute}}
            for qid, (attribute, answer) in questions.items()}  # fmt: skip


def _answers(path: Path, texts: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in texts.items()))
    return path


def test_prior_following_counts_the_wrong_answers_that_repeat_the_grey_picture_answer(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(_gold({"c1": ("colour", "red"), "c2": ("colour", "green"), "c3": ("colour", "blue"),
                                      "c4": ("colour", "white"), "s1": ("size", "big"), "s2": ("size", "small")})))  # fmt: skip
    # c1 right (not counted, though it is the prior's answer too), c2 wrong and the prior's ("Yellow." normalises
    # to it), c3 wrong and not the prior's, c4 wrong with no colour at all; s1 wrong and the prior's, s2 right.
    given = _answers(tmp_path / "a.jsonl", {"c1": "Red", "c2": "Yellow.", "c3": "black", "c4": "solid",
                                            "s1": "small", "s2": "small"})  # fmt: skip
    prior = _answers(tmp_path / "p.jsonl", {"c1": "red", "c2": "yellow", "c3": "yellow", "c4": "yellow",
                                            "s1": "small", "s2": "big"})  # fmt: skip
    assert bpo.prior_following(given, prior, gold) == {
        "colour": {"wrong": 3, "prior": 1, "share": 100 / 3, "foreign": 1},
        "size": {"wrong": 1, "prior": 1, "share": 100.0, "foreign": 0},
        "all": {"wrong": 4, "prior": 2, "share": 50.0, "foreign": 1},
    }
    _answers(prior, {"c1": "red"})
    with pytest.raises(bpo.LabBpoError, match=r"p\.jsonl: no answer to question c2"):
        bpo.prior_following(given, prior, gold)


def test_seeds_are_the_short_answer_rounds_each_over_its_picture(tmp_path):
    turns = [("<image>\nWhat colour is the square?\n" + SHORT_ANSWER, "black"),
             ("How many black squares are there?\n" + LETTER_ANSWER, "A"),
             ("Is the black square small or big?\n" + SHORT_ANSWER, "small")]  # fmt: skip
    records = [{"id": "r0", "image": "instruct/0.png",
                "conversations": [{"from": f, "value": v} for h, g in turns for f, v in (("human", h), ("gpt", g))]},
               {"id": "r1", "image": "instruct/1.png", "conversations": []}]  # fmt: skip
    (tmp_path / "in.json").write_text(json.dumps(records))
    assert bpo.write_seeds(tmp_path / "in.json", tmp_path / "seeds.jsonl", limit=1) == 2
    seeds = [json.loads(line) for line in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    assert [(s["id"], s["image"], s["prompt"], s["chosen"]) for s in seeds] == [
        ("r0-0", "instruct/0.png", turns[0][0], "black"),
        ("r0-2", "instruct/0.png", "<image>\n" + turns[2][0], "small"),
    ]


@pytest.fixture(scope="module")
def chain(tiny_model_dirs, tmp_path_factory):
    """A tiny lab data folder (18 training pictures, 9 held-out pairs), a tiny LLaVA-1.5 model, and
    one `lab_bpo` run over them."""
    root = tmp_path_factory.mktemp("lab")
    paths = dataset_paths(root / "data")
    mllm_data.write_training_files(paths, 0, 0, 18, letter_share=0.25, captioned_share=0.0)
    mllm_data.write_heldout(paths.root / "heldout", mllm_data.benchmark_pairs(0, "heldout", 9))
    config = bpo.LabBpoConfig(model=str(tiny_model_dirs("none")), data=str(paths.root), out=str(root / "bpo"),
                              records=6, epochs=1.0, batch_size=4, max_new_tokens=4)  # fmt: skip
    torch.set_num_threads(1)
    lines = []
    scores = bpo.lab_bpo(config, say=lines.append)
    return config, scores, lines


def test_the_chain_runs_every_step_through_the_library(chain):
    from mof_llava.benchmarks.gqa import llava_normalize

    config, scores, lines = chain
    out, data = Path(config.out), Path(config.data)
    assert lines == [f"bpo: {s}" for s in STEPS]
    assert json.loads((out / bpo.MANIFEST).read_text())["finished"] == STEPS
    # the pairs: chosen from the records, rejected the model's answer on the weakened picture
    seeds = {s["id"]: s for s in map(json.loads, (out / "seeds.jsonl").read_text().splitlines())}
    pairs = read_pairs(out / "pairs.jsonl").pairs
    skipped = json.loads((out / "pairs.jsonl.run.json").read_text())["skipped"]
    assert len(pairs) + sum(map(len, skipped.values())) == len(seeds) > 6
    assert all(p.neg_type == "mllm-hal" and p.chosen == seeds[p.id.split("#")[0]]["chosen"] for p in pairs)
    # the preference stage starts at policy = reference (loss ln 2) and its merged model moved
    log = [json.loads(line) for line in (out / "preference" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    before = load_file(Path(config.model) / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k)
    # the grey folder asks every held-out question of one uniform grey picture
    grey = [json.loads(line) for line in (out / "grey" / LLAVA_QUESTIONS).read_text().splitlines()]
    assert len(grey) == 18 and {q["image"] for q in grey} == {"grey.png"}
    assert Image.open(out / "grey" / "images" / "grey.png").getcolors() == [(48 * 48, bpo.GREY)]
    # scores: accuracy and the prior share recomputed from the answer files
    gold = json.loads((data / "heldout" / OFFICIAL_QUESTIONS).read_text())
    for when in ("before", "after"):
        said = {r["question_id"]: llava_normalize(r["text"]) for r in
                map(json.loads, (out / when / "heldout" / "answers.jsonl").read_text().splitlines())}  # fmt: skip
        prior = {r["question_id"]: llava_normalize(r["text"]) for r in
                 map(json.loads, (out / when / "grey" / "answers.jsonl").read_text().splitlines())}  # fmt: skip
        for attribute in world.ATTRIBUTES:
            ids = [q for q, g in gold.items() if g["types"]["semantic"] == attribute]
            right = [said[q] == gold[q]["answer"] for q in ids]
            assert scores[when]["accuracy"][attribute] == pytest.approx(100 * sum(right) / len(ids))
        wrong = [q for q in gold if said[q] != gold[q]["answer"]]
        if wrong:
            assert scores[when]["prior_own"]["all"]["prior"] == sum(said[q] == prior[q] for q in wrong)
    assert set(scores["after"]) == {"accuracy", "prior_own", "prior_start"}


def test_a_rerun_skips_the_finished_steps_and_resumes_after_the_last(chain, monkeypatch):
    import mof_llava.lab.mllm as mllm
    import mof_llava.preference.negatives as negatives
    import mof_llava.training.run as run

    config, scores, _ = chain
    manifest_file = Path(config.out) / bpo.MANIFEST
    for module, name in ((negatives, "negatives"), (run, "train"), (mllm, "heldout_accuracy")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("a finished step ran again"))
    lines = []
    assert bpo.lab_bpo(config, say=lines.append) == scores and lines == []
    # a run that died after merging: only the last step runs again (its evaluations answer nothing anew)
    manifest = json.loads(manifest_file.read_text())
    manifest["finished"].remove("after")
    manifest_file.write_text(json.dumps(manifest))
    monkeypatch.undo()
    assert bpo.lab_bpo(config, say=lines.append) == scores and lines == ["bpo: after"]


def test_grey_negatives_are_the_greedy_answers_on_the_grey_picture_paired_with_the_records_pictures(
    chain, tiny_model_dirs, tmp_path
):
    from mof_llava.benchmarks.generation import load_model
    from mof_llava.conversation import get_template

    config, data = chain[0], Path(chain[0].data)
    grey = bpo.LabBpoConfig(config.model, config.data, str(tmp_path), records=config.records, max_new_tokens=4,
                            negative_picture="grey", corruption="mask", mask_ratio=0.0, temperature=0.0)  # fmt: skip
    bpo.write_seeds(data / "stage2_instruct.json", tmp_path / "seeds.jsonl", grey.records)
    bpo.write_grey_heldout(data / "heldout", tmp_path / "grey")
    bpo._negatives(tmp_path, data, grey)
    # the model's greedy answer on a grey picture, asked here one seed at a time with plain generate()
    model, processor = load_model(grey.model, "cpu", "float32")
    picture, template = Image.new("RGB", (48, 48), bpo.GREY), get_template("vicuna_v1")
    seeds = [json.loads(line) for line in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    pairs = {p.id.split("#")[0]: p for p in read_pairs(tmp_path / "pairs.jsonl").pairs}
    for seed in seeds:
        inputs = processor(text=[template.generation_prompt(seed["prompt"])], images=[picture])
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=4, num_beams=1)
        new = out[:, inputs["input_ids"].shape[1] :]
        said = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
        if seed["id"] in pairs:
            assert (pairs[seed["id"]].rejected, pairs[seed["id"]].image) == (said, seed["image"])
        else:  # skipped by the verb
            assert said in ("", seed["chosen"])
    assert pairs
    with pytest.raises(bpo.LabBpoError, match="negative_picture must be one of own, grey, got 'blank'"):
        bpo.lab_bpo(replace(grey, negative_picture="blank"), say=lambda _: None)


def test_other_settings_or_a_foreign_folder_are_refused_in_one_line(chain, tmp_path):
    config = chain[0]
    with pytest.raises(bpo.LabBpoError, match=r"other settings \(epochs, nll_weight\)"):
        bpo.lab_bpo(replace(config, epochs=2.0, nll_weight=1.0), say=lambda _: None)
    (tmp_path / "x").write_text("x")
    with pytest.raises(bpo.LabBpoError, match="not empty and holds no lab_bpo.json"):
        bpo.lab_bpo(replace(config, out=str(tmp_path)), say=lambda _: None)
    with pytest.raises(bpo.LabBpoError, match="no stage2_instruct.json there"):
        bpo.lab_bpo(replace(config, data=str(tmp_path)), say=lambda _: None)


def test_the_weakened_tower_reaches_the_negatives_job_and_both_keeps_old_folders(tmp_path, monkeypatch):
    import mof_llava.preference.negatives as negatives

    jobs = []
    monkeypatch.setattr(negatives, "negatives", jobs.append)
    for tower in ("clip", "both"):
        bpo._negatives(tmp_path, tmp_path, bpo.LabBpoConfig("m", "d", str(tmp_path), weaken_tower=tower))
    assert [job.target for job in jobs] == ["clip", "both"]
    # a folder made before the setting existed (no weaken_tower among its settings) ran with both:
    # it opens with the default and is refused with another tower
    bpo._open_manifest(tmp_path / "a", bpo.LabBpoConfig("m", "d", str(tmp_path / "a")))
    path = tmp_path / "a" / bpo.MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["settings"]["weaken_tower"]
    path.write_text(json.dumps(manifest))
    assert bpo._open_manifest(tmp_path / "a", bpo.LabBpoConfig("m", "d", str(tmp_path / "a")))["finished"] == []
    with pytest.raises(bpo.LabBpoError, match=r"other settings \(weaken_tower\)"):
        bpo._open_manifest(tmp_path / "a", bpo.LabBpoConfig("m", "d", str(tmp_path / "a"), weaken_tower="clip"))


def test_lab_bpo_command_passes_its_flags_and_prints_the_table(tmp_path, monkeypatch, capsys):
    from mof_llava.cli import main

    seen = []
    monkeypatch.setattr(bpo, "lab_bpo", lambda config, say: seen.append(config) or {})
    monkeypatch.setattr(bpo, "table", lambda runs: f"{len(runs)} run\n")
    flags = ["--model", "m", "--data", "d", "--out", str(tmp_path), "--neg-type", "mllm-hal", "--neg-type",
             "llm-hal", "--nll-weight", "1", "--epochs", "2", "--negative-picture", "grey", "--corruption", "mask",
             "--mask-ratio", "0", "--temperature", "0", "--weaken-tower", "dinov2", "--quiet"]  # fmt: skip
    assert main(["lab", "bpo", *flags]) == 0
    (config,) = seen
    assert (config.model, config.data, config.neg_types, config.nll_weight, config.epochs, config.progress) == (
        "m", "d", ("mllm-hal", "llm-hal"), 1.0, 2.0, False)  # fmt: skip
    picture = (config.negative_picture, config.corruption, config.mask_ratio, config.temperature)
    assert picture == ("grey", "mask", 0.0, 0.0) and config.weaken_tower == "dinov2"
    assert config.learning_rate == bpo.LabBpoConfig("m", "d", "o").learning_rate  # not given: the default
    assert capsys.readouterr().out == "1 run\n"


def test_mean_std_is_the_mean_and_sample_std_of_the_given_values():
    from mof_llava.lab.mllm import mean_std

    # 10, 20, 60: mean 30, sample variance (400 + 100 + 900) / 2 = 700, std 26.5
    assert mean_std([10.0, None, 20.0, 60.0]) == "30 ± 26"
    assert mean_std([10.0, 20.0, 60.0], each=True) == "30 ± 26 (10, 20, 60)"
    assert (mean_std([None, 5.4]), mean_std([None])) == ("5", "-")
