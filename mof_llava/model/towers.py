"""Frozen vision towers: a transformers vision encoder plus the feature selection LLaVA-style models use.

A tower never trains: its parameters have `requires_grad=False`, it stays in eval mode even when
the whole model is put in train mode (no dropout, no stochastic depth), and it runs under
`torch.no_grad()`, so no activations are kept for backward.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from .configuration import TowerSpec


class VisionTower(nn.Module):
    def __init__(self, spec: TowerSpec, image_size: int, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]):
        super().__init__()
        self.spec = spec
        self.grid = spec.grid(image_size)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(**spec.vision_config))
        self.requires_grad_(False)
        self.encoder.eval()

        # pixel_values arrive normalised with (pixel_mean, pixel_std); a tower that wants other
        # statistics maps them with x' = x * scale + shift, exact per channel. Kept as Python floats
        # (not buffers) so models built on the meta device and then loaded need no re-initialisation.
        same = tuple(spec.image_mean) == tuple(pixel_mean) and tuple(spec.image_std) == tuple(pixel_std)
        self.renorm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if not same:
            scale = tuple(old / new for old, new in zip(pixel_std, spec.image_std))
            shift = tuple((om - nm) / ns for om, nm, ns in zip(pixel_mean, spec.image_mean, spec.image_std))
            self.renorm = (scale, shift)

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def train(self, mode: bool = True) -> VisionTower:
        # Frozen towers stay in eval mode whatever the surrounding model does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n_images, 3, H, W] -> patch features [n_images, grid_h * grid_w, hidden_size]."""
        if self.renorm is not None:
            scale, shift = (torch.tensor(v, device=pixel_values.device).view(1, 3, 1, 1) for v in self.renorm)
            pixel_values = pixel_values.float() * scale + shift
        pixel_values = pixel_values.to(self.encoder.dtype)
        outputs = self.encoder(pixel_values=pixel_values, output_hidden_states=True)
        features = outputs.hidden_states[self.spec.feature_layer]
        if self.spec.drop_prefix_tokens:
            # Patch tokens come last in every ViT here ([CLS, registers..., patches]).
            features = features[:, -self.num_patches :]
        return features
