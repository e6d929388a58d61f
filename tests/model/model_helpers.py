"""Small builders shared by the model tests (configs only; weights are random)."""

from __future__ import annotations

from mof_llava.model.configuration import MofLlavaConfig, TowerSpec
from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config, tiny_llama_config

IMAGE_SIZE = 56  # 4 x 4 patches of 14 px


def clip_tower(name="clip", hidden_size=32, image_size=IMAGE_SIZE) -> TowerSpec:
    return TowerSpec(name, tiny_clip_vision_config(image_size, hidden_size).to_dict(), feature_layer=-2)


def dino_tower(name="dinov2", hidden_size=32, image_size=IMAGE_SIZE, patch_size=14) -> TowerSpec:
    config = tiny_dinov2_config(image_size, hidden_size)
    config.patch_size = patch_size
    return TowerSpec(name, config.to_dict(), feature_layer=-1)


def make_config(towers, mixer=None, vocab_size=520, image_size=IMAGE_SIZE, image_token_id=512) -> MofLlavaConfig:
    return MofLlavaConfig(
        text_config=tiny_llama_config(vocab_size).to_dict(),
        vision_towers=list(towers),
        mixer=mixer or {},
        image_size=image_size,
        image_token_id=image_token_id,
    )
