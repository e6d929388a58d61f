"""Image weakening: BPO's noise schedule against its closed form, determinism, and per-tower targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mof_llava.preference.weakening import (
    DiffusionNoise,
    GaussianBlur,
    PatchMask,
    RandomCrop,
    bpo_alphas_cumprod,
    sample_generator,
    tower_pixels,
)

torch.set_num_threads(1)


def _closed_form_alpha_bar(steps=1000, start=1e-5, end=5e-3):
    # Written from the formula in the BPO/VCD noise code: beta = sigmoid(linspace(-6, 6, T)) * (end - start) + start.
    x = np.linspace(-6, 6, steps)
    betas = 1 / (1 + np.exp(-x)) * (end - start) + start
    return np.cumprod(1 - betas)


def _image(seed=0, size=32):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 4 - 2


def test_schedule_equals_the_closed_form():
    np.testing.assert_allclose(bpo_alphas_cumprod().numpy(), _closed_form_alpha_bar(), rtol=1e-12)
    # The values docs/extensions-lion-bpo.md quotes: sqrt(alpha_bar) = 0.863 at t=500, 0.365 at t=900.
    alpha_bar = _closed_form_alpha_bar()
    assert math.sqrt(alpha_bar[500]) == pytest.approx(0.863, abs=5e-4)
    assert math.sqrt(alpha_bar[900]) == pytest.approx(0.365, abs=5e-4)


def test_noise_is_the_forward_diffusion_formula():
    x, t = _image(), 900
    noisy = DiffusionNoise(t)(x, sample_generator(3, "img-1"))
    eps = torch.randn(x.shape, generator=sample_generator(3, "img-1"))
    a = _closed_form_alpha_bar()[t]
    torch.testing.assert_close(noisy, math.sqrt(a) * x + math.sqrt(1 - a) * eps, rtol=0, atol=1e-6)
    assert DiffusionNoise().t == 900  # BPO's default step


def test_corruptions_are_deterministic_per_seed_and_sample():
    x = _image()
    for corruption in (DiffusionNoise(), PatchMask(patch=4), RandomCrop(0.5)):
        first = corruption(x, sample_generator(0, "a"))
        assert torch.equal(first, corruption(x, sample_generator(0, "a")))
        assert not torch.equal(first, corruption(x, sample_generator(0, "b")))
        assert not torch.equal(first, corruption(x, sample_generator(1, "a")))


def test_step_zero_leaves_the_image_almost_unchanged_and_noise_grows_with_t():
    x = _image(size=64)
    assert (DiffusionNoise(0)(x, sample_generator(0, "a")) - x).abs().max() < 0.03
    errors = [
        float((DiffusionNoise(t)(x, sample_generator(0, "a")) - x).pow(2).mean()) for t in range(0, 1000, 50)
    ]
    assert all(a < b for a, b in zip(errors, errors[1:]))
    with pytest.raises(ValueError, match=r"noise step t must lie in \[0, 1000\)"):
        DiffusionNoise(1000)


def test_blur_keeps_flat_images_and_smooths_noise():
    flat = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(GaussianBlur(2.0)(flat), flat)
    noise = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = GaussianBlur(2.0)(noise)
    assert blurred.shape == noise.shape and blurred.std() < 0.5 * noise.std()


def test_patch_mask_zeroes_the_requested_share_of_cells():
    x = torch.ones(2, 3, 16, 16)
    out = PatchMask(patch=4, ratio=0.25)(x, sample_generator(0, "a"))
    cells = out[:, 0].unfold(1, 4, 4).unfold(2, 4, 4)  # [N, 4, 4, 4, 4]: the 16 cells of each image
    per_cell = cells.reshape(2, 16, 16).amax(dim=2)
    assert per_cell.eq(0).sum(dim=1).tolist() == [4, 4]  # 25% of 16 cells, whole cells, all channels
    assert torch.equal(out[:, 0], out[:, 2])


def test_crop_is_an_upscaled_window():
    x = _image()
    assert torch.allclose(RandomCrop(1.0)(x, sample_generator(0, "a")), x)
    # A linear ramp stays a ramp under bilinear resizing; the crop's slope is 1/scale of the original.
    ramp = torch.arange(32.0).view(1, 1, 32).expand(3, 32, 32)
    out = RandomCrop(0.5)(ramp, sample_generator(0, "a"))
    inner = out[0, 0, 2:-2].diff()
    torch.testing.assert_close(inner, torch.full_like(inner, 0.5))


def test_tower_targets_corrupt_one_stream_alone():
    x = _image()
    towers = ["clip", "dinov2"]
    only_dino = tower_pixels(x, DiffusionNoise(), sample_generator(0, "a"), towers, target="dinov2")
    assert torch.equal(only_dino["clip"], x) and not torch.equal(only_dino["dinov2"], x)
    both = tower_pixels(x, DiffusionNoise(), sample_generator(0, "a"), towers, target="both")
    assert torch.equal(both["clip"], both["dinov2"]) and torch.equal(both["dinov2"], only_dino["dinov2"])
    with pytest.raises(ValueError, match="one of the towers"):
        tower_pixels(x, DiffusionNoise(), sample_generator(0, "a"), towers, target="siglip")
