"""Packing: the packed batch layout, the attention isolation it relies on, and the packed sampler's
guarantees (every sample once, equal micro-steps per rank, balanced tokens, token budget, seeding)."""

import numpy as np
import pytest
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data import DataConfig
from mof_llava.data.collator import PackedCollator
from mof_llava.data.packing import PackedBatchSampler, PackingError, packed_epoch
from mof_llava.data.sampler import modality_grouped_order
from mof_llava.data.skips import SkippedSample

torch.set_num_threads(1)


def _item(ids, labels, image=False, name="r"):
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "pixel_values": torch.full((3, 4, 4), float(len(ids))) if image else None,
        "record": name,
    }


def test_packed_collator_concatenates_restarts_positions_and_cuts_the_boundary_label():
    a = _item([1, 5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 6, 7], image=True, name="a")
    b = _item([1, 8, 9], [1, 8, 9], name="b")  # a first label that is supervised: must not survive
    skipped = SkippedSample(2, "c", "image missing")
    batch = PackedCollator(pad_token_id=0)([a, skipped, b])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 1, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 6, 7, IGNORE_INDEX, 8, 9]]
    assert "attention_mask" not in batch and batch["use_cache"] is False
    assert batch["pixel_values"].shape == (1, 3, 4, 4) and batch["pixel_values"][0, 0, 0, 0] == 4
    assert batch["sample_records"] == ["a", "b"] and batch["skipped"] == [skipped]
    assert b["labels"][0] == 1  # the item itself is left as it was


def test_packed_collator_of_only_skipped_items_has_zero_rows():
    batch = PackedCollator(pad_token_id=0)([SkippedSample(0, "a", "bad")])
    assert batch["input_ids"].shape == (0, 0) and len(batch["skipped"]) == 1


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_attends_within_each_sample_only(attention):
    """What packing relies on in transformers: positions restarting at 0 and no attention mask give
    every sample its own causal block, so each sample's logits are those of running it alone."""
    from transformers import LlamaForCausalLM

    from mof_llava.testing.tiny import tiny_llama_config

    torch.manual_seed(0)
    config = tiny_llama_config(300)
    config._attn_implementation = attention
    model = LlamaForCausalLM(config).eval()
    samples = [torch.randint(3, 300, (n,)).tolist() for n in (7, 5, 9)]
    batch = PackedCollator(0)([_item(s, s) for s in samples])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([s])).logits[0] for s in samples]
        unmasked = model(input_ids=batch["input_ids"]).logits[0]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)
    assert (unmasked[7:12] - alone[1]).abs().max() > 1e-2  # the check can fail: without restarts it leaks


