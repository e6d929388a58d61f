"""Image weakening for BPO's image-side negatives: forward diffusion noise with BPO's schedule, blur,
patch masking and cropping; seeded per sample, and able to corrupt one vision tower's input alone.

Every corruption works on the processor's `pixel_values` (the CLIP-normalised tensor the model gets):
BPO adds its noise to the already normalised tensor, so the noise here does the same. A tower whose
normalisation is `own` re-normalises its input affinely (model/towers.py), so it sees the same
corrupted image, with the same noise draw, through its own statistics.

MoF-aware targets: the model feeds one tensor to every tower, so corrupting one stream means one
pixel tensor per tower. `tower_pixels` returns that mapping ({"clip": clean, "dinov2": noisy} for
`target="dinov2"`), which the model takes as its `pixel_values` (modeling.py `tower_input`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# BPO's schedule (image_weakening_utils/add_noise.py, as in VCD): sigmoid betas over 1000 steps.
NUM_STEPS = 1000
BETA_START, BETA_END = 1e-5, 5e-3
DEFAULT_NOISE_STEP = 900  # BPO's run_llava_image_weakening.py default (VCD's is 500)
BOTH = "both"


def sample_generator(seed: int, sample_id: str) -> torch.Generator:
    """A CPU generator seeded from (seed, sample id) with a stable hash, so a sample's corruption is
    the same in every process, run and data order."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def bpo_alphas_cumprod(steps: int = NUM_STEPS) -> torch.Tensor:
    """ᾱ_t = prod_{s<=t} (1 - β_s), β = sigmoid(linspace(-6, 6, steps)) * (end - start) + start (float64)."""
    betas = (
        torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64)) * (BETA_END - BETA_START)
        + BETA_START
    )
    return torch.cumprod(1 - betas, dim=0)


def _on_images(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.dim() not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError(f"expected pixel values [3, H, W] or [N, 3, H, W], got shape {tuple(pixels.shape)}")
    return pixels if pixels.dim() == 4 else pixels.unsqueeze(0)


@dataclass(frozen=True)
class DiffusionNoise:
    """x_t = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε, ε ~ N(0, 1), with t indexing BPO's schedule from 0."""

    t: int = DEFAULT_NOISE_STEP
    steps: int = NUM_STEPS

    def __post_init__(self):
        if not 0 <= self.t < self.steps:
            raise ValueError(f"noise step t must lie in [0, {self.steps}), got {self.t}")

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        alpha_bar = float(bpo_alphas_cumprod(self.steps)[self.t])
        noise = torch.randn(pixels.shape, generator=generator, dtype=torch.float32).to(pixels)
        return math.sqrt(alpha_bar) * pixels + math.sqrt(1 - alpha_bar) * noise


@dataclass(frozen=True)
class GaussianBlur:
    """A separable Gaussian blur (reflect-padded); deterministic, the generator is unused."""

    sigma: float = 4.0

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        radius = max(1, math.ceil(3 * self.sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * self.sigma**2))
        kernel = (kernel / kernel.sum()).to(pixels)
        images = _on_images(pixels)
        out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
        out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        return out.reshape(pixels.shape)


@dataclass(frozen=True)
class PatchMask:
    """Sets a random `ratio` of the `patch`-pixel grid cells to 0, the mean colour in normalised space."""

    patch: int = 14
    ratio: float = 0.5

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = _on_images(pixels)
        n, _, h, w = images.shape
        rows, cols = math.ceil(h / self.patch), math.ceil(w / self.patch)
        scores = torch.rand(n, rows * cols, generator=generator)
        masked = scores.argsort(dim=1)[:, : round(self.ratio * rows * cols)]
        keep = torch.ones(n, rows * cols).scatter_(1, masked, 0.0).view(n, 1, rows, cols)
        keep = keep.repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)[..., :h, :w]
        return (images * keep.to(images)).reshape(pixels.shape)


@dataclass(frozen=True)
class RandomCrop:
    """Keeps a random window of `scale` of the side (same aspect) and resizes it back (bilinear)."""

    scale: float = 0.5

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = _on_images(pixels)
        h, w = images.shape[-2:]
        ch, cw = max(1, round(h * self.scale)), max(1, round(w * self.scale))
        out = []
        for image in images:  # one window per image
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            window = image[None, :, top : top + ch, left : left + cw]
            out.append(F.interpolate(window, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(out).reshape(pixels.shape)


Corruption = DiffusionNoise | GaussianBlur | PatchMask | RandomCrop


def tower_pixels(
    pixels: torch.Tensor,
    corruption: Corruption,
    generator: torch.Generator,
    towers: list[str],
    target: str = BOTH,
) -> dict[str, torch.Tensor]:
    """One pixel tensor per tower: the corrupted one for `target` ("both" or a tower's name), the clean
    one for the others. One corruption is drawn and shared by every targeted tower."""
    if target != BOTH and target not in towers:
        raise ValueError(f"weakening target must be {BOTH!r} or one of the towers {towers}, got {target!r}")
    weakened = corruption(pixels, generator)
    return {name: weakened if target in (BOTH, name) else pixels for name in towers}
