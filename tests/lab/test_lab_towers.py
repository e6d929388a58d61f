"""Lab tower training: a few steps save ordinary checkpoints the project's tower loading reads,
and an interrupted run resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import CLIPModel, CLIPVisionModel, Dinov2Model

from mof_llava.lab import measure, towers, world
from mof_llava.lab.towers import LabError, TowersConfig, TowerSize, train_towers

TINY = TowerSize(hidden=16, layers=2, heads=2, mlp=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(output, **changes) -> TowersConfig:
    base = dict(output=str(output), seed=5, clip_steps=4, ssl_steps=4, batch=6, checkpoint_every=2,
                size=TINY, progress=False)  # fmt: skip
    return TowersConfig(**{**base, **changes})


def _file_sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trained_towers_load_through_the_project_tower_path(tmp_path):
    results = train_towers(_config(tmp_path))
    for name in ("clip", "ssl"):
        folder = tmp_path / name
        info = json.loads((folder / towers.INFO_FILE).read_text())
        assert info["seed"] == 5 and info["steps"] == 4
        assert (
            info["model.safetensors sha256"]
            == _file_sha(folder / "model.safetensors")
            == results[name].sha256
        )
        assert (folder / "preprocessor_config.json").exists()
    assert CLIPModel.from_pretrained(tmp_path / "clip").config.vision_config.image_size == world.SIZE
    CLIPVisionModel.from_pretrained(tmp_path / "clip")
    Dinov2Model.from_pretrained(tmp_path / "ssl")

    loaded = measure.load_towers(str(tmp_path / "clip"), str(tmp_path / "ssl"))
    scenes = [world.random_scene(world.scene_rng(0, "probe", i)) for i in range(3)]
    patches = (world.SIZE // towers.PATCH) ** 2
    for name, layer in (("clip", -2), ("ssl", -1)):
        tower, global_model = loaded[name]
        assert tower.spec.feature_layer == layer
        feats = measure.features(tower, global_model, scenes)
        assert feats["tokens"].shape == (3, patches * TINY.hidden)
    # The saved SSL tower is the EMA teacher, not the student and not the initial weights.
    state = torch.load(tmp_path / "ssl" / towers.STATE_FILE, weights_only=True)["trainer"]
    saved = Dinov2Model.from_pretrained(tmp_path / "ssl").state_dict()
    key = "encoder.layer.0.attention.q_proj.weight"
    assert torch.equal(saved[key], state["teacher"][f"encoder.{key}"])
    assert not torch.equal(saved[key], state["student"][f"encoder.{key}"])


@pytest.mark.parametrize("tower", ["clip", "ssl"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, tower):
    whole = train_towers(_config(tmp_path / "whole", towers=(tower,)))[tower]

    trainer_class = towers.TRAINERS[tower]
    original = trainer_class.loss

    def stop_at_step_3(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(trainer_class, "loss", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_towers(_config(tmp_path / "split", towers=(tower,)))
    saved = torch.load(tmp_path / "split" / tower / towers.STATE_FILE, weights_only=True)
    assert saved["step"] == 2
    monkeypatch.setattr(trainer_class, "loss", original)

    resumed = train_towers(_config(tmp_path / "split", towers=(tower,)))[tower]
    assert resumed.resumed_from == 2
    assert resumed.sha256 == whole.sha256


def test_resuming_with_other_settings_is_refused(tmp_path):
    train_towers(_config(tmp_path, towers=("clip",), clip_steps=2))
    with pytest.raises(
        LabError, match=r"train_state.pt: saved by a run with other settings \(clip_steps, seed\)"
    ):
        train_towers(_config(tmp_path, towers=("clip",), clip_steps=3, seed=6))


def test_the_lab_towers_command_trains_and_reports_the_hash(tmp_path, capsys):
    from mof_llava.cli import main

    code = main(["lab", "towers", "--output", str(tmp_path), "--tower", "clip", "--clip-steps", "2",
                 "--batch", "4", "--threads", "1", "--quiet"])  # fmt: skip
    assert code == 0
    digest = _file_sha(tmp_path / "clip" / "model.safetensors")
    assert f"clip: {tmp_path / 'clip'} (2 steps, resumed at 0" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "clip" / towers.INFO_FILE).read_text())["model.safetensors sha256"] == digest
    )
    assert not (tmp_path / "ssl").exists()


def test_measuring_a_folder_without_towers_names_it(tmp_path):
    from mof_llava.cli import main

    (tmp_path / "clip").mkdir()
    with pytest.raises(LabError, match=r"no trained clip or ssl tower there"):
        main(["lab", "measure", str(tmp_path)])


def test_the_patch_size_is_a_recorded_setting(tmp_path):
    train_towers(_config(tmp_path, towers=("ssl",), ssl_steps=1, patch=8))
    info = json.loads((tmp_path / "ssl" / towers.INFO_FILE).read_text())
    assert info["config"]["patch"] == 8 and "clip_flips" in info["config"]
    assert Dinov2Model.from_pretrained(tmp_path / "ssl").config.patch_size == 8
    with pytest.raises(LabError, match=r"other settings \(patch\)"):
        train_towers(_config(tmp_path, towers=("ssl",), ssl_steps=1, patch=4))
    with pytest.raises(LabError, match=rf"patch must divide the world.s {world.SIZE} px side, got 5"):
        train_towers(_config(tmp_path / "other", patch=5))


def test_clip_flips_change_the_training_and_are_recorded(tmp_path):
    plain = train_towers(_config(tmp_path / "plain", towers=("clip",), clip_steps=1))["clip"]
    flipped = train_towers(_config(tmp_path / "flips", towers=("clip",), clip_steps=1, clip_flips=True))["clip"]
    assert flipped.sha256 != plain.sha256  # the same scenes and captions, other views
    info = json.loads((tmp_path / "flips" / "clip" / towers.INFO_FILE).read_text())
    assert info["config"]["clip_flips"] is True


def test_ssl_colour_jitter_changes_the_training_and_is_recorded(tmp_path):
    plain = train_towers(_config(tmp_path / "plain", towers=("ssl",), ssl_steps=1))["ssl"]
    jittered = train_towers(_config(tmp_path / "jit", towers=("ssl",), ssl_steps=1, ssl_colour_jitter=0.8))["ssl"]
    assert jittered.sha256 != plain.sha256  # the same scenes and crops, recoloured views
    info = json.loads((tmp_path / "jit" / "ssl" / towers.INFO_FILE).read_text())
    assert info["config"]["ssl_colour_jitter"] == 0.8
