"""The processor: LLaVA's chunked tokenisation, placeholder expansion, padding, and LLaVA-1.5's images."""

import numpy as np
import pytest
import torch
from PIL import Image

from mof_llava import MofLlavaProcessor
from mof_llava.conversation import get_template
from mof_llava.testing.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def processor(tiny_model_dirs):
    return MofLlavaProcessor.from_pretrained(tiny_model_dirs("interleave"))


def _llava_tokenizer_image_token(tokenizer, prompt, image_id, n):
    """LLaVA's tokenizer_image_token, restated: tokenise each chunk with BOS, keep BOS once, and put
    the image placeholder(s) between chunks."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += [image_id] * n + chunk[1:]  # drop the BOS of later chunks
    return ids


def test_tokenisation_matches_llava_chunked_tokenisation(processor):
    prompt = get_template("vicuna_v1").generation_prompt("<image>\nWhat is the colour of the shape?")
    expected = _llava_tokenizer_image_token(processor.tokenizer, prompt, processor.image_token_id, 32)
    assert processor.encode(prompt).ids == expected
    # the chunk after the image starts with SentencePiece's lone "▁" before "\n", as with Vicuna
    tokens = processor.tokenizer.convert_ids_to_tokens(expected[expected.index(512) + 32 : expected.index(512) + 34])
    assert tokens == ["▁", "<0x0A>"]


def test_offsets_point_back_into_the_text(processor):
    text = "USER: <image>\nWhat? ASSISTANT: red</s>"
    enc = processor.encode(text)
    assert len(enc.ids) == len(enc.offsets)
    assert enc.offsets[0] == (0, 0)  # BOS
    marker = (text.index("<image>"), text.index("<image>") + len("<image>"))
    assert [o for i, o in zip(enc.ids, enc.offsets) if i == processor.image_token_id] == [marker] * 32
    red = [i for i, (a, b) in enumerate(enc.offsets) if "red" in text[a:b]]
    assert red and processor.tokenizer.decode([enc.ids[i] for i in red]).strip() == "red"


def test_marker_and_image_counts_must_agree(processor):
    with pytest.raises(ValueError, match="1 <image> markers but 0 images"):
        processor(text=["<image>\nhi"])
    with pytest.raises(ValueError, match="0 <image> markers but 1 images"):
        processor(text=["hi"], images=[Image.new("RGB", (4, 4))])


def test_left_and_right_padding(processor):
    left = processor(text=["a", "a much longer prompt"])
    right = processor(text=["a", "a much longer prompt"], padding_side="right")
    pad = processor.pad_token_id
    assert pad == processor.tokenizer.unk_token_id  # no pad token: <unk>, as LLaVA-1.5 pads Vicuna
    assert left["attention_mask"][0, 0] == 0 and left["input_ids"][0, 0] == pad
    assert right["attention_mask"][0, -1] == 0 and right["input_ids"][0, -1] == pad
    assert left["attention_mask"].sum() == right["attention_mask"].sum()


def test_pad_id_is_the_tokenizers_pad_or_else_unk(processor):
    """One rule for every padder (collator, generation, the trainer's placeholder batch)."""
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token is None and processor.pad_token_id == tokenizer.unk_token_id == 0  # like Vicuna
    with_pad = MofLlavaProcessor(
        processor.image_processor, build_tiny_tokenizer(), num_image_tokens=32, image_token_id=processor.image_token_id
    )
    with_pad.tokenizer.add_special_tokens({"pad_token": "<pad>"})
    assert with_pad.pad_token_id == with_pad.tokenizer.convert_tokens_to_ids("<pad>") != 0
    with_pad.tokenizer.unk_token, with_pad.tokenizer.pad_token = None, None
    with pytest.raises(ValueError, match="neither a pad nor an unk"):
        _ = with_pad.pad_token_id


def _unnormalise(pixels, processor):
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1, 1)
    return ((pixels * std + mean) * 255).round()


def test_pad_to_square_uses_clip_mean_colour(processor):
    # A wide red image: LLaVA-1.5 centres it on a square filled with (122, 116, 104).
    image = Image.new("RGB", (112, 28), (255, 0, 0))
    pixels = processor.preprocess_images([image], image_aspect_ratio="pad")
    assert pixels.shape == (1, 3, 56, 56)
    rgb = _unnormalise(pixels[0], processor)
    assert rgb[:, 0, 28].tolist() == [122, 116, 104]  # top band is padding
    assert rgb[:, 28, 28].tolist() == [255, 0, 0]  # centre is the picture


def test_crop_mode_resizes_and_centre_crops(processor):
    image = Image.new("RGB", (112, 28), (255, 0, 0))
    rgb = _unnormalise(processor.preprocess_images([image], image_aspect_ratio="crop")[0], processor)
    assert np.all(rgb[0].numpy() == 255) and np.all(rgb[1].numpy() == 0)  # only red, no padding
