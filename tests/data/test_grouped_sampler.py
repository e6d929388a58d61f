"""Guarantees of the grouped sampler (LLaVA's group_by_modality_length, reference-codebases.md §1.5),
checked over many seeds, sizes, batch shapes and modality mixes."""

import itertools

import numpy as np
import pytest

from mof_llava.data.sampler import (
    ModalityLengthGroupedSampler,
    ShuffledSampler,
    build_train_sampler,
    modality_grouped_order,
    order_hash,
)

SHAPES = [  # (per-device batch, world size, grad accum)
    (1, 1, 1),
    (4, 1, 1),
    (2, 4, 1),
    (3, 2, 2),
    (16, 8, 1),
]


def random_dataset(rng, n, text_fraction):
    has_image = rng.random(n) >= text_fraction
    lengths = np.where(has_image, 576 + rng.integers(20, 400, n), rng.integers(5, 2048, n))
    return lengths, has_image


def cases():
    rng = np.random.default_rng(1234)
    for (batch, world, accum), n, text_fraction in itertools.product(
        SHAPES, [1, 7, 64, 257, 1000], [0.0, 0.06, 0.5, 1.0]
    ):
        lengths, has_image = random_dataset(rng, n, text_fraction)
        yield batch, world, accum, lengths, has_image


def order_of(lengths, has_image, batch, world, accum, seed=0, epoch=0, arrange="sorted"):
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch, world, accum, seed, arrange)
    sampler.set_epoch(epoch)
    return np.array(list(sampler))


ARRANGEMENTS = ["sorted", "balanced"]


@pytest.mark.parametrize("arrange", ARRANGEMENTS)
def test_every_index_exactly_once_per_epoch(arrange):
    for batch, world, accum, lengths, has_image in cases():
        for seed, epoch in [(0, 0), (1, 0), (0, 3)]:
            order = order_of(lengths, has_image, batch, world, accum, seed, epoch, arrange)
            assert sorted(order.tolist()) == list(range(len(lengths)))


