"""Training order: LLaVA's `group_by_modality_length`, on real token lengths.

The order is global (the same on every rank); the data loader cuts it into per-device batches and
hands them to ranks round-robin, as `accelerate` (and so the HF Trainer) does: per-device batch `j`
goes to rank `j % world_size`. One optimizer step therefore consumes
`per_device_batch_size * world_size * grad_accum` consecutive indices, a *megabatch*.

Grouped order, per epoch (seeded by `(seed, epoch)`, so a resumed run sees the same order):
1. samples with and without an image are shuffled separately and cut into megabatches, so every
   optimizer step sees one modality only (a text-only step never waits on a long image step, and
   towers are either used by all ranks or by none);
2. within a megabatch the samples are arranged into its `world_size * grad_accum` per-device batches:
   - `"sorted"` (default): longest first, cut into consecutive batches. The ranks of a micro-step
     get batches of neighbouring lengths, so there is little padding and little waiting for the
     slowest rank;
   - `"balanced"` (LLaVA's arrangement): longest first, each sample into the batch with the fewest
     tokens so far, so every per-device batch carries nearly the same number of real tokens (but
     spans the whole length range of the megabatch, hence more padding);
   either way the *contents* of each optimizer step are the same, so the updates are the same;
3. megabatches are shuffled; the leftovers of each modality (fewer than a megabatch each) come last,
   image samples then text-only ones, each sorted by length: only the one per-device batch that
   straddles the two can mix modalities.

Megabatches span the gradient accumulation steps, as LLaVA's `LLaVATrainer` does (it passes
`world_size * gradient_accumulation_steps` to its sampler), so the *global* batch of an optimizer
step is single-modality. LLaVA's lengths are word counts plus a constant; here they are the number
of tokens the LLM reads (text tokens plus the mixer's visual tokens), from `LlavaDataset.lengths`.
docs/performance.md ("Data pipeline") compares the arrangements (padding, time lost to waiting ranks).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

Arrangement = Literal["sorted", "balanced"]


def modality_grouped_order(
    lengths: np.ndarray,
    has_image: np.ndarray,
    megabatch_size: int,
    num_batches: int,
    seed: int,
    epoch: int,
    arrange: Arrangement = "sorted",
) -> np.ndarray:
    """A permutation of `range(len(lengths))` grouped as described in the module docstring.

    `megabatch_size` indices form one optimizer step, arranged into `num_batches` per-device batches.
    """
    if arrange not in ("sorted", "balanced"):
        raise ValueError(f"arrange must be 'sorted' or 'balanced', got {arrange!r}")
    lengths, has_image = np.asarray(lengths), np.asarray(has_image, dtype=bool)
    if megabatch_size % num_batches:
        raise ValueError(f"megabatch of {megabatch_size} cannot be dealt into {num_batches} equal batches")
    rng = np.random.default_rng([seed, epoch])
    megabatches: list[np.ndarray] = []
    leftovers: list[np.ndarray] = []
    for members in (np.flatnonzero(has_image), np.flatnonzero(~has_image)):
        shuffled = rng.permutation(members)
        n_full = len(shuffled) - len(shuffled) % megabatch_size
        for megabatch in shuffled[:n_full].reshape(-1, megabatch_size):
            if arrange == "balanced":
                megabatches.append(_deal_balanced(megabatch, lengths, num_batches))
            else:
                megabatches.append(_longest_first(megabatch, lengths))
        leftovers.append(_longest_first(shuffled[n_full:], lengths))
    ordered = [megabatches[i] for i in rng.permutation(len(megabatches))]
    return np.concatenate(ordered + leftovers).astype(np.int64)


def _longest_first(indices: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return indices[np.argsort(-lengths[indices], kind="stable")]


def _deal_balanced(megabatch: np.ndarray, lengths: np.ndarray, num_batches: int) -> np.ndarray:
    """Longest first, each sample into the open batch with the fewest tokens so far."""
    size = len(megabatch) // num_batches
    batches: list[list[int]] = [[] for _ in range(num_batches)]
    open_batches = [(0, b) for b in range(num_batches)]  # (tokens so far, batch number)
    for i in _longest_first(megabatch, lengths):
        tokens, b = heapq.heappop(open_batches)
        batches[b].append(int(i))
        if len(batches[b]) < size:
            heapq.heappush(open_batches, (tokens + int(lengths[i]), b))
    return np.concatenate(batches)


def order_hash(sampler: torch.utils.data.Sampler[int]) -> str:
    """A short digest of the sampler's order for its current epoch, to log next to the seed: two runs
    with the same digest read the data in the same order."""
    order = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    return hashlib.sha256(order.tobytes()).hexdigest()[:16]


def check_batch_settings(lengths, has_image, per_device_batch_size: int, world_size: int, grad_accum: int) -> None:
    """What every sampler of ours needs: a modality flag per length, positive batch and world sizes."""
    if len(lengths) != len(has_image):
        raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
    if min(per_device_batch_size, world_size, grad_accum) < 1:
        raise ValueError("batch size, world size and gradient accumulation must be positive")


class EpochOrder:
    """For samplers whose order is drawn from `(seed, epoch)`: the Trainer calls `set_epoch` before
    each epoch, and the order starts at epoch 0."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ModalityLengthGroupedSampler(EpochOrder, torch.utils.data.Sampler[int]):
    """`group_by_modality_length` as a sampler; call `set_epoch` each epoch (the Trainer does)."""

    def __init__(
        self,
        lengths: np.ndarray,
        has_image: np.ndarray,
        per_device_batch_size: int,
        world_size: int = 1,
        grad_accum: int = 1,
        seed: int = 0,
        arrange: Arrangement = "sorted",
    ):
        check_batch_settings(lengths, has_image, per_device_batch_size, world_size, grad_accum)
        if arrange not in ("sorted", "balanced"):
            raise ValueError(f"arrange must be 'sorted' or 'balanced', got {arrange!r}")
        self.lengths = np.asarray(lengths)
        self.has_image = np.asarray(has_image, dtype=bool)
        self.num_batches = world_size * grad_accum
        self.megabatch_size = per_device_batch_size * self.num_batches
        self.seed = seed
        self.arrange = arrange

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = modality_grouped_order(
            self.lengths,
            self.has_image,
            self.megabatch_size,
            self.num_batches,
            self.seed,
            self.epoch,
            self.arrange,
        )
        return iter(order.tolist())


class ShuffledSampler(EpochOrder, torch.utils.data.Sampler[int]):
    """A plain random order, seeded by `(seed, epoch)` like the grouped sampler."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples).tolist())


def build_train_sampler(
    lengths: np.ndarray,
    has_image: np.ndarray,
    per_device_batch_size: int,
    world_size: int = 1,
    grad_accum: int = 1,
    seed: int = 0,
    group_by_modality_length: bool = True,
    arrange: Arrangement = "sorted",
) -> torch.utils.data.Sampler[int]:
    """The training sampler for a dataset with these per-sample token `lengths` and modalities."""
    if group_by_modality_length:
        return ModalityLengthGroupedSampler(
            lengths, has_image, per_device_batch_size, world_size, grad_accum, seed, arrange
        )
    return ShuffledSampler(len(lengths), seed)
