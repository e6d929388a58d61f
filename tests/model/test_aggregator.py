"""LION's multi-level aggregator (mixer.aggregator): identity at init, trains while the towers stay
frozen, keeps the token count, survives save/load, and reads the layers LION's code reads
(JiuTian-LION `lion_t5.py:261`: queries `intermediate[38]`, keys `[28]` and `[18]`, i.e. offsets -10, -20)."""

import logging

import pytest
import torch
from model_helpers import IMAGE_SIZE, clip_tower, dino_tower, make_config
from safetensors.torch import load_file

from mof_llava import MofLlavaForConditionalGeneration, build_model
from mof_llava.model.configuration import (
    AggregatorSpec,
    MixerSpec,
    MofLlavaConfig,
    MofLlavaConfigError,
    TowerSpec,
    aggregator_layers,
)
from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config
from mof_llava.training.stages import apply_stage

# Tiny towers have 3 blocks: offsets -1, -2 fit them (LION's -10, -20 are checked on 24-block towers below).
SHORT = {"layer_offsets": [-1, -2]}
MIXERS = {
    "none": ({"mode": "none"}, 1),
    "additive": ({"mode": "additive", "alpha": 0.5}, 2),
    "interleave": ({"mode": "interleave"}, 2),
    "concat": ({"mode": "concat"}, 2),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(mode):
    """(model without aggregator, the same model with one): equal weights everywhere else."""
    mixer, n_towers = MIXERS[mode]
    towers = [clip_tower(), dino_tower()][:n_towers]
    torch.manual_seed(0)
    base = MofLlavaForConditionalGeneration(make_config(towers, mixer)).eval()
    torch.manual_seed(1)
    agg = MofLlavaForConditionalGeneration(make_config(towers, {**mixer, "aggregator": SHORT})).eval()
    result = agg.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("mixer.aggregators.") for k in result.missing_keys)
    assert result.missing_keys
    return base, agg


def _inputs(model, n_images=2):
    torch.manual_seed(2)
    per_image = [1, 5] + [512] * model.config.num_image_tokens + [7]
    return torch.tensor([per_image * n_images]), torch.randn(n_images, 3, IMAGE_SIZE, IMAGE_SIZE)


def _randomise(aggregators):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in aggregators.parameters():
            p.copy_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("mode", list(MIXERS))
def test_zero_init_aggregator_leaves_logits_identical(mode):
    base, agg = _pair(mode)
    input_ids, pixels = _inputs(base)
    with torch.no_grad():
        expected = base(input_ids=input_ids, pixel_values=pixels).logits
        got = agg(input_ids=input_ids, pixel_values=pixels).logits
    assert torch.equal(got, expected)
    # ...and not because it is absent: non-zero weights change the logits.
    _randomise(agg.mixer.aggregators)
    with torch.no_grad():
        assert not torch.equal(agg(input_ids=input_ids, pixel_values=pixels).logits, expected)


def test_token_count_unchanged_under_interleave():
    base, agg = _pair("interleave")
    _randomise(agg.mixer.aggregators)
    _, pixels = _inputs(base, n_images=3)
    with torch.no_grad():
        tokens = agg.get_image_features(pixels)
    assert tokens.shape == base.get_image_features(pixels).shape == (3, agg.config.num_image_tokens, 64)
    assert agg.config.num_image_tokens == base.config.num_image_tokens == 2 * 16


def test_one_step_trains_the_aggregator_and_not_the_towers(caplog):
    _, model = _pair("interleave")
    with caplog.at_level(logging.INFO, logger="mof_llava"):
        model = apply_stage(model, "pretrain")
    assert "trained  mixer.aggregators" in caplog.text
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, _ in model.mixer.aggregators.named_parameters(prefix="mixer.aggregators")} <= trainable
    towers_before = {n: p.clone() for n, p in model.vision_towers.named_parameters()}
    input_ids, pixels = _inputs(model)
    with torch.no_grad():
        feats = {n: model.vision_towers[n].hidden_states(pixels, model.mixer.tower_layers[n]) for n in ("clip", "dinov2")}
        before = {n: model.mixer.aggregators[n](f[0], f[1:]) for n, f in feats.items()}

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(input_ids=input_ids, pixel_values=pixels, labels=input_ids).loss
    assert loss.item() > 0
    loss.backward()
    optimizer.step()

    assert all(p.grad is None for p in model.vision_towers.parameters())
    assert all(torch.equal(p, towers_before[n]) for n, p in model.vision_towers.named_parameters())
    with torch.no_grad():
        for name, f in feats.items():
            after = model.mixer.aggregators[name](f[0], f[1:])
            assert torch.equal(before[name], f[0])  # identity before the step
            assert not torch.allclose(after, before[name])


def test_save_load_round_trip_through_safetensors(tmp_path):
    _, model = _pair("interleave")
    _randomise(model.mixer.aggregators)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("mixer.aggregators.clip.blocks.1.o.") for k in saved)
    loaded = MofLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.mixer_spec.aggregator == AggregatorSpec(layer_offsets=(-1, -2))
    input_ids, pixels = _inputs(model)
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=input_ids, pixel_values=pixels).logits, model(input_ids=input_ids, pixel_values=pixels).logits
        )


def _tower_24(kind):
    if kind == "clip":
        return TowerSpec("clip", tiny_clip_vision_config(IMAGE_SIZE, 32, num_layers=24).to_dict(), feature_layer=-2)
    return TowerSpec("dinov2", tiny_dinov2_config(IMAGE_SIZE, 32, num_layers=24).to_dict(), feature_layer=-1)


