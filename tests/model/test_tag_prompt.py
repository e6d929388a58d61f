"""LION's tag soft prompt in the model and processor: the template is LION's string, the learnable
vector lands exactly at the `<tag_hint>` placeholder and trains, the option off changes nothing,
and the vector survives save/load.

Golden template: JiuTian-VL/JiuTian-LION `lion_t5.py:131` (quoted in extensions-lion-bpo.md §A1),
"According to <extra_id_0>, you are allowed to use or partially use the following tags: [{tags}]. "
with our marker in place of `<extra_id_0>`."""

import json

import pytest
import torch
from model_helpers import IMAGE_SIZE, clip_tower, make_config

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor, build_model
from mof_llava.constants import TAG_HINT_TOKEN, TAG_HINT_TOKEN_INDEX
from mof_llava.data.tag_prompt import tag_prompt
from mof_llava.model.builder import llava15_recipe
from mof_llava.model.configuration import MofLlavaConfigError
from mof_llava.testing.tiny import build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tags: bool):
    config = make_config([clip_tower()], {"mode": "none"})
    if tags:
        config = make_config([clip_tower()], {"mode": "none"})
        config.tag_hint_token_id = TAG_HINT_TOKEN_INDEX
    return config


def _model(tags: bool, seed: int = 0):
    torch.manual_seed(seed)
    return MofLlavaForConditionalGeneration(_config(tags)).eval()


def _ids(model, hint: int):
    """BOS, 2 text ids, the image's placeholders, 2 text ids, the hint (or a text id), 2 text ids."""
    n = model.config.num_image_tokens
    return torch.tensor([[1, 5, 9] + [512] * n + [11, 13, hint, 17, 19]])


def _embeds_given_to_the_llm(model, input_ids, pixel_values, labels=None):
    seen = {}

    def grab(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]

    handle = model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = model(input_ids=input_ids, pixel_values=pixel_values, labels=labels)
    finally:
        handle.remove()
    return seen["embeds"], out


def test_the_template_is_lions_string():
    assert tag_prompt(["dog", "green grass", "frisbee"]) == (
        "According to <tag_hint>, you are allowed to use or partially use the following tags: "
        "[dog, green grass, frisbee]. "
    )
    assert (
        tag_prompt([])
        == "According to <tag_hint>, you are allowed to use or partially use the following tags: []. "
    )


def test_the_vector_lands_exactly_at_the_placeholder_and_nowhere_else():
    model = _model(tags=True)
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with_hint = _ids(model, TAG_HINT_TOKEN_INDEX)
    plain = _ids(model, 23)  # the same sequence with an ordinary token where the hint is
    position = int((with_hint[0] == TAG_HINT_TOKEN_INDEX).nonzero())
    with torch.no_grad():
        hinted, _ = _embeds_given_to_the_llm(model, with_hint, pixels)
        reference, _ = _embeds_given_to_the_llm(model, plain, pixels)
    assert torch.equal(hinted[0, position], model.tag_prompt.vector)
    others = torch.ones(with_hint.shape[1], dtype=torch.bool)
    others[position] = False
    assert torch.equal(hinted[0, others], reference[0, others])  # text and visual tokens untouched
    assert not torch.equal(hinted[0, position], reference[0, position])


def test_the_vector_receives_gradient_and_the_hint_is_never_a_target():
    model = _model(tags=True).train()
    input_ids = _ids(model, TAG_HINT_TOKEN_INDEX)
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    labels = input_ids.clone()  # the hint's id would be an out-of-vocabulary target if not masked
    _, out = _embeds_given_to_the_llm(model, input_ids, pixels, labels=labels)
    out.loss.backward()
    grad = model.tag_prompt.vector.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_off_by_default_logits_are_todays():
    """Without the option the model has no extra parameter, and its logits equal an independent rebuild of the LLaVA merge (embed, scatter visual tokens, run the LLM)."""
    model = _model(tags=False)
    assert model.tag_prompt is None and not any("tag_prompt" in k for k in model.state_dict())
    assert model.config.tag_hint_token_id is None
    input_ids = _ids(model, 23)
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixels).logits
        mask = input_ids == 512
        embeds = model.language_model.get_input_embeddings()(input_ids.masked_fill(mask, 0))
        visual = model.get_image_features(pixels).reshape(-1, embeds.shape[-1])
        embeds[mask] = visual
        expected = model.language_model(inputs_embeds=embeds).logits
    assert torch.equal(logits, expected)


