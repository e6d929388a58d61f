"""Fixtures for the mining tests: tiny random CLIP (with projection) and DINOv2 checkpoints saved
like hub checkpoints, and folders of generated images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyTowers:
    clip: Path  # CLIPVisionModelWithProjection + CLIP preprocessing
    dinov2: Path  # Dinov2Model + ImageNet preprocessing
    clip_no_projection: Path  # CLIPVisionModel only (no visual_projection weights)
    image_size: int


@pytest.fixture(scope="session")
def tiny_towers(tmp_path_factory) -> TinyTowers:
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
        Dinov2Model,
    )
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config

    root = tmp_path_factory.mktemp("mining_towers")
    size = 56
    torch.manual_seed(0)
    clip_config = tiny_clip_vision_config(size, 32)
    clip_config.projection_dim = 24  # differs from the hidden size, so the projection is visible
    CLIPVisionModelWithProjection(clip_config).save_pretrained(root / "clip")
    CLIPVisionModel(tiny_clip_vision_config(size, 32)).save_pretrained(root / "clip_plain")
    clip_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    clip_processor.save_pretrained(root / "clip")
    clip_processor.save_pretrained(root / "clip_plain")
    Dinov2Model(tiny_dinov2_config(size, 40)).save_pretrained(root / "dinov2")
    CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    ).save_pretrained(root / "dinov2")
    return TinyTowers(root / "clip", root / "dinov2", root / "clip_plain", size)
