"""Lab augmentations: the CLIP's flips and quarter turns are exactly the square's 8 symmetries."""

from __future__ import annotations

import numpy as np
import torch

from mof_llava.lab.augment import random_dihedral


def _symmetries(picture: np.ndarray) -> list[np.ndarray]:
    """The 8 images of a [C, H, W] picture under rotations and mirrorings, written with numpy."""
    turns = [np.rot90(picture, k, axes=(1, 2)) for k in range(4)]
    return turns + [t[:, :, ::-1] for t in turns]


def test_each_picture_becomes_one_of_its_eight_symmetries_and_all_eight_occur():
    pixels = torch.rand(64, 3, 5, 5)
    kept = pixels.clone()
    out = random_dihedral(pixels, torch.Generator().manual_seed(0))
    seen = set()
    for before, after in zip(pixels.numpy(), out.numpy()):
        matches = [k for k, s in enumerate(_symmetries(before)) if np.array_equal(s, after)]
        assert len(matches) == 1  # a random picture has no symmetry of its own
        seen.add(matches[0])
    assert seen == set(range(8))
    assert torch.equal(pixels, kept)  # the input is not changed in place
    again = random_dihedral(pixels, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # a function of the generator's seed