def test_the_same_weights_with_the_option_on_give_the_same_logits_without_a_hint():
    off, on = _model(tags=False), _model(tags=True, seed=1)
    result = on.load_state_dict(off.state_dict(), strict=False)
    assert result.missing_keys == ["tag_prompt.vector"] and not result.unexpected_keys
    input_ids, pixels = _ids(off, 23), torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(
            off(input_ids=input_ids, pixel_values=pixels).logits,
            on(input_ids=input_ids, pixel_values=pixels).logits,
        )


def test_save_load_round_trip(tmp_path):
    model = _model(tags=True)
    with torch.no_grad():
        model.tag_prompt.vector.add_(torch.arange(model.tag_prompt.vector.numel()) / 7.0)  # not its init
    processor = MofLlavaProcessor.for_config(model.config, build_tiny_tokenizer())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = MofLlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.tag_hint_token_id == TAG_HINT_TOKEN_INDEX
    assert torch.equal(loaded.tag_prompt.vector, model.tag_prompt.vector)
    assert MofLlavaProcessor.from_pretrained(tmp_path).tag_hint_token_id == TAG_HINT_TOKEN_INDEX


def test_a_processor_without_the_option_saves_what_it_saved_before(tmp_path):
    processor = MofLlavaProcessor.for_config(_config(tags=False), build_tiny_tokenizer())
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert "tag_hint_token_id" not in saved
    assert MofLlavaProcessor.from_pretrained(tmp_path).tag_hint_token_id is None


def test_the_processor_writes_one_hint_id_for_the_marker():
    tokenizer = build_tiny_tokenizer()
    processor = MofLlavaProcessor.for_config(_config(tags=True), tokenizer)
    before, after = "<image>\nAccording to ", ", you are allowed"
    encoded = processor.encode(before + TAG_HINT_TOKEN + after)
    n = processor.num_image_tokens
    first = tokenizer("\nAccording to ", add_special_tokens=False)["input_ids"]
    rest = tokenizer(after, add_special_tokens=False)["input_ids"]
    assert encoded.ids == [tokenizer.bos_token_id] + [512] * n + first + [TAG_HINT_TOKEN_INDEX] + rest
    hint_at = encoded.ids.index(TAG_HINT_TOKEN_INDEX)
    assert encoded.offsets[hint_at] == (len(before), len(before) + len(TAG_HINT_TOKEN))


def test_a_processor_without_the_option_refuses_the_marker():
    processor = MofLlavaProcessor.for_config(_config(tags=False), build_tiny_tokenizer())
    with pytest.raises(ValueError, match="tag soft prompt"):
        processor.encode(f"<image>\n{TAG_HINT_TOKEN} what?")


def test_the_hint_id_must_differ_from_the_image_id():
    config = _config(tags=False).to_dict()
    config["tag_hint_token_id"] = config["image_token_id"]
    with pytest.raises(MofLlavaConfigError, match="image placeholder id"):
        type(_config(tags=False)).from_dict(config)


def test_built_from_component_checkpoints_the_vector_is_initialised(tiny_parts):
    recipe = llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip))
    recipe.tag_soft_prompt = True
    model, processor = build_model(recipe)
    vector = model.tag_prompt.vector
    assert vector.device.type == "cpu" and torch.isfinite(vector).all() and vector.abs().sum() > 0
    assert processor.tag_hint_token_id == model.config.tag_hint_token_id == TAG_HINT_TOKEN_INDEX


def test_llava_hf_export_refuses_a_model_with_the_soft_prompt():
    # llava-hf has no place for the hint vector: exporting would drop it silently.
    from mof_llava.convert import ConversionError, export_llava_hf

    with pytest.raises(ConversionError, match="no tag soft prompt"):
        export_llava_hf(_model(tags=True), processor=None)