def _lengths(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    has_image = rng.random(n) >= 0.1
    lengths = np.where(has_image, rng.integers(600, 900, n), rng.integers(20, 2048, n))
    return lengths.astype(np.int64), has_image


SETTINGS = [
    dict(world_size=4, grad_accum=2, per_device_batch_size=4),
    dict(world_size=3, grad_accum=1, per_device_batch_size=5),
    dict(world_size=2, grad_accum=3, per_device_batch_size=2, group_by_modality_length=False),
]


@pytest.mark.parametrize("max_tokens", [None, 8 * 2048])
@pytest.mark.parametrize("settings", SETTINGS)
def test_packed_epoch_reads_every_sample_once_in_whole_balanced_steps(settings, max_tokens):
    lengths, has_image = _lengths()
    batches = packed_epoch(lengths, has_image, seed=3, epoch=1, max_tokens=max_tokens, **settings)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    world, bins = settings["world_size"], settings["world_size"] * settings["grad_accum"]
    assert len(batches) % bins == 0  # whole steps: every rank runs the same number of micro-steps
    tokens = np.array([lengths[b].sum() for b in batches])
    for step in tokens.reshape(-1, bins):
        # dealt longest first to the lightest micro-batch: all within one sample of each other
        assert step.max() - step.min() <= lengths.max()
        assert (np.diff(step) <= 0).all()  # heaviest micro-step first, so each micro-step is even
    micro_steps = tokens.reshape(-1, world)
    assert micro_steps.sum() / (micro_steps.max(axis=1).sum() * world) > 0.95
    if max_tokens is not None:
        assert tokens.max() <= max_tokens


def test_token_budget_steps_are_single_modality_and_fewer():
    lengths, has_image = _lengths()
    settings = dict(world_size=4, grad_accum=2, per_device_batch_size=4, seed=0, epoch=0)
    recipe = packed_epoch(lengths, has_image, **settings)
    budget = packed_epoch(lengths, has_image, max_tokens=8 * 2048, **settings)
    for b in range(0, len(budget), 8):
        step = np.concatenate(budget[b : b + 8])
        assert len(set(has_image[step].tolist())) == 1
    assert len(budget) < len(recipe) / 2  # ~4 samples of ~800 tokens per micro-batch before, ~18 now


def test_recipe_packing_keeps_each_step_of_the_grouped_sampler():
    lengths, has_image = _lengths(1000)
    world, accum, per_device = 4, 2, 4
    order = modality_grouped_order(lengths, has_image, world * accum * per_device, world * accum, seed=5, epoch=2)
    batches = packed_epoch(lengths, has_image, world_size=world, grad_accum=accum, per_device_batch_size=per_device,
                           seed=5, epoch=2)
    megabatch = world * accum * per_device
    for s, start in enumerate(range(0, len(order), megabatch)):
        packed_step = np.concatenate(batches[s * world * accum : (s + 1) * world * accum])
        assert sorted(packed_step.tolist()) == sorted(order[start : start + megabatch].tolist())


def test_fewer_samples_than_micro_batches_leaves_some_empty_not_repeated():
    lengths, has_image = np.array([5, 9, 7]), np.array([True, True, False])
    batches = packed_epoch(lengths, has_image, world_size=4, grad_accum=1, per_device_batch_size=2, seed=0, epoch=0)
    assert len(batches) == 4 and sorted(np.concatenate(batches).tolist()) == [0, 1, 2]
    assert sum(len(b) == 0 for b in batches) == 1


def test_sampler_is_a_function_of_seed_and_epoch_with_a_fixed_length():
    lengths, has_image = _lengths(800)
    make = lambda: PackedBatchSampler(lengths, has_image, 4, world_size=2, grad_accum=2, seed=7, max_tokens=6000)  # noqa: E731
    first, again = make(), make()
    epochs = []
    for epoch in range(3):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        batches = list(first)
        assert batches == list(again) and len(batches) == len(first)
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    assert all(isinstance(i, int) for i in epochs[0][0])


def test_too_small_a_budget_is_refused_naming_the_setting():
    lengths, has_image = np.array([2000, 100, 300]), np.array([False, True, True])
    with pytest.raises(PackingError, match=r"data.packing_tokens = 2100 is too small .* up to 2000 tokens"):
        PackedBatchSampler(lengths, has_image, 2, world_size=1, max_tokens=2100)


def test_packing_tokens_needs_packing_and_room_for_a_sample():
    with pytest.raises(ValueError, match="data.packing_tokens = 8192 needs data.packing: true"):
        DataConfig(data_path="x.json", packing_tokens=8192)
    with pytest.raises(ValueError, match=r"data.packing_tokens = 100 is below data.max_length \(2048\)"):
        DataConfig(data_path="x.json", packing=True, packing_tokens=100)
    assert DataConfig(data_path="x.json", packing=True, packing_tokens=8192).packing_tokens == 8192


def test_accelerate_deals_the_packed_batches_round_robin_and_skips_on_resume():
    """What the trainer relies on: accelerate's batch-sampler shard gives rank r micro-batches
    r, r + world, ... of the global order (so every rank gets one per micro-step), and its skip
    wrapper resumes mid-epoch on exactly the next micro-batch."""
    from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler

    lengths, has_image = _lengths(500)
    sampler = PackedBatchSampler(lengths, has_image, 4, world_size=2, grad_accum=2, seed=1)
    sampler.set_epoch(1)
    batches = list(sampler)
    for rank in (0, 1):
        shard = BatchSamplerShard(sampler, num_processes=2, process_index=rank, split_batches=False)
        assert list(shard) == batches[rank::2] and len(shard) == len(sampler) // 2
        assert list(SkipBatchSampler(shard, skip_batches=6)) == batches[rank::2][6:]


def test_an_empty_micro_batch_reaches_the_trainer_as_a_zero_row_batch():
    """Fewer samples than micro-batches in a step: the DataLoader hands the empty one to the collator,
    which gives the zero-row batch the trainer runs as a placeholder (so every rank takes part)."""
    items = [_item([1, 4, 5], [IGNORE_INDEX, 4, 5], name=str(i)) for i in range(3)]
    sampler = PackedBatchSampler(np.array([3, 3, 3]), np.array([False] * 3), 1, world_size=4)
    loader = torch.utils.data.DataLoader(items, batch_sampler=sampler, collate_fn=PackedCollator(0))
    rows = [batch["input_ids"].shape[0] for batch in loader]
    assert len(rows) == 4 and sorted(rows) == [0, 1, 1, 1]