@pytest.mark.parametrize("arrange", ARRANGEMENTS)
def test_every_full_global_batch_is_single_modality_and_leftovers_come_last(arrange):
    for batch, world, accum, lengths, has_image in cases():
        megabatch = batch * world * accum
        order = order_of(lengths, has_image, batch, world, accum, seed=7, arrange=arrange)
        n_image, n_text = int(has_image.sum()), int((~has_image).sum())
        n_full = (n_image // megabatch + n_text // megabatch) * megabatch
        for start in range(0, n_full, megabatch):
            modalities = set(has_image[order[start : start + megabatch]].tolist())
            assert len(modalities) == 1
        tail = has_image[order[n_full:]]
        assert tail.sum() == n_image % megabatch and (~tail).sum() == n_text % megabatch
        assert list(tail) == sorted(tail, reverse=True)  # image leftovers, then text leftovers
        # so at most one per-device batch of the whole epoch mixes modalities
        mixed = [len(set(has_image[order[s : s + batch]].tolist())) > 1 for s in range(0, len(order), batch)]
        assert sum(mixed) <= 1


@pytest.mark.parametrize("arrange", ARRANGEMENTS)
def test_deterministic_given_seed_and_epoch_and_different_otherwise(arrange):
    rng = np.random.default_rng(5)
    lengths, has_image = random_dataset(rng, 500, 0.06)
    first = order_of(lengths, has_image, 4, 2, 2, seed=3, epoch=1, arrange=arrange)
    assert np.array_equal(first, order_of(lengths, has_image, 4, 2, 2, seed=3, epoch=1, arrange=arrange))
    assert not np.array_equal(first, order_of(lengths, has_image, 4, 2, 2, seed=3, epoch=2, arrange=arrange))
    assert not np.array_equal(first, order_of(lengths, has_image, 4, 2, 2, seed=4, epoch=1, arrange=arrange))


def test_arrangements_put_the_same_samples_in_each_optimizer_step():
    for batch, world, accum, lengths, has_image in cases():
        megabatch = batch * world * accum
        a, b = (order_of(lengths, has_image, batch, world, accum, seed=2, arrange=x) for x in ARRANGEMENTS)
        for start in range(0, len(a), megabatch):
            assert set(a[start : start + megabatch]) == set(b[start : start + megabatch])


def steps_of_random_lengths(arrange):
    rng = np.random.default_rng(11)
    for batch, world, accum in SHAPES:
        num_batches = world * accum
        megabatch = batch * num_batches
        for _ in range(20):
            lengths = rng.integers(1, 3000, megabatch * 3)
            order = modality_grouped_order(
                lengths, np.ones(len(lengths), bool), megabatch, num_batches, 0, 0, arrange
            )
            for step in order.reshape(-1, megabatch):
                yield lengths[step.reshape(num_batches, batch)]


def test_balanced_per_device_batches_of_a_step_carry_nearly_equal_tokens():
    # Longest first into the lightest batch: the token totals of the per-device batches of one
    # optimizer step differ by at most the longest sample of that step.
    for step_lengths in steps_of_random_lengths("balanced"):
        totals = step_lengths.sum(axis=1)
        assert totals.max() - totals.min() <= step_lengths.max()


def test_sorted_per_device_batches_hold_neighbouring_lengths():
    # Longest first, cut into consecutive batches: batch j+1 holds nothing longer than batch j.
    for step_lengths in steps_of_random_lengths("sorted"):
        assert np.all(step_lengths[:-1].min(axis=1) >= step_lengths[1:].max(axis=1))


def test_ranks_get_their_share_through_round_robin_sharding():
    # accelerate gives per-device batch j to rank j % world_size: each step's indices split across
    # ranks and accumulation steps exactly, and every rank sees one modality per step.
    rng = np.random.default_rng(2)
    lengths, has_image = random_dataset(rng, 960, 0.06)
    batch, world, accum = 4, 4, 2
    order = order_of(lengths, has_image, batch, world, accum)
    batches = order.reshape(-1, batch)
    per_rank = [batches[r::world] for r in range(world)]
    assert sum(len(b) for b in per_rank) == len(batches)
    megabatch = batch * world * accum
    n_full = (int(has_image.sum()) // megabatch + int((~has_image).sum()) // megabatch) * megabatch
    for step in range(n_full // megabatch):
        step_batches = batches[step * world * accum : (step + 1) * world * accum]
        assert len({bool(has_image[b[0]]) for b in step_batches}) == 1


def test_shuffled_sampler_and_factory():
    sampler = build_train_sampler(np.ones(50), np.ones(50, bool), 4, group_by_modality_length=False, seed=9)
    assert isinstance(sampler, ShuffledSampler)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    grouped = build_train_sampler(np.ones(50), np.ones(50, bool), 4, world_size=2, grad_accum=3)
    assert (
        isinstance(grouped, ModalityLengthGroupedSampler)
        and grouped.megabatch_size == 24
        and len(grouped) == 50
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="3 lengths but 2"):
        ModalityLengthGroupedSampler(np.ones(3), np.ones(2, bool), 1)
    with pytest.raises(ValueError, match="positive"):
        ModalityLengthGroupedSampler(np.ones(3), np.ones(3, bool), 0)
    with pytest.raises(ValueError, match="arrange must be"):
        ModalityLengthGroupedSampler(np.ones(3), np.ones(3, bool), 1, arrange="llava")


def test_order_hash_identifies_the_epoch_order():
    lengths, has_image = random_dataset(np.random.default_rng(3), 300, 0.06)
    a = ModalityLengthGroupedSampler(lengths, has_image, 4, 2, seed=1)
    b = ModalityLengthGroupedSampler(lengths, has_image, 4, 2, seed=1)
    assert order_hash(a) == order_hash(b)
    b.set_epoch(1)
    assert order_hash(a) != order_hash(b)
    assert order_hash(ShuffledSampler(300, seed=1)) != order_hash(ShuffledSampler(300, seed=2))
