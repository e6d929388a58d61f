"""The mixer's semantics, each checked against an independent construction from the adapters' outputs."""

import pytest
import torch
import torch.nn.functional as F
from model_helpers import clip_tower, dino_tower, make_config

from mof_llava import MofLlavaForConditionalGeneration


def _model(towers, mixer, seed=0):
    torch.manual_seed(seed)
    return MofLlavaForConditionalGeneration(make_config(towers, mixer)).eval()


def _features(model, pixels):
    return {name: tower(pixels) for name, tower in model.vision_towers.items()}


def test_interleave_is_reference_raster_order():
    model = _model([clip_tower(), dino_tower()], {"mode": "interleave"})
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        clip = model.mixer.adapters["clip"](feats["clip"])
        dino = model.mixer.adapters["dinov2"](feats["dinov2"])
        tokens = model.get_image_features(pixels)
    assert tokens.shape == (3, 32, 64)
    for i in range(3):  # the reference: merged = empty(2N, D); merged[0::2] = clip; merged[1::2] = dino
        merged = torch.empty(32, 64)
        merged[0::2] = clip[i]
        merged[1::2] = dino[i]
        assert torch.equal(tokens[i], merged)


def test_interleave_round_robin_over_three_towers():
    model = _model([clip_tower(), dino_tower(), dino_tower("dinov2_b")], {"mode": "interleave"})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        streams = [model.mixer.adapters[n](feats[n]) for n in ("clip", "dinov2", "dinov2_b")]
        tokens = model.get_image_features(pixels)
    assert tokens.shape == (2, 48, 64)
    for t in range(16):
        for k in range(3):
            assert torch.equal(tokens[:, 3 * t + k], streams[k][:, t])


def test_additive_alpha_zero_equals_baseline_bit_for_bit():
    baseline = _model([clip_tower()], {"mode": "none"}, seed=0)
    additive = _model([clip_tower(), dino_tower()], {"mode": "additive", "alpha": 0.0}, seed=1)
    additive.vision_towers["clip"].load_state_dict(baseline.vision_towers["clip"].state_dict())
    additive.mixer.adapters["shared"].load_state_dict(baseline.mixer.adapters["clip"].state_dict())
    additive.language_model.load_state_dict(baseline.language_model.state_dict())
    input_ids = torch.tensor([[1, 5, 9] + [512] * 16 + [7, 8]])
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        expected = baseline(input_ids=input_ids, pixel_values=pixels).logits
        got = additive(input_ids=input_ids, pixel_values=pixels).logits
    assert torch.equal(got, expected)
    assert additive.mixer.required_towers == ["clip"]  # DINOv2 is not even run


def test_additive_alpha_one_uses_only_dinov2():
    model = _model([clip_tower(), dino_tower()], {"mode": "additive", "alpha": 1.0})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = model.mixer.adapters["shared"](model.vision_towers["dinov2"](pixels))
        before = model.get_image_features(pixels)
        for p in model.vision_towers["clip"].parameters():
            p.add_(torch.randn_like(p))  # CLIP changes, the visual tokens must not
        after = model.get_image_features(pixels)
    assert torch.equal(before, expected)
    assert torch.equal(after, before)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.875])
def test_additive_mixes_features_before_one_adapter(alpha):
    model = _model([clip_tower(), dino_tower()], {"mode": "additive", "alpha": alpha})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        expected = model.mixer.adapters["shared"](alpha * feats["dinov2"] + (1 - alpha) * feats["clip"])
        torch.testing.assert_close(model.get_image_features(pixels), expected, rtol=0, atol=0)
    assert list(model.mixer.adapters) == ["shared"]


def test_additive_projection_maps_a_wider_tower_to_the_first_width():
    model = _model([clip_tower(hidden_size=32), dino_tower(hidden_size=48)],
                   {"mode": "additive", "alpha": 0.5, "additive_projection": True})
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        mixed = 0.5 * model.mixer.projections["dinov2"](feats["dinov2"]) + 0.5 * feats["clip"]
        torch.testing.assert_close(model.get_image_features(pixels), model.mixer.adapters["shared"](mixed))
    assert list(model.mixer.projections) == ["dinov2"]


def test_concat_joins_channels_before_one_adapter():
    model = _model([clip_tower(hidden_size=32), dino_tower(hidden_size=48)], {"mode": "concat"})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        expected = model.mixer.adapters["shared"](torch.cat([feats["clip"], feats["dinov2"]], dim=-1))
        assert torch.equal(model.get_image_features(pixels), expected)
    assert model.mixer.adapters["shared"][0].in_features == 80


def test_grid_resampling_brings_towers_to_one_grid():
    # DINOv2 with 28 px patches sees a 2 x 2 grid, CLIP a 4 x 4 grid; both are resampled to 3 x 3.
    model = _model([clip_tower(), dino_tower(patch_size=28)], {"mode": "interleave", "grid": [3, 3]})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = _features(model, pixels)
        def resample(f, side):
            grid = f.transpose(1, 2).reshape(2, f.shape[-1], side, side)
            return F.interpolate(grid, size=(3, 3), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        clip = model.mixer.adapters["clip"](resample(feats["clip"], 4))
        dino = model.mixer.adapters["dinov2"](resample(feats["dinov2"], 2))
        tokens = model.get_image_features(pixels)
    assert feats["dinov2"].shape[1] == 4 and tokens.shape == (2, 18, 64)
    assert torch.equal(tokens[:, 0::2], clip) and torch.equal(tokens[:, 1::2], dino)
