"""The one scene generator: every path that draws a picture (the toy lab, the demo's dataset in
both worlds, the benchmark folders) draws it through `mof_llava.scenes`, and a scene's metadata
survives JSON."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from mof_llava.scenes import canvas, drawing
from mof_llava.scenes import lab as world


def _lab_scenes() -> list:
    scenes = [world.random_scene(world.scene_rng(0, "probe", i)) for i in range(20)]
    for k, attribute in enumerate(world.ATTRIBUTES):
        scenes += world.attribute_pair(world.scene_rng(0, "pairs", k), attribute)
    return scenes


def _canvas_scenes() -> list:
    scenes = [canvas.random_scene(drawing.seeded_rng(0, 1, i)) for i in range(20)]
    for k, attribute in enumerate(canvas.PAIR_ATTRIBUTES):
        scenes += canvas.attribute_pair(drawing.seeded_rng(0, 4, k), attribute)
    return scenes


@pytest.mark.parametrize("kind, scenes", [(world.LabScene, _lab_scenes()), (canvas.Scene, _canvas_scenes())])
def test_metadata_round_trips_through_json(kind, scenes):
    for scene in scenes:
        back = kind.from_json(json.loads(json.dumps(scene.to_json())))
        assert back == scene
        assert np.array_equal(np.asarray(back.render()), np.asarray(scene.render()))


def test_lab_json_carries_the_labels_and_count():
    scene = world.random_scene(world.scene_rng(1, "probe", 0))
    data = json.loads(json.dumps(scene.to_json()))
    assert data["labels"] == world.labels(scene) and data["count"] == len(data["main"])


def test_questions_and_statements_name_the_main_kind_per_attribute():
    from mof_llava.scenes import questions

    arrow = world.Thing("arrow", "red", (10.0, 24.0), 12, "up", False, True)
    alone = world.LabScene("grey", (arrow,), None, "big")
    paired = world.LabScene("grey", (arrow,), world.Thing("square", "blue", (36.0, 24.0), 12, None, True, False))
    said = {a: questions.statement(alone, a) for a in world.ATTRIBUTES if a != "relation"}
    assert said == {"colour": "a red arrow", "shape": "a red arrow", "count": "a red arrow one of them",
                    "position": "a red arrow on the left", "size": "a big red arrow",
                    "orientation": "a red arrow pointing up", "fill": "a outlined red arrow",
                    "detail": "a red arrow with a dot"}  # fmt: skip
    assert questions.statement(paired, "relation") == "a red arrow left of a blue square"
    assert questions.ask(alone, "colour") == "What colour is the arrow?"
    assert questions.ask(alone, "shape") == "What shape is the red object?"
    assert questions.ask(paired, "relation") == "Is the red arrow to the left or to the right of the blue square?"
    with pytest.raises(ValueError, match="relation: the scene has no companion"):
        questions.ask(alone, "relation")
    pair = world.LabScene("grey", (arrow, world.Thing("arrow", "red", (36.0, 24.0), 12, "up", False, True)), None, "big")
    with pytest.raises(ValueError, match="position: does not apply"):  # two copies: no one side
        questions.statement(pair, "position")


def test_the_lab_towers_train_on_the_lab_world():
    from mof_llava.lab import towers

    assert towers.batch_scenes(3, 2, 4) == [
        world.random_scene(world.scene_rng(3, "train", 8 + i)) for i in range(4)
    ]


# What the right option of an MMVP question about each lab attribute must say, read from the
# scene's labels (independent of the question writer).
_BY_LABEL = {
    "colour": world.COLOURS,
    "shape": drawing.SHAPES,
    "count": ("one", "two", "three"),
    "position": ("left", "right"),
    "relation": ("right", "left"),  # label 1: the main kind is left of the companion
    "size": ("small", "big"),
    "orientation": drawing.ORIENTATIONS,
    "fill": ("outlined", "solid"),
    "detail": ("no", "yes"),
}


@pytest.fixture(scope="module")
def lab_dataset(tmp_path_factory):
    from mof_llava.demo.synthetic import LAB, DatasetSizes, write_dataset

    sizes = DatasetSizes(pretrain=12, instruct=12, mmvp_pairs=len(world.ATTRIBUTES))
    return write_dataset(tmp_path_factory.mktemp("lab_data"), seed=5, sizes=sizes, world=LAB)


def test_the_demo_draws_lab_scenes_of_its_seed(lab_dataset):
    records = [json.loads(line) for line in lab_dataset.scenes_file.read_text().splitlines()]
    png = next(r for r in records if r["file"] == "images/pretrain/000011.png")  # lossless: exact pixels
    expected = world.random_scene(world.scene_rng(5, "pretrain", 11))
    assert world.LabScene.from_json(png) == expected
    with Image.open(lab_dataset.root / png["file"]) as image:
        assert image.size == (world.SIZE, world.SIZE)
        assert np.array_equal(np.asarray(image.convert("RGB")), expected.pixels())


def test_the_demo_mmvp_pairs_are_lab_pairs_answered_by_their_labels(lab_dataset):
    with open(lab_dataset.mmvp_dir / "Questions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scenes = [json.loads(line) for line in lab_dataset.scenes_file.read_text().splitlines()]
    shown = {int(s["file"].split("/")[-1].split(".")[0]): s for s in scenes if s["file"].startswith("mmvp/")}
    patterns = dict(csv.reader(lab_dataset.mmvp_patterns.open()))
    attributes = []
    for k in range(len(rows) // 2):
        first, second = rows[2 * k], rows[2 * k + 1]
        attribute = shown[2 * k + 1]["differs_in"]
        attributes.append(attribute)
        assert patterns[first["Index"]] == attribute
        pair = {world.LabScene.from_json(shown[2 * k + 1 + m]) for m in (0, 1)}
        assert pair == set(world.attribute_pair(world.scene_rng(5, "mmvp", k), attribute))
        for row in (first, second):
            scene = world.LabScene.from_json(shown[int(row["Index"])])
            options = dict(zip("ab", (o.strip() for o in row["Options"].split("(b)"))))
            options["a"] = options["a"].removeprefix("(a)").strip()
            right = options[row["Correct Answer"].strip("()")].lower()
            assert right == _BY_LABEL[attribute][world.labels(scene)[attribute]], (row, scene)
        assert first["Correct Answer"] != second["Correct Answer"]
    assert attributes == list(world.ATTRIBUTES)


def test_benchmark_folders_show_canvas_pictures(tmp_path):
    from mof_llava.benchmarks import synthetic

    root = synthetic.write_pope(tmp_path / "pope", per_split=2)
    scene = canvas.random_scene(drawing.seeded_rng(1, canvas.PICTURE_STREAM, 0), size=(72, 56))
    assert np.array_equal(np.asarray(synthetic.picture(1)), np.asarray(scene.render()))
    with Image.open(root / "val2014" / "COCO_val2014_000000000001.jpg") as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour = np.array(drawing.SHAPE_COLOURS[scene.colour], dtype=np.float32)
    for left, top, right, bottom in scene.boxes:  # every object's centre shows its colour
        centre = pixels[(top + bottom) // 2, (left + right) // 2]
        assert np.abs(centre - colour).max() < 40, (scene, centre)


def test_missing_toy_towers_are_named_in_one_line(tmp_path, monkeypatch, capsys):
    from mof_llava.cli import run
    from mof_llava.toy_towers import ENV, ToyTowersMissing, toy_towers

    (tmp_path / "towers" / "clip").mkdir(parents=True)
    monkeypatch.setenv(ENV, str(tmp_path / "towers"))
    with pytest.raises(ToyTowersMissing, match="clip lacks config.json, model.safetensors"):
        toy_towers()
    with pytest.raises(SystemExit) as exit_info:
        run(["demo", "--out", str(tmp_path / "out"), "--samples", "2", "--mmvp-pairs", "1", "--no-progress"])
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and "toy tower" in error[0] and ENV in error[0]


def test_the_committed_toy_towers_are_found():
    from mof_llava.toy_towers import toy_towers

    towers = toy_towers(0)
    assert json.loads((towers.clip / "config.json").read_text())["model_type"] == "clip"
    assert json.loads((towers.ssl / "config.json").read_text())["model_type"] == "dinov2"
