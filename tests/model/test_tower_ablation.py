"""Per-tower attribution (mixer.TowerAblation): each mode changes exactly the targeted tower's part of
the visual tokens, checked against a construction from the towers' and adapters' own outputs."""

import pytest
import torch
from model_helpers import clip_tower, dino_tower, make_config

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.configuration import MofLlavaConfigError, num_visual_tokens
from mof_llava.model.mixer import TowerAblation, ablate_tower


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _model(mixer, towers=None, seed=0):
    torch.manual_seed(seed)
    towers = towers or [clip_tower(), dino_tower()]
    return MofLlavaForConditionalGeneration(make_config(towers, mixer)).eval()


def _tokens(model, pixels, ablation=None):
    ablate_tower(model, ablation)
    with torch.no_grad():
        return model.get_image_features(pixels)


def _stream(model, name, pixels):
    with torch.no_grad():
        return model.mixer.adapters[name](model.vision_towers[name](pixels))


def _blank(model):
    return torch.zeros(1, 3, model.config.image_size, model.config.image_size)


def test_zero_sets_only_the_ablated_towers_interleaved_tokens_to_zero():
    model = _model({"mode": "interleave"})
    pixels = torch.randn(2, 3, 56, 56)
    normal = _tokens(model, pixels)
    ablated = _tokens(model, pixels, TowerAblation("dinov2", "zero"))
    assert ablated.shape == normal.shape == (2, 32, 64)
    assert torch.equal(ablated[:, 0::2], normal[:, 0::2])  # CLIP's tokens untouched
    assert torch.equal(ablated[:, 1::2], torch.zeros_like(normal[:, 1::2]))
    assert not torch.equal(normal[:, 1::2], torch.zeros_like(normal[:, 1::2]))


def test_blank_puts_a_blank_images_tokens_in_the_ablated_towers_places():
    model = _model({"mode": "interleave"})
    pixels = torch.randn(3, 3, 56, 56)
    normal = _tokens(model, pixels)
    ablated = _tokens(model, pixels, TowerAblation("clip", "blank"))
    blank_clip = _stream(model, "clip", _blank(model))[0]
    assert torch.equal(ablated[:, 1::2], normal[:, 1::2])  # DINOv2's tokens untouched
    for i in range(3):
        torch.testing.assert_close(ablated[i, 0::2], blank_clip, rtol=0, atol=1e-6)
    assert not torch.allclose(normal[:, 0::2], ablated[:, 0::2])


def test_drop_removes_the_towers_tokens_and_the_count_follows_num_visual_tokens():
    model = _model({"mode": "interleave"})
    pixels = torch.randn(2, 3, 56, 56)
    assert model.mixer.num_visual_tokens == model.config.num_image_tokens == 32
    ablated = _tokens(model, pixels, TowerAblation("dinov2", "drop"))
    expected = num_visual_tokens(model.config.mixer_spec, model.config.tower_grids, ["dinov2"])
    assert model.mixer.num_visual_tokens == expected == 16 == ablated.shape[1]
    assert torch.equal(ablated, _stream(model, "clip", pixels))
    # the LLM takes exactly that many placeholders
    input_ids = torch.tensor([[1, 5] + [model.config.image_token_id] * 16 + [7]])
    with torch.no_grad():
        assert model(input_ids=input_ids, pixel_values=pixels[:1]).logits.shape[1] == 19
    ablate_tower(model, None)
    assert model.mixer.num_visual_tokens == 32 and _tokens(model, pixels).shape[1] == 32


def test_drop_of_one_of_three_interleaves_the_other_two_round_robin():
    towers = [clip_tower(), dino_tower(), dino_tower("dinov2_b")]
    model = _model({"mode": "interleave"}, towers)
    pixels = torch.randn(1, 3, 56, 56)
    ablated = _tokens(model, pixels, TowerAblation("dinov2", "drop"))
    clip, other = _stream(model, "clip", pixels), _stream(model, "dinov2_b", pixels)
    assert ablated.shape[1] == model.mixer.num_visual_tokens == 32
    assert torch.equal(ablated[:, 0::2], clip) and torch.equal(ablated[:, 1::2], other)


def test_additive_zero_and_blank_replace_the_towers_features_before_the_shared_adapter():
    model = _model({"mode": "additive", "alpha": 0.25})
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        clip = model.vision_towers["clip"](pixels)
        blank_dino = model.vision_towers["dinov2"](_blank(model))
        adapter = model.mixer.adapters["shared"]
        zeroed, blanked = adapter(0.75 * clip), adapter(0.25 * blank_dino + 0.75 * clip)
    torch.testing.assert_close(
        _tokens(model, pixels, TowerAblation("dinov2", "zero")), zeroed, rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        _tokens(model, pixels, TowerAblation("dinov2", "blank")), blanked, rtol=0, atol=1e-6
    )


def test_zero_of_the_only_tower_gives_zero_tokens():
    model = _model({"mode": "none"}, [clip_tower()])
    tokens = _tokens(model, torch.randn(2, 3, 56, 56), TowerAblation("clip", "zero"))
    assert tokens.shape == (2, 16, 64) and not tokens.any()


@pytest.mark.parametrize(
    ("mixer", "ablation", "message"),
    [
        ({"mode": "additive", "alpha": 0.5}, TowerAblation("dinov2", "drop"), "only interleave mixing has"),
        ({"mode": "additive", "alpha": 0.0}, TowerAblation("dinov2", "zero"), "changes nothing"),
        (
            {"mode": "interleave"},
            TowerAblation("siglip", "zero"),
            "the model's towers are ['clip', 'dinov2']",
        ),
        ({"mode": "interleave"}, TowerAblation("clip", "noise"), "unknown tower ablation 'noise'"),
    ],
)
def test_ablations_that_cannot_apply_are_refused_with_one_line(mixer, ablation, message):
    model = _model(mixer)
    with pytest.raises(MofLlavaConfigError, match=None) as err:
        ablate_tower(model, ablation)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert model.mixer.ablation is None


def test_an_ablation_is_inference_only():
    model = _model({"mode": "interleave"})
    ablate_tower(model, TowerAblation("clip", "zero"))
    model.train()
    with pytest.raises(RuntimeError, match="inference only"):
        model.get_image_features(torch.randn(1, 3, 56, 56))


def test_blank_with_an_aggregator_equals_the_model_run_on_a_blank_image():
    model = _model({"mode": "interleave", "aggregator": {"layer_offsets": [-1]}})
    with torch.no_grad():  # LION's aggregators start as the identity: move them off it
        for p in model.mixer.aggregators.parameters():
            p.add_(0.1 * torch.randn_like(p))
    on_blank = _tokens(model, _blank(model))
    ablated = _tokens(model, torch.randn(2, 3, 56, 56), TowerAblation("dinov2", "blank"))
    for i in range(2):
        torch.testing.assert_close(ablated[i, 1::2], on_blank[0, 1::2], rtol=0, atol=1e-5)
