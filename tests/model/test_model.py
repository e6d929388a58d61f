"""Model behaviour: placeholders and labels, text-only batches, generation, save/load, other LLMs."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template


@pytest.fixture(scope="module")
def imof(tiny_model_dirs):
    path = tiny_model_dirs("interleave")
    return MofLlavaForConditionalGeneration.from_pretrained(path).eval(), MofLlavaProcessor.from_pretrained(path)


def _images():
    # Different sizes and aspect ratios: padding to square must not depend on the batch.
    return [
        Image.new("RGB", (80, 50), (200, 30, 30)),
        Image.new("RGB", (30, 90), (20, 180, 40)),
        Image.new("RGB", (64, 64), (10, 20, 220)),
    ]


def _prompts():
    template = get_template("vicuna_v1")
    questions = ["What colour is it?", "Describe the picture in a few words please.", "Is it blue?"]
    return [template.generation_prompt("<image>\n" + q) for q in questions]


def test_labels_are_ignored_on_every_visual_position(imof):
    model, processor = imof
    inputs = processor(text=_prompts()[:1], images=_images()[:1])
    input_ids = inputs["input_ids"]
    placeholders = input_ids == processor.image_token_id
    assert int(placeholders.sum()) == 32
    labels = input_ids.clone()  # naive labels that include the placeholder ids
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    masked = labels.masked_fill(placeholders, IGNORE_INDEX)
    expected = F.cross_entropy(out.logits[0, :-1], masked[0, 1:], ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, expected)
    assert masked[0, 1:].ne(IGNORE_INDEX).sum() == labels.numel() - 1 - 32


def test_placeholder_count_mismatch_is_a_clear_error(imof):
    model, processor = imof
    inputs = processor(text=_prompts()[:1], images=_images()[:1])
    ids = inputs["input_ids"]
    first = int((ids[0] == processor.image_token_id).nonzero()[0])
    ids = torch.cat([ids[:, :first], ids[:, first + 1 :]], dim=1)  # drop one placeholder
    with pytest.raises(ValueError, match="31 image placeholders but 1 image.* 1 x 32 = 32 visual tokens"):
        model(input_ids=ids, pixel_values=inputs["pixel_values"])


def test_text_only_training_batch_still_runs_towers_and_adapters(imof):
    model, processor = imof
    model.train()
    try:
        batch = processor(text=["USER: hello ASSISTANT: hi</s>"], padding_side="right")
        out = model(**batch, labels=batch["input_ids"])
        out.loss.backward()
        for name, param in model.mixer.named_parameters():
            assert param.grad is not None, f"{name} got no gradient in a text-only step"
            assert torch.count_nonzero(param.grad) == 0
        assert all(p.grad is None for p in model.vision_towers.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_batched_left_padded_generation_equals_one_by_one(imof):
    model, processor = imof
    prompts, images = _prompts(), _images()
    batch = processor(text=prompts, images=images)
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 1  # some rows are left-padded
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    batched = out[:, batch["input_ids"].shape[1]:]
    for i in range(3):
        single = processor(text=[prompts[i]], images=[images[i]])
        one = model.generate(**single, max_new_tokens=8, do_sample=False)[:, single["input_ids"].shape[1]:]
        assert one[0].tolist() == batched[i, : one.shape[1]].tolist()


def test_generation_with_kv_cache_equals_without(imof):
    model, processor = imof
    inputs = processor(text=_prompts()[:2], images=_images()[:2])
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_save_and_load_round_trip(imof, tmp_path):
    model, processor = imof
    inputs = processor(text=_prompts()[:2], images=_images()[:2])
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, MofLlavaForConditionalGeneration) and isinstance(reprocessor, MofLlavaProcessor)
    again = reprocessor(text=_prompts()[:2], images=_images()[:2])
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(again["pixel_values"], inputs["pixel_values"])
    with torch.no_grad():
        assert torch.equal(reloaded(**again).logits, before)


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_causal_lms(family, tiny_parts, tmp_path):
    """Any transformers causal LM works as the language model, tied embeddings included (Qwen2)."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from mof_llava import build_model
    from mof_llava.model.builder import mof_recipe
    from mof_llava.testing.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    # Real Qwen/Mistral vocabularies are padded past the tokenizer's last id; Qwen2's tokenizer class
    # also adds its own pad token when it loads.
    common = dict(vocab_size=len(tokenizer) + 8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    if family == "qwen2":
        llm = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    else:
        llm = MistralForCausalLM(MistralConfig(**common, sliding_window=None))
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    torch.manual_seed(0)
    model, processor = build_model(mof_recipe(str(tmp_path / "llm"), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    model.eval()
    if family == "qwen2":
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    inputs = processor(text=_prompts()[:2], images=_images()[:2])
    with torch.no_grad():
        logits = model(**inputs).logits
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)
    model.save_pretrained(tmp_path / "mof")
    reloaded = MofLlavaForConditionalGeneration.from_pretrained(tmp_path / "mof").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, logits)
    if family == "qwen2":
        assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight


def test_forward_and_generate_use_the_current_cache_api(imof):
    """No transformers deprecation warnings on the way (pyproject ignores FutureWarning; not here):
    the KV cache is `cache`, not `past_key_values` (removed in transformers 5.40)."""
    import warnings

    model, processor = imof
    inputs = processor(text=_prompts()[:2], images=_images()[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        with torch.no_grad():
            first = model(**inputs, use_cache=True)
            step = model(input_ids=inputs["input_ids"][:, -1:], attention_mask=torch.cat(
                [inputs["attention_mask"], inputs["attention_mask"][:, -1:]], dim=1), cache=first.cache)
        model.generate(**inputs, max_new_tokens=3, do_sample=False, use_cache=True)
    assert step.logits.shape[:2] == (2, 1)
    with pytest.warns(FutureWarning, match="past_key_values` is deprecated"):
        model(**inputs, past_key_values=None)
