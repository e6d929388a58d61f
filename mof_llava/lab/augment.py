"""Views of a batch of pictures for tower training, in plain torch (no torchvision).

`random_crops` is a random resized crop done with one affine sampling grid per picture: a square
window covering a random share of the picture's area, at a random place, resized to `out` pixels.
`random_dihedral` flips and turns, for the CLIP only: a flip changes orientation and left/right,
which the self-supervised tower must stay able to see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crops(
    pixels: torch.Tensor, out: int, area: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """[n, 3, H, W] -> [n, 3, out, out]: each picture's own square crop of `area` share, resized."""
    n = pixels.shape[0]
    share = torch.empty(n).uniform_(area[0], area[1], generator=generator)
    scale = share.sqrt()  # side of the window, as a fraction of the picture's side
    # Window centre in [-1 + scale, 1 - scale] (affine_grid's coordinates), so it stays inside.
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter_brightness(pixels: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each picture's (normalised) values by 1 +- amount: light changes, colours stay apart."""
    factor = 1 + (torch.rand(pixels.shape[0], 1, 1, 1, generator=generator) * 2 - 1) * amount
    return pixels * factor


def jitter_colour(pixels: torch.Tensor, grey: float, generator: torch.Generator) -> torch.Tensor:
    """Each picture's colour channels in their own random order, and with probability `grey` all
    three replaced by their mean: two views then match by shape and layout, not by colour (what
    DINO's colour jitter and random grayscale do to photographs)."""
    n = pixels.shape[0]
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)
    out = torch.gather(pixels, 1, order[:, :, None, None].expand_as(pixels))
    greyed = torch.rand(n, generator=generator) < grey
    out[greyed] = out[greyed].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return out


def random_dihedral(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square picture under its own one of the 8 flips and quarter turns: what this destroys
    (orientation, position, left/right) is what a tower trained on it learns to ignore."""
    choice = torch.randint(0, 8, (pixels.shape[0],), generator=generator)
    out = pixels.clone()
    for k in range(8):
        rows = choice == k
        if rows.any():
            view = torch.rot90(pixels[rows], k % 4, dims=(2, 3))
            out[rows] = view.flip(3) if k >= 4 else view
    return out
