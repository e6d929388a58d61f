"""Towers give LLaVA's CLIP features (layer -2, CLS dropped) and the paper's DINOv2 features (last block
before the final LayerNorm, prefix tokens dropped), checked against block-by-block runs of the encoders."""

import torch
from model_helpers import IMAGE_SIZE, clip_tower, dino_tower

from mof_llava.model.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TowerSpec
from mof_llava.model.towers import VisionTower

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _tower(spec: TowerSpec) -> VisionTower:
    torch.manual_seed(0)
    return VisionTower(spec, IMAGE_SIZE, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def test_clip_features_are_second_to_last_block_without_cls():
    tower = _tower(clip_tower())
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    encoder = tower.encoder
    with torch.no_grad():
        hidden = encoder.pre_layrnorm(encoder.embeddings(pixels))
        for layer in encoder.encoder.layers[:-1]:  # all blocks but the last
            hidden = layer(hidden, None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    expected = hidden[:, 1:]
    features = tower(pixels)
    assert features.shape == (2, 16, 32)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_dinov2_features_are_last_block_before_final_layernorm():
    tower = _tower(dino_tower())
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    encoder = tower.encoder
    with torch.no_grad():
        hidden = encoder.embeddings(pixels)
        for layer in encoder.encoder.layer:
            hidden = layer(hidden)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        post_norm = encoder.layernorm(hidden)
    features = tower(pixels)
    torch.testing.assert_close(features, hidden[:, 1:], rtol=0, atol=1e-6)
    assert not torch.allclose(features, post_norm[:, 1:], atol=1e-3)  # not the normalised output


def test_own_normalisation_equals_feeding_imagenet_normalised_pixels():
    spec = dino_tower()
    own = TowerSpec(**{**spec.__dict__, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD})
    tower = _tower(own)
    raw = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)  # the image in [0, 1]
    clip_norm = (raw - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tower.encoder(pixel_values=imagenet, output_hidden_states=True).hidden_states[-1][:, 1:]
    torch.testing.assert_close(tower(clip_norm), expected, rtol=0, atol=1e-5)
    shared = _tower(spec)  # the paper preset: DINOv2 sees the CLIP-normalised tensor as is
    assert shared.renorm is None


def test_towers_are_frozen_stay_in_eval_and_keep_no_graph():
    tower = _tower(clip_tower())
    wrapper = torch.nn.Sequential(tower)
    wrapper.train()
    assert not tower.training and not tower.encoder.training
    assert all(not p.requires_grad for p in tower.parameters())
    out = tower(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True))
    assert out.grad_fn is None and not out.requires_grad
