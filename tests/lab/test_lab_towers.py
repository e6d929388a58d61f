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


def test_patchify_matches_unfold_in_the_encoders_patch_order():
    from mof_llava.lab.ssl import patchify

    pixels = torch.randn(2, 3, 12, 12)
    # torch's unfold: [n, C*p*p, L] with channels outermost; ours keeps a patch's rows, columns, then channels
    unfolded = torch.nn.functional.unfold(pixels, kernel_size=4, stride=4).transpose(1, 2)
    expected = unfolded.reshape(2, 9, 3, 4, 4).permute(0, 1, 3, 4, 2).reshape(2, 9, 48)
    assert torch.equal(patchify(pixels, 4), expected)
    # patch 1 (row 0, column 1) is the square of rows 0-3, columns 4-7
    assert torch.equal(patchify(pixels, 4)[0, 1], pixels[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


def test_ssl_pixel_weight_adds_the_own_patch_pixel_term_and_is_recorded(tmp_path):
    plain = train_towers(_config(tmp_path / "plain", towers=("ssl",), ssl_steps=1))["ssl"]
    pixel = train_towers(_config(tmp_path / "px", towers=("ssl",), ssl_steps=1, ssl_pixel_weight=1.0))["ssl"]
    assert pixel.sha256 != plain.sha256
    info = json.loads((tmp_path / "px" / "ssl" / towers.INFO_FILE).read_text())
    assert info["config"]["ssl_pixel_weight"] == 1.0
    # The term is each patch token's squared error against its own patch of the view: a head
    # predicting zeros misses by the views' mean square.
    trainer = towers.SslTrainer(_config(tmp_path / "x", towers=("ssl",), ssl_pixel_weight=2.0))
    head = trainer.student.pixel_head
    assert head.out_features == 3 * trainer.cfg.patch**2
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    views = [torch.randn(2, 3, world.SIZE, world.SIZE) for _ in range(2)]
    outputs = [trainer.student.outputs(v) for v in views]
    expected = sum(v.pow(2).mean() for v in views) / 2
    assert torch.allclose(trainer._pixels(outputs, views), expected)


def test_clip_shape_pairs_put_hard_negatives_in_each_batch(tmp_path):
    cfg = _config(tmp_path, towers=("clip",), batch=8, clip_shape_pairs=0.5)
    scenes = towers.ClipTrainer(cfg)._scenes(3)
    assert len(scenes) == 8
    for a, b in zip(scenes[0:4:2], scenes[1:4:2]):  # two pairs, then random scenes
        changed = {k for k, v in world.labels(a).items() if world.labels(b)[k] != v}
        assert changed == {"shape"}
    plain = towers.ClipTrainer(_config(tmp_path, towers=("clip",), batch=8))._scenes(3)
    assert scenes[4:] == plain[4:]
    result = train_towers(_config(tmp_path / "pairs", towers=("clip",), clip_steps=1, clip_shape_pairs=0.5))["clip"]
    info = json.loads((tmp_path / "pairs" / "clip" / towers.INFO_FILE).read_text())
    assert info["config"]["clip_shape_pairs"] == 0.5 and result.steps == 1
