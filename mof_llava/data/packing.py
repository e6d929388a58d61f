"""Packing: each micro-batch is one row of samples laid back to back, and every rank gets about the
same number of real tokens per micro-step.

Padding wastes the compute of the tokens it adds, and ranks that synchronise every micro-step
(ZeRO-2 reduces, ZeRO-3 gathers) wait for the one with the most tokens. Packing removes the first
(`PackedCollator`: no padding, positions restart at 0 per sample, so transformers isolates the
samples' attention) and `PackedBatchSampler` the second:

1. an epoch is cut into optimizer steps, deterministically from `(seed, epoch)`:
   - `max_tokens=None` (the recipe): the steps of the grouped sampler (or the plain shuffle), the
     same samples per step as without packing, so the updates are the same;
   - `max_tokens=N`: each modality's shuffled samples are cut into steps of about equal token totals,
     as many as it takes for no micro-batch to exceed N tokens (fewer, larger steps);
2. a step's samples are dealt longest first, each to the micro-batch with the fewest tokens so far
   (`world_size * grad_accum` micro-batches, any number of samples each): all end within one
   sample's length of each other;
3. the heaviest `world_size` micro-batches form micro-step 0, the next ones micro-step 1, and so on;
   micro-batch `j` of the global order goes to rank `j % world_size`, as accelerate deals batches.

Every sample is read once per epoch, every rank runs the same number of micro-steps (a step with
fewer samples than micro-batches leaves some empty: the trainer runs those as a placeholder), and the
number of steps per epoch does not depend on the epoch. A resumed run skips the batches already
trained (the order is a pure function of seed and epoch).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator

import numpy as np
import torch

from .sampler import Arrangement, EpochOrder, check_batch_settings, modality_grouped_order


class PackingError(ValueError):
    """The packing settings cannot be met by this data (one line, naming the setting)."""


def packed_epoch(
    lengths: np.ndarray,
    has_image: np.ndarray,
    *,
    world_size: int,
    grad_accum: int,
    per_device_batch_size: int,
    seed: int,
    epoch: int,
    max_tokens: int | None = None,
    group_by_modality_length: bool = True,
    arrange: Arrangement = "sorted",
) -> list[np.ndarray]:
    """The micro-batches of one epoch in global order (see the module docstring)."""
    lengths, has_image = np.asarray(lengths, dtype=np.int64), np.asarray(has_image, dtype=bool)
    num_bins = world_size * grad_accum
    if max_tokens is None:
        steps = _recipe_steps(lengths, has_image, per_device_batch_size * num_bins, num_bins, seed, epoch,
                              group_by_modality_length, arrange)
    else:
        steps = _token_steps(lengths, has_image, max_tokens, num_bins, seed, epoch, group_by_modality_length)
    batches: list[np.ndarray] = []
    for step in steps:
        batches += _deal_step(step, lengths, num_bins, world_size)
    return batches


def _recipe_steps(lengths, has_image, megabatch, num_bins, seed, epoch, grouped, arrange) -> list[np.ndarray]:
    # The same orders as the unpacked samplers, so a step holds the same samples either way.
    if grouped:
        order = modality_grouped_order(lengths, has_image, megabatch, num_bins, seed, epoch, arrange)
    else:
        order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    return [order[start : start + megabatch] for start in range(0, len(order), megabatch)]


def steps_per_group(total_tokens: int, max_tokens: int, longest: int, num_bins: int) -> int:
    """Steps that keep every micro-batch within `max_tokens`: a step cut at an equal-token boundary
    holds at most `total / steps + longest` tokens, and dealing adds at most `longest` to its mean.
    `room` of at least twice `longest` keeps the boundaries a sample apart, so no step is empty."""
    room = num_bins * (max_tokens - longest) - longest
    if room < 2 * longest:
        raise PackingError(
            f"data.packing_tokens = {max_tokens} is too small for samples of up to {longest} tokens over "
            f"{num_bins} micro-batches per step; use at least {math.ceil(longest * (num_bins + 3) / num_bins)} "
            "(per_device_batch_size x max_length packs well)"
        )
    return max(1, math.ceil(total_tokens / room))


def _token_steps(lengths, has_image, max_tokens, num_bins, seed, epoch, grouped) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    groups = (np.flatnonzero(has_image), np.flatnonzero(~has_image)) if grouped else (np.arange(len(lengths)),)
    longest = int(lengths.max(initial=0))
    steps: list[np.ndarray] = []
    for members in groups:
        if len(members) == 0:
            continue
        shuffled = rng.permutation(members)
        ends = np.cumsum(lengths[shuffled])
        n_steps = steps_per_group(int(ends[-1]), max_tokens, longest, num_bins)
        # a sample belongs to the step its last token falls in, cut at equal shares of the tokens
        cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n_steps) / n_steps, side="left")
        steps += np.split(shuffled, cuts)
    return [steps[i] for i in rng.permutation(len(steps))]


def _deal_step(step: np.ndarray, lengths: np.ndarray, num_bins: int, world_size: int) -> list[np.ndarray]:
    """Longest first, each sample to the micro-batch with the fewest tokens; heaviest micro-step first."""
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    loads = [(0, b) for b in range(num_bins)]  # (tokens so far, micro-batch); a heap
    for i in step[np.argsort(-lengths[step], kind="stable")]:
        tokens, b = heapq.heappop(loads)
        bins[b].append(int(i))
        heapq.heappush(loads, (tokens + int(lengths[i]), b))
    totals = {b: tokens for tokens, b in loads}
    ranked = sorted(range(num_bins), key=lambda b: (-totals[b], b))
    # consecutive runs of world_size micro-batches are one micro-step: similar loads side by side
    return [np.asarray(bins[b], dtype=np.int64) for b in ranked]


class PackedBatchSampler(EpochOrder, torch.utils.data.Sampler[list[int]]):
    """The global list of packed micro-batches; call `set_epoch` each epoch (the trainer does).

    Given to the DataLoader as its `batch_sampler`; accelerate deals its batches to the ranks."""

    def __init__(
        self,
        lengths: np.ndarray,
        has_image: np.ndarray,
        per_device_batch_size: int,
        world_size: int = 1,
        grad_accum: int = 1,
        seed: int = 0,
        *,
        max_tokens: int | None = None,
        group_by_modality_length: bool = True,
        arrange: Arrangement = "sorted",
    ):
        check_batch_settings(lengths, has_image, per_device_batch_size, world_size, grad_accum)
        if max_tokens is not None and max_tokens < 1:
            raise PackingError(f"data.packing_tokens must be positive, got {max_tokens}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.has_image = np.asarray(has_image, dtype=bool)
        self.settings = dict(
            world_size=world_size,
            grad_accum=grad_accum,
            per_device_batch_size=per_device_batch_size,
            seed=seed,
            max_tokens=max_tokens,
            group_by_modality_length=group_by_modality_length,
            arrange=arrange,
        )
        self._cached: tuple[int, list[np.ndarray]] | None = None
        self._num_batches = len(self._batches())  # fixed: the same for every epoch

    def _batches(self) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, packed_epoch(self.lengths, self.has_image, epoch=self.epoch, **self.settings))
        return self._cached[1]

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in self._batches())
