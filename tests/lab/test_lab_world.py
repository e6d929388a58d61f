"""The lab's world: deterministic, and its metadata matches the pixels it draws."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mof_llava.lab import world
from mof_llava.scenes.drawing import SHAPE_COLOURS


def _blobs(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an array of (row, col) pixels."""
    seen = np.zeros_like(mask)
    blobs = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    queue.append((nr, nc))
        blobs.append(np.array(pixels))
    return blobs


def _colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(pixels == np.array(SHAPE_COLOURS[colour]), axis=-1)


def test_scenes_are_a_function_of_the_seed():
    a = [world.random_scene(world.scene_rng(3, "train", i)) for i in range(20)]
    b = [world.random_scene(world.scene_rng(3, "train", i)) for i in range(20)]
    c = [world.random_scene(world.scene_rng(4, "train", i)) for i in range(20)]
    assert a == b
    assert all(np.array_equal(x.pixels(), y.pixels()) for x, y in zip(a, b))
    assert sum(x == y for x, y in zip(a, c)) == 0
    assert a[0].pixels().shape == (world.SIZE, world.SIZE, 3)


def test_count_is_the_number_of_blobs_of_the_main_colour():
    counts = set()
    for i in range(60):
        scene = world.random_scene(world.scene_rng(0, "probe", i))
        mask = _colour_mask(scene.pixels(), scene.main[0].colour)
        assert len(_blobs(mask)) == scene.count == world.labels(scene)["count"] + 1, scene
        counts.add(scene.count)
    assert counts == {1, 2, 3}


@pytest.mark.parametrize("index", range(12))
def test_relation_pairs_swap_which_object_is_left_by_pixel_centroid(index):
    first, second = world.attribute_pair(world.scene_rng(1, "pairs", index), "relation")
    for scene in (first, second):
        pixels = scene.pixels()
        main_x = np.nonzero(_colour_mask(pixels, scene.main[0].colour))[1].mean()
        other_x = np.nonzero(_colour_mask(pixels, scene.companion.colour))[1].mean()
        assert world.labels(scene)["relation"] == int(main_x < other_x)
    assert world.labels(first)["relation"] != world.labels(second)["relation"]


@pytest.mark.parametrize("index", range(12))
def test_position_label_is_the_half_holding_the_pixels(index):
    first, second = world.attribute_pair(world.scene_rng(2, "pairs", index), "position")
    for scene in (first, second):
        cols = np.nonzero(_colour_mask(scene.pixels(), scene.main[0].colour))[1]
        assert world.labels(scene)["position"] == int(cols.mean() >= world.SIZE / 2)
    assert world.labels(first)["position"] != world.labels(second)["position"]


def test_outline_and_dot_show_in_the_pixels():
    for index in range(10):
        solid, hollow = world.attribute_pair(world.scene_rng(5, "pairs", index), "fill")
        if not solid.main[0].filled:
            solid, hollow = hollow, solid
        assert (
            _colour_mask(solid.pixels(), solid.main[0].colour).sum()
            > _colour_mask(hollow.pixels(), hollow.main[0].colour).sum()
        )
        with_dot, without = world.attribute_pair(world.scene_rng(6, "pairs", index), "detail")
        changed = np.any(with_dot.pixels() != without.pixels(), axis=-1)
        assert 0 < changed.sum() <= world.DOT_SIDE**2


# The relation pair swaps the objects' places, so the main kind's half may change with it; removing
# a copy moves the main kind's centre, so its half and its side of the companion may change.
ALSO_CHANGES = {"relation": {"position"}, "count": {"position", "relation"}}


@pytest.mark.parametrize("attribute", world.ATTRIBUTES)
def test_pairs_differ_in_their_attribute_only(attribute):
    for index in range(15):
        first, second = world.attribute_pair(world.scene_rng(7, "pairs", index), attribute)
        a, b = world.labels(first), world.labels(second)
        differing = {k for k in a if a[k] != b[k]}
        assert attribute in differing
        assert differing <= {attribute} | ALSO_CHANGES.get(attribute, set())
        assert not np.array_equal(first.pixels(), second.pixels())


def test_captions_name_colour_and_shape_only():
    rng = np.random.default_rng(0)
    unnamed = {"one", "two", "three", "left", "right", "big", "small", "up", "down", "outline", "dot"}
    for i in range(100):
        scene = world.random_scene(world.scene_rng(0, "train", i))
        words = world.caption(scene, rng).split()
        assert set(words) <= set(world.CAPTION_WORDS)
        assert not set(words) & unnamed
        assert scene.main[0].colour in words and scene.main[0].shape in words
