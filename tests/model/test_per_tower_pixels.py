"""The model's per-tower pixel input: `{tower: tensor}` gives each tower its own pixels (so one
stream alone can be weakened), one tensor still feeds every tower."""

from __future__ import annotations

import pytest
import torch

from mof_llava import MofLlavaForConditionalGeneration


@pytest.fixture(scope="module")
def imof(tiny_model_dirs):
    return MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave")).eval()


def _pixels(seed, n=2, size=56):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_one_tensor_per_tower_equals_the_shared_tensor(imof, one_torch_thread):
    pixels = _pixels(0)
    with torch.no_grad():
        shared = imof.get_image_features(pixels)
        mapped = imof.get_image_features({"clip": pixels, "dinov2": pixels})
    torch.testing.assert_close(mapped, shared, rtol=0, atol=0)


def test_each_tower_reads_its_own_tensor(imof, tower_inputs, one_torch_thread):
    clean, noisy = _pixels(1), _pixels(2)
    with torch.no_grad():
        only_clean = imof.get_image_features(clean)
        only_noisy = imof.get_image_features(noisy)
        seen = tower_inputs(imof)
        mixed = imof.get_image_features({"clip": clean, "dinov2": noisy})
    assert torch.equal(seen["clip"][0], clean) and torch.equal(seen["dinov2"][0], noisy)
    # Interleaved tokens are [c0, d0, c1, d1, ...]: CLIP's half is the clean run's, DINOv2's the noisy run's.
    torch.testing.assert_close(mixed[:, 0::2], only_clean[:, 0::2], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 1::2], only_noisy[:, 1::2], rtol=0, atol=0)
    assert not torch.allclose(mixed[:, 1::2], only_clean[:, 1::2])


def test_forward_takes_per_tower_pixels(imof, tiny_model_dirs, one_torch_thread):
    from mof_llava import MofLlavaProcessor

    processor = MofLlavaProcessor.from_pretrained(tiny_model_dirs("interleave"))
    ids = processor.encode("USER: <image>\nWhat is it? ASSISTANT:").ids
    input_ids = torch.tensor([ids])
    pixels = _pixels(3, n=1)
    with torch.no_grad():
        shared = imof(input_ids=input_ids, pixel_values=pixels).logits
        mapped = imof(input_ids=input_ids, pixel_values={"clip": pixels, "dinov2": pixels}).logits
    torch.testing.assert_close(mapped, shared, rtol=0, atol=0)


@pytest.mark.parametrize(
    "pixels, message",
    [
        ({"clip": _pixels(0)}, r"name the towers \['clip'\], the model uses \['clip', 'dinov2'\]"),
        ({"clip": _pixels(0), "dinov2": _pixels(0, n=1)}, "must share one shape"),
    ],
)
def test_a_mapping_must_fit_the_towers(imof, pixels, message):
    with pytest.raises(ValueError, match=message):
        imof.get_image_features(pixels)
