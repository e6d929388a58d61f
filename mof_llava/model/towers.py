"""Frozen vision towers: a transformers vision encoder plus the feature selection LLaVA-style models use.

A tower never trains: its parameters have `requires_grad=False`, it stays in eval mode even when
the whole model is put in train mode (no dropout, no stochastic depth), and it runs under
`torch.no_grad()`, so no activations are kept for backward.

A DINOv2 tower with `pos_interpolation="hub"` resizes its position table as torch.hub's DINOv2 does
(the paper's features): the encoder stays transformers' model, only its embeddings'
`interpolate_pos_encoding` is replaced by `hub_interpolate_pos_encoding`.
"""

from __future__ import annotations

import math
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from .configuration import TowerSpec

# torch.hub DINOv2's `interpolate_offset`: added to the target grid before taking the scale factor.
HUB_INTERPOLATE_OFFSET = 0.1


class VisionTower(nn.Module):
    def __init__(self, spec: TowerSpec, image_size: int, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]):
        super().__init__()
        self.spec = spec
        self.grid = spec.grid(image_size)
        self.attach_encoder(AutoModel.from_config(AutoConfig.for_model(**spec.vision_config)))

        # pixel_values arrive normalised with (pixel_mean, pixel_std); a tower that wants other
        # statistics maps them with x' = x * scale + shift, exact per channel. Kept as Python floats
        # (not buffers) so models built on the meta device and then loaded need no re-initialisation.
        same = tuple(spec.image_mean) == tuple(pixel_mean) and tuple(spec.image_std) == tuple(pixel_std)
        self.renorm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if not same:
            scale = tuple(old / new for old, new in zip(pixel_std, spec.image_std))
            shift = tuple((om - nm) / ns for om, nm, ns in zip(pixel_mean, spec.image_mean, spec.image_std))
            self.renorm = (scale, shift)

    def attach_encoder(self, encoder: nn.Module) -> None:
        """Use `encoder` (e.g. one loaded with `from_pretrained`), frozen, with this spec's position resize."""
        if self.spec.pos_interpolation == "hub":
            encoder.embeddings.interpolate_pos_encoding = MethodType(hub_interpolate_pos_encoding, encoder.embeddings)
        self.encoder = encoder
        self.requires_grad_(False)
        self.encoder.eval()

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def train(self, mode: bool = True) -> VisionTower:
        # Frozen towers stay in eval mode whatever the surrounding model does.
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n_images, 3, H, W] -> patch features [n_images, grid_h * grid_w, hidden_size]."""
        return self.hidden_states(pixel_values, (self.spec.feature_layer,))[0]

    @torch.no_grad()
    def hidden_states(self, pixel_values: torch.Tensor, layers: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """The encoder's `hidden_states[i]` for each i of `layers` (one forward pass), each taken as
        `forward`'s features are (prefix tokens dropped when the spec says so)."""
        if self.renorm is not None:
            scale, shift = (torch.tensor(v, device=pixel_values.device).view(1, 3, 1, 1) for v in self.renorm)
            pixel_values = pixel_values.float() * scale + shift
        pixel_values = pixel_values.to(self.encoder.dtype)
        outputs = self.encoder(pixel_values=pixel_values, output_hidden_states=True)
        selected = tuple(outputs.hidden_states[i] for i in layers)
        if self.spec.drop_prefix_tokens:
            # Patch tokens come last in every ViT here ([CLS, registers..., patches]).
            selected = tuple(features[:, -self.num_patches :] for features in selected)
        return selected


def hub_interpolate_pos_encoding(self: nn.Module, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Position table for a `height` x `width` image, resized as torch.hub DINOv2 does it.

    Bound on a transformers DINOv2 embeddings module in place of its own method. The stored table is
    an M x M grid (M = sqrt of its patch positions); it is resized by the scale factor
    ((rows + 0.1) / M, (cols + 0.1) / M), bicubic, without antialiasing, in float32. Resizing by a
    scale factor rather than to the target size moves the sampling points: at 336 px from the
    518 px checkpoints (37 -> 24) the result differs from transformers' `size=(24, 24)` resize.
    """
    table = self.position_embeddings
    num_positions = table.shape[1] - 1
    if embeddings.shape[1] - 1 == num_positions and height == width:
        return table  # the stored grid already fits
    patch_h, patch_w = self.patch_embeddings.patch_size
    rows, cols = height // patch_h, width // patch_w
    side = math.isqrt(num_positions)
    grid = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = ((rows + HUB_INTERPOLATE_OFFSET) / side, (cols + HUB_INTERPOLATE_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != (rows, cols):  # the hub asserts the same
        raise ValueError(f"position table resized to {tuple(grid.shape[-2:])}, expected the patch grid {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(table.dtype)
    return torch.cat((table[:, :1], grid), dim=1)
