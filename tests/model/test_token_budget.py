"""Token-budget-matched I-MoF (mixer.grid + mixer.resample avgpool): each tower's grid is average-pooled
to the mixing grid, the model's num_visual_tokens says how many tokens result, and the processor
writes that many placeholders."""

import numpy as np
import pytest
import torch
from model_helpers import clip_tower, dino_tower, make_config
from PIL import Image

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.model.configuration import MixerSpec, MofLlavaConfigError
from mof_llava.testing.tiny import build_tiny_tokenizer

POOLED = {"mode": "interleave", "grid": [2, 4], "resample": "avgpool"}  # 4 x 4 -> 2 x 4 per tower


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _model(mixer):
    torch.manual_seed(0)
    return MofLlavaForConditionalGeneration(make_config([clip_tower(), dino_tower()], mixer)).eval()


def _adaptive_pool_by_hand(features: torch.Tensor, source, target) -> torch.Tensor:
    """Adaptive average pooling restated: output cell (i, j) averages input rows
    floor(i*H/h) .. ceil((i+1)*H/h) - 1 and the same for columns."""
    n, _, width = features.shape
    grid = features.reshape(n, *source, width)
    out = torch.empty(n, *target, width)
    for i in range(target[0]):
        r0, r1 = (i * source[0]) // target[0], -(-((i + 1) * source[0]) // target[0])
        for j in range(target[1]):
            c0, c1 = (j * source[1]) // target[1], -(-((j + 1) * source[1]) // target[1])
            out[:, i, j] = grid[:, r0:r1, c0:c1].mean(dim=(1, 2))
    return out.reshape(n, target[0] * target[1], width)


def test_half_the_grid_per_tower_matches_the_single_tower_budget():
    model = _model(POOLED)
    baseline = make_config([clip_tower()], {"mode": "none"})
    assert model.config.num_image_tokens == model.mixer.num_visual_tokens == baseline.num_image_tokens == 16
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        tokens = model.get_image_features(pixels)
        streams = [
            model.mixer.adapters[name](
                _adaptive_pool_by_hand(model.vision_towers[name](pixels), (4, 4), (2, 4))
            )
            for name in ("clip", "dinov2")
        ]
    assert tokens.shape == (2, 16, 64)
    torch.testing.assert_close(tokens[:, 0::2], streams[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens[:, 1::2], streams[1], rtol=0, atol=1e-6)


def test_avgpool_covers_every_patch_on_uneven_windows_where_bilinear_does_not():
    model = _model({"mode": "interleave", "grid": [3, 3], "resample": "avgpool"})
    features = torch.randn(1, 16, 32)
    pooled = model.mixer._to_grid("clip", features)
    torch.testing.assert_close(pooled, _adaptive_pool_by_hand(features, (4, 4), (3, 3)), rtol=0, atol=1e-6)
    bilinear = _model({"mode": "interleave", "grid": [3, 3]}).mixer._to_grid("clip", features)
    assert not torch.allclose(bilinear, pooled)


def test_the_processor_writes_num_visual_tokens_placeholders():
    config = make_config([clip_tower(), dino_tower()], POOLED)
    processor = MofLlavaProcessor.for_config(config, build_tiny_tokenizer())
    image = Image.fromarray(np.full((40, 56, 3), 90, dtype=np.uint8))
    batch = processor(text=["<image>\nWhat is it?"], images=[image], return_tensors="pt")
    assert int((batch["input_ids"] == config.image_token_id).sum()) == config.num_image_tokens == 16
    model = _model(POOLED)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    assert out.logits.shape[1] == batch["input_ids"].shape[1]


def test_resample_is_saved_only_when_not_the_default_and_unknown_values_are_refused():
    assert "resample" not in MixerSpec(mode="interleave").to_dict()
    assert (
        MixerSpec.from_dict(MixerSpec(mode="interleave", resample="avgpool").to_dict()).resample == "avgpool"
    )
    with pytest.raises(MofLlavaConfigError, match="unknown mixer.resample 'nearest'"):
        make_config([clip_tower(), dino_tower()], {"mode": "interleave", "resample": "nearest"})
