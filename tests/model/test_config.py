"""Every invalid model configuration fails when the config is made, with a message saying what to change;
valid ones give the documented visual token counts."""

import pytest
from model_helpers import clip_tower, dino_tower, make_config

from mof_llava.model.configuration import MofLlavaConfig, MofLlavaConfigError


@pytest.mark.parametrize(
    ("towers", "mixer", "message"),
    [
        (lambda: [clip_tower(), dino_tower()], {"mode": "sum"}, "unknown mixer mode 'sum'"),
        (lambda: [clip_tower(), dino_tower()], {"mode": "additive", "alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        (lambda: [clip_tower(), dino_tower()], {"mode": "additive", "alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        (
            lambda: [clip_tower(hidden_size=32), dino_tower(hidden_size=48)],
            {"mode": "additive", "alpha": 0.5},
            r"additive mixing needs equal feature widths, got \{'clip': 32, 'dinov2': 48\}.*additive_projection",
        ),
        (lambda: [clip_tower(), dino_tower()], {"mode": "none"}, "mixer mode 'none' uses one tower but 2"),
        (lambda: [clip_tower()], {"mode": "interleave"}, "needs at least two towers"),
        (lambda: [clip_tower(), dino_tower(), dino_tower("d2")], {"mode": "additive"}, "exactly two towers"),
        (lambda: [clip_tower(), dino_tower()], {"mode": "interleave", "alpha": 0.5}, "alpha only applies to additive"),
        (lambda: [clip_tower()], {"adapter": "mlp2x_relu"}, "unknown adapter 'mlp2x_relu'"),
        (lambda: [clip_tower()], {"adapter": "mlp0x_gelu"}, "unknown adapter 'mlp0x_gelu'"),
        (lambda: [clip_tower(), dino_tower("clip")], {"mode": "interleave"}, "unique identifiers"),
        (
            lambda: [clip_tower(), dino_tower(patch_size=28)],
            {"mode": "interleave"},
            r"different token grids .*'clip': \(4, 4\), 'dinov2': \(2, 2\).*mixer.grid",
        ),
        (lambda: [clip_tower(), dino_tower()], {"mode": "interleave", "extra": 1}, r"mixer: unknown keys \['extra'\]"),
    ],
)
def test_invalid_combinations_fail_at_config_time(towers, mixer, message):
    with pytest.raises(MofLlavaConfigError, match=message):
        make_config(towers(), mixer)


def test_clip_tower_must_match_image_size():
    with pytest.raises(MofLlavaConfigError, match="CLIP model trained at 56 px but images are 112 px"):
        make_config([clip_tower()], image_size=112)


def test_image_size_must_be_a_multiple_of_patch_size():
    with pytest.raises(MofLlavaConfigError, match="not a multiple of its patch size 14"):
        make_config([dino_tower(image_size=60), dino_tower("d2", image_size=60)], {"mode": "interleave"}, image_size=60)


@pytest.mark.parametrize(
    ("mixer", "n_towers", "expected"),
    [
        ({"mode": "none"}, 1, 16),
        ({"mode": "additive", "alpha": 0.5}, 2, 16),
        ({"mode": "interleave"}, 2, 32),
        ({"mode": "interleave"}, 3, 48),
        ({"mode": "concat"}, 2, 16),
        ({"mode": "interleave", "grid": [2, 3]}, 2, 12),
    ],
)
def test_visual_token_counts(mixer, n_towers, expected):
    towers = [clip_tower(), dino_tower(), dino_tower("dinov2_b")][:n_towers]
    assert make_config(towers, mixer).num_image_tokens == expected


def test_paper_sizes_give_576_and_1152_tokens():
    # CLIP ViT-L/14 at 336 px (the default tower) and DINOv2 ViT-L/14 fed the same 336 px image.
    baseline = MofLlavaConfig()
    assert baseline.num_image_tokens == 576
    clip = baseline.towers[0]
    dinov2 = dino_tower(hidden_size=1024, image_size=336)
    dinov2 = type(dinov2)("dinov2", {**dinov2.vision_config, "num_attention_heads": 16}, feature_layer=-1)
    imof = MofLlavaConfig(vision_towers=[clip, dinov2], mixer={"mode": "interleave"})
    amof = MofLlavaConfig(vision_towers=[clip, dinov2], mixer={"mode": "additive", "alpha": 0.75})
    assert imof.num_image_tokens == 1152
    assert amof.num_image_tokens == 576


def test_config_round_trips_through_json(tmp_path):
    config = make_config([clip_tower(), dino_tower()], {"mode": "additive", "alpha": 0.625})
    config.save_pretrained(tmp_path)
    loaded = MofLlavaConfig.from_pretrained(tmp_path)
    assert loaded.towers == config.towers
    assert loaded.mixer_spec == config.mixer_spec
    assert loaded.mixer_spec.alpha == 0.625
    assert loaded.num_image_tokens == 16


def test_pos_interpolation_is_saved_and_applies_to_dinov2_only(tmp_path):
    from dataclasses import replace

    hub = replace(dino_tower(), pos_interpolation="hub")
    config = make_config([clip_tower(), hub], {"mode": "interleave"})
    config.save_pretrained(tmp_path)
    loaded = MofLlavaConfig.from_pretrained(tmp_path)
    assert [t.pos_interpolation for t in loaded.towers] == ["transformers", "hub"]
    with pytest.raises(MofLlavaConfigError, match=r"tower 'clip': pos_interpolation 'hub' is torch.hub DINOv2's"):
        make_config([replace(clip_tower(), pos_interpolation="hub")])
    with pytest.raises(MofLlavaConfigError, match=r"tower 'dinov2': unknown pos_interpolation 'timm'"):
        make_config([clip_tower(), replace(dino_tower(), pos_interpolation="timm")], {"mode": "interleave"})
