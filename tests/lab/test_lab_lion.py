"""`lab lion`: LION's tag prompt on a lab run. A tiny lab run and a tiny `lab_lion` on it (two
seeds: seed 0 from the lab's own stages, seed 1 trained here) check the chain: the tags are the toy
CLIP's zero-shot best kinds, they reach the stage-2 records and the tagged arm's evaluation
prompts (and only those), and a second call trains, tags and evaluates nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mof_llava.lab import lion, mllm, world
from mof_llava.scenes.drawing import SHAPES


def _tiny_lab(root: Path) -> Path:
    config = mllm.LabConfig(out=str(root / "lab"), variants=("llava-1.5",), samples=16, epochs=1.0,
                            language_steps=1, mmvp_pairs=2, heldout_pairs=3, progress=False)  # fmt: skip
    mllm.run_lab(config, say=lambda _: None)
    return root / "lab"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(lab folder, lion folder, result, prompts per arm: {tag_hint_token_id is set: [prompt, ...]})."""
    from mof_llava.benchmarks import generation

    root = tmp_path_factory.mktemp("lion")
    lab = _tiny_lab(root)
    prompts: dict[bool, list[str]] = {True: [], False: []}
    make = generation.make_generate_fn

    def recording(model, processor, *args, **kwargs):
        generate = make(model, processor, *args, **kwargs)
        tagged = model.config.tag_hint_token_id is not None

        def wrapped(images, texts):
            prompts[tagged].extend(texts)
            return generate(images, texts)

        return wrapped

    config = lion.LabLionConfig(out=str(root / "lion"), lab=str(lab), seeds=(0, 1), progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation, "make_generate_fn", recording)
        result = lion.lab_lion(config, say=lambda _: None)
    return lab, root / "lion", config, result, prompts


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # the chain fixture: about 25 s on 2 loaded cores
def test_tags_are_the_toy_clips_best_kinds_on_the_lab_records(chain):
    """Recomputed here from the CLIP model's own forward (cosine of image and "a <colour> <shape>"
    embeddings; a softmax keeps the order), against what `tag` wrote beside the lab's records."""
    import torch
    from PIL import Image
    from transformers import CLIPModel

    from mof_llava.lab.towers import encode_captions, normalise, vocabulary

    lab, out, *_ = chain
    tagged = _jsonl(out / "data" / "stage2_tags.jsonl")
    original = json.loads((lab / "data" / "stage2_instruct.json").read_text())
    assert [{k: v for k, v in r.items() if k != "tags"} for r in tagged] == original  # records unchanged
    model = CLIPModel.from_pretrained(
        Path(json.loads((lab / mllm.MANIFEST).read_text())["settings"]["towers"]) / "clip"
    )
    names = [f"{c} {s}" for c in world.COLOURS for s in SHAPES]
    ids = encode_captions([f"a {n}" for n in names], vocabulary())
    pixels = normalise(np.stack([np.array(Image.open(lab / "data" / "images" / r["image"])) for r in tagged]))
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids, attention_mask=(ids > 0).long()).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
    cosine = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    expected = [[names[int(i)] for i in row] for row in cosine.topk(2, dim=-1).indices]
    assert [r["tags"] for r in tagged] == expected


@pytest.mark.slow  # the chain fixture: about 25 s on 2 loaded cores
def test_the_tagged_stage_2_trains_the_tag_prompt_from_the_labs_stage_1(chain):
    import yaml

    lab, out, *_ = chain
    stage2 = yaml.safe_load((out / "llava-1.5-seed0-tags" / "stage2.yaml").read_text())
    assert stage2["model"] == {"adapters_from": str(lab / "llava-1.5-seed0" / "stage1" / "adapters"),
                               "tag_soft_prompt": True}  # fmt: skip
    assert stage2["data"] == {"data_path": str(out / "data" / "stage2_tags.jsonl"),
                              "tag_prompt": {"dropout": 0.1, "shuffle": True, "seed": 0}}  # fmt: skip
    saved = json.loads((out / "llava-1.5-seed0-tags" / "stage2" / "model" / "config.json").read_text())
    assert saved["tag_hint_token_id"] is not None
    # seed 1 is not in the lab: both its arms start from a stage 1 trained here
    sources = json.loads((out / lion.MANIFEST).read_text())["sources"]
    assert sources["llava-1.5-seed0"]["no_tags"] == str(lab / "llava-1.5-seed0" / "stage2" / "model")
    here = out / "llava-1.5-seed1"
    assert sources["llava-1.5-seed1"] == {
        "stage1": str(here / "stage1"),
        "no_tags": str(here / "stage2" / "model"),
    }