def test_layers_are_lions_offsets_on_24_block_towers():
    # hidden_states[0] is the embeddings, [i] the output of block i. CLIP's query is layer -2 = block 23,
    # DINOv2's the last block (24); LION's keys lie 10 and 20 blocks before the query.
    spec = AggregatorSpec()
    assert spec.layer_offsets == (-10, -20)
    assert aggregator_layers(spec, _tower_24("clip")) == (23, 13, 3)
    assert aggregator_layers(spec, _tower_24("dinov2")) == (24, 14, 4)


def test_the_aggregator_receives_those_hidden_states():
    towers = [_tower_24("clip"), _tower_24("dinov2")]
    torch.manual_seed(0)
    model = MofLlavaForConditionalGeneration(make_config(towers, {"mode": "interleave", "aggregator": {}})).eval()
    seen = {}
    for name, module in model.mixer.aggregators.items():
        module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args))
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        model.get_image_features(pixels)
        for name, layers in (("clip", (23, 13, 3)), ("dinov2", (24, 14, 4))):
            states = model.vision_towers[name].encoder(pixel_values=pixels, output_hidden_states=True).hidden_states
            query, earlier = seen[name]
            assert torch.equal(query, states[layers[0]][:, -16:])
            assert all(torch.equal(e, states[i][:, -16:]) for e, i in zip(earlier, layers[1:]))


def test_off_by_default_and_config_json_unchanged():
    config = make_config([clip_tower(), dino_tower()], {"mode": "interleave"})
    assert config.mixer_spec.aggregator is None and "aggregator" not in config.mixer
    model = MofLlavaForConditionalGeneration(config)
    assert len(model.mixer.aggregators) == 0
    assert not any("aggregator" in k for k in model.state_dict())


def test_aggregator_on_chosen_towers_only():
    config = make_config([clip_tower(), dino_tower()], {"mode": "interleave", "aggregator": {**SHORT, "towers": ["dinov2"]}})
    assert list(MofLlavaForConditionalGeneration(config).mixer.aggregators) == ["dinov2"]


@pytest.mark.parametrize(
    "aggregator, message",
    [
        ({}, r"tower 'clip': the aggregator reads hidden_states \[2, -8, -18\]"),
        ({"layer_offsets": [1]}, "must be negative offsets"),
        ({**SHORT, "towers": ["siglip"]}, r"must name some of the towers"),
        ({**SHORT, "num_heads": 5}, "does not divide the width 32"),
        ({**SHORT, "lr_multiplier": 0}, "must be positive"),
        ({**SHORT, "depth": 2}, r"mixer.aggregator: unknown keys \['depth'\]"),
    ],
)
def test_bad_aggregator_settings_are_one_clear_error(aggregator, message):
    with pytest.raises(MofLlavaConfigError, match=message):
        make_config([clip_tower(), dino_tower()], {"mode": "interleave", "aggregator": aggregator})


def test_mixer_spec_round_trips_its_aggregator():
    spec = MixerSpec(mode="concat", aggregator=AggregatorSpec(layer_offsets=(-1, -2), lr_multiplier=10.0))
    assert MixerSpec.from_dict(spec.to_dict()) == spec
    assert MofLlavaConfig.from_dict(make_config([clip_tower(), dino_tower()], spec).to_dict()).mixer_spec == spec


def test_built_from_component_checkpoints_the_aggregator_starts_as_the_identity(tiny_parts):
    # build_model allocates the mixer on the meta device and initialises it itself.
    from mof_llava.model.builder import mof_recipe

    recipe = mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2))
    base, _ = build_model(recipe)
    recipe.mixer = MixerSpec(mode="interleave", aggregator=AggregatorSpec(layer_offsets=(-1, -2)))
    model, _ = build_model(recipe)
    blocks = [b for a in model.mixer.aggregators.values() for b in a.blocks]
    assert len(blocks) == 4
    assert all(not b.o.weight.any() and not b.fc2.bias.any() and torch.equal(b.norm_q.weight, torch.ones(32)) for b in blocks)
    assert all(b.q.weight.abs().sum() > 0 for b in blocks)
    model.mixer.adapters.load_state_dict(base.mixer.adapters.state_dict())
    pixels = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        assert torch.equal(model.get_image_features(pixels), base.get_image_features(pixels))


def test_stage1_adapters_artifact_carries_the_aggregator(tmp_path):
    from mof_llava.model.adapter_artifact import AdapterLoadError, load_adapters, save_adapters

    base, model = _pair("interleave")
    _randomise(model.mixer.aggregators)
    save_adapters(model, tmp_path)
    _, fresh = _pair("interleave")
    load_adapters(fresh, tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(fresh.mixer.parameters(), model.mixer.parameters()))
    with pytest.raises(AdapterLoadError, match="trained for a different model"):
        load_adapters(base, tmp_path)  # a mixer without the aggregator refuses it


def test_llava_hf_export_refuses_a_model_with_an_aggregator():
    # llava-hf has no place for the aggregator: exporting would drop it silently.
    from mof_llava.convert import ConversionError, export_llava_hf

    _, model = _pair("none")
    with pytest.raises(ConversionError, match="no aggregator"):
        export_llava_hf(model, processor=None)


def test_stage2_trains_the_aggregator_towers_stay_frozen():
    _, model = _pair("interleave")
    model = apply_stage(model, "finetune")
    assert all(p.requires_grad for p in model.mixer.aggregators.parameters())
    assert not any(p.requires_grad for p in model.vision_towers.parameters())
