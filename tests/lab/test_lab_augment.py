"""Lab augmentations: the CLIP's flips and quarter turns are exactly the square's 8 symmetries; the
SSL tower's colour jitter is a channel permutation or a grey picture, never anything else."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from mof_llava.lab.augment import jitter_colour, random_dihedral


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


def test_colour_jitter_permutes_each_pictures_channels_or_greys_it():
    pixels = torch.rand(200, 3, 4, 4)
    kept = pixels.clone()
    out = jitter_colour(pixels, 0.2, torch.Generator().manual_seed(0))
    orders, greys = set(), 0
    for before, after in zip(pixels.numpy(), out.numpy()):
        grey = np.repeat(before.mean(0, keepdims=True), 3, axis=0)
        if np.allclose(after, grey):
            greys += 1
            continue
        matches = [o for o in itertools.permutations(range(3)) if np.array_equal(before[list(o)], after)]
        assert len(matches) == 1
        orders.add(matches[0])
    assert orders == set(itertools.permutations(range(3)))  # all six orders occur
    assert 20 <= greys <= 60  # about a fifth of 200 (binomial sd ~6)
    assert torch.equal(pixels, kept)
    assert torch.equal(out, jitter_colour(pixels, 0.2, torch.Generator().manual_seed(0)))