@pytest.mark.slow  # the chain fixture: about 25 s on 2 loaded cores
def test_the_tags_reach_only_the_tagged_arms_evaluation_prompts(chain):
    from mof_llava.data.tags_file import read_tags_file

    _, out, _, result, prompts = chain
    tags = read_tags_file(out / "data" / "heldout_tags.jsonl")
    assert len(tags) == 6 and all(len(t) == 2 for t in tags.values())
    # 6 questions per arm and seed; the lab's own seed-0 score is reused, not evaluated again
    assert len(prompts[True]) == 2 * 6 and len(prompts[False]) == 6
    shown = [re.findall(r"the following tags: \[([^\]]*)\]\.", p) for p in prompts[True]]
    assert all(len(found) == 1 for found in shown)  # one tag sentence per question
    assert {tuple(found[0].split(", ")) for found in shown} == {tuple(t) for t in tags.values()}
    assert not any("tags" in p for p in prompts[False])
    assert set(result["runs"]) == {"llava-1.5-seed0", "llava-1.5-seed1"}
    for run in result["runs"].values():
        assert set(run["tags"]) == set(run["no_tags"]) == set(world.ATTRIBUTES[:3])  # 3 pairs: 3 attributes


@pytest.mark.slow  # the chain fixture: about 25 s on 2 loaded cores
def test_a_second_call_skips_every_finished_step(chain, monkeypatch):
    from mof_llava import tags
    from mof_llava.training import run

    _, out, config, result, _ = chain

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    for module, name in (
        (run, "train"),
        (tags, "tag"),
        (mllm, "heldout_accuracy"),
        (lion, "heldout_accuracy"),
    ):
        monkeypatch.setattr(module, name, refuse)
    assert lion.lab_lion(config, say=lambda _: None) == result


@pytest.mark.slow  # the chain fixture: about 25 s on 2 loaded cores
def test_other_settings_are_refused_in_one_line(chain):
    _, out, config, *_ = chain
    other = lion.LabLionConfig(out=config.out, lab=config.lab, dropout=0.3)
    with pytest.raises(mllm.LabRunError, match=r"other settings \(dropout\)"):
        lion.lab_lion(other, say=lambda _: None)


def test_a_folder_without_a_lab_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(mllm.LabRunError, match="no lab_mllm.json there"):
        lion.lab_lion(lion.LabLionConfig(out=str(tmp_path / "out"), lab=str(tmp_path)), say=lambda _: None)


def test_tagger_accuracy_reads_the_main_objects_colour_and_shape():
    scenes = {}
    for i in range(40):  # scenes with a companion, whose kind must not count for the main one
        scene = world.random_scene(np.random.default_rng([3, i]))
        if scene.companion is not None and scene.companion.colour != scene.main[0].colour:
            scenes[f"{len(scenes)}.png"] = scene
        if len(scenes) == 4:
            break
    main = [s.main[0] for s in scenes.values()]
    companion = [s.companion for s in scenes.values()]
    other_shape = [next(x for x in SHAPES if x not in (m.shape, c.shape)) for m, c in zip(main, companion)]
    tags = {  # right kind; right colour only; the companion's kind; the companion's colour, main's shape
        "0.png": [f"{main[0].colour} {main[0].shape}"],
        "1.png": [f"{main[1].colour} {other_shape[1]}"],
        "2.png": [f"{companion[2].colour} {companion[2].shape}"],
        "3.png": [f"{companion[3].colour} {main[3].shape}", f"{main[3].colour} {other_shape[3]}"],
    }
    accuracy = lion.tagger_accuracy(tags, scenes)
    # colour: 0, 1, 3 of 4; shape: 0, 3 of 4; kinds shown: 0 and 2 of 5 tags
    assert accuracy == {"images": 4, "colour": 75.0, "shape": 50.0, "kind_precision": 40.0}


def test_lab_lion_command_passes_its_settings(tmp_path, monkeypatch):
    from mof_llava.cli import main

    seen = []
    monkeypatch.setattr(
        lion, "lab_lion", lambda config, say: seen.append(config) or {"tagger": {}, "runs": {}}
    )
    flags = ["--seed", "1", "--seed", "2", "--top-k", "3", "--dropout", "0.2", "--arm", "aggregator"]
    assert main(["lab", "lion", "--out", str(tmp_path / "o"), "--lab", str(tmp_path), *flags]) == 0
    (config,) = seen
    assert (config.seeds, config.top_k, config.dropout, config.variant) == ((1, 2), 3, 0.2, "llava-1.5")
    assert config.arm == "aggregator"


def test_the_aggregator_arm_configs_carry_the_aggregator_frozen_in_stage_1_trained_in_stage_2(tmp_path):
    """The lab's run configs with `aggregator_keys`, as training loads them: both stages build the
    aggregator (stage 2 inherits it from stage 1), which reads layers the 4-block toy towers have."""
    from mof_llava.demo.run import Components, parse_variant, write_run_configs
    from mof_llava.lab.mllm import LabConfig
    from mof_llava.model.configuration import TowerSpec, aggregator_layers
    from mof_llava.toy_towers import toy_towers
    from mof_llava.training.config import load_run_config

    towers = toy_towers()
    components = Components(tmp_path, tmp_path / "llm-text", towers.clip, towers.ssl, (0.0, 0.0))
    config = lion.LabLionConfig(out=str(tmp_path), lab=str(tmp_path), variant="i-mof", arm="aggregator")
    stage1_keys, stage2_keys = lion.aggregator_keys(config, tmp_path / "run" / "stage1" / "adapters")
    paths = write_run_configs(tmp_path / "run", parse_variant("i-mof"), LabConfig(out=str(tmp_path)).settings(),
                              tmp_path / "data", components, tmp_path / "cache", stage2_keys, stage1_keys)  # fmt: skip
    stage1, stage2 = (load_run_config(path) for path in paths)
    for run in (stage1, stage2):
        assert run.model.mixer.mode == "interleave"  # I-MoF's mixer, kept beside the aggregator
        assert run.model.mixer.aggregator.layer_offsets == (-1, -2)
    assert (stage1.train.stage, stage1.train.lion.aggregator) == ("pretrain", False)
    assert (stage2.train.stage, stage2.train.lion.aggregator) == ("finetune", True)
    assert stage2.model.adapters_from == str(tmp_path / "run" / "stage1" / "adapters")
    # the toy towers have 4 blocks (5 hidden states): CLIP read at -2 is state 3, the SSL tower's last block 4
    expected = {"clip": (3, 2, 1), "dinov2": (4, 3, 2)}
    clip = json.loads((towers.clip / "config.json").read_text())["vision_config"]
    vision = {"clip": clip, "dinov2": json.loads((towers.ssl / "config.json").read_text())}
    for recipe in stage1.model.towers:
        spec = TowerSpec(recipe.name, vision[recipe.name], feature_layer=recipe.feature_layer)
        assert aggregator_layers(stage1.model.mixer.aggregator, spec) == expected[recipe.name]


def test_the_tagger_is_scored_against_the_lab_pictures_with_its_colour_prior(tmp_path):
    """stage2_scenes draws what write_training_files drew: with a colour prior of 1 every main-kind
    circle is red, as in the lab's own training pictures."""
    from mof_llava.lab.mllm_data import PRIOR_COLOUR, PRIOR_SHAPE

    config = mllm.LabConfig(out=str(tmp_path), samples=60, colour_prior=1.0)
    circles = [s for s in lion.stage2_scenes(config).values() if s.main[0].shape == PRIOR_SHAPE]
    assert circles and all(t.colour == PRIOR_COLOUR for s in circles for t in s.main)
    plain = mllm.LabConfig(out=str(tmp_path), samples=60)
    assert any(s.main[0].colour != PRIOR_COLOUR for s in lion.stage2_scenes(plain).values()
               if s.main[0].shape == PRIOR_SHAPE)  # fmt: skip
