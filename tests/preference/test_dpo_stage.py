"""The preference stage's DPO objective on the tiny model: log 2 when policy = reference, the
LoRA-disabled reference against the base model's own log-probs, supervised tokens = the response
under interleaving, one optimiser step lowers the loss, the pair batch layout."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from dpo_helpers import LORA, pair_batch, preference_trainer, tiny_model
from pair_data import write_pairs

from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template
from mof_llava.data.skips import SkippedSample
from mof_llava.preference.collator import PreferenceCollator
from mof_llava.training.stages import apply_stage, trainable_by_module


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), n=4)


def _naive_logps(model, batch) -> torch.Tensor:
    """Summed log-probs of the supervised tokens from the model's full logits (no chunking, no hidden states)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                       attention_mask=batch["attention_mask"]).logits.double()  # fmt: skip
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    token_logps = logits[:, :-1].log_softmax(-1).gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (token_logps * scored).sum(1)


def test_batch_is_chosen_then_rejected_with_the_image_repeated(tiny_parts, pairs):
    _, processor = tiny_model(tiny_parts)
    batch, dataset = pair_batch(pairs, processor, n=3)
    assert batch["input_ids"].shape[0] == 6 and batch["pixel_values"].shape[0] == 6
    torch.testing.assert_close(batch["pixel_values"][:3], batch["pixel_values"][3:], rtol=0, atol=0)
    tokenizer = processor.tokenizer
    for i in range(3):
        chosen = tokenizer.decode(batch["labels"][i][batch["labels"][i] != IGNORE_INDEX])
        rejected = tokenizer.decode(batch["labels"][3 + i][batch["labels"][3 + i] != IGNORE_INDEX])
        assert dataset.pairs[i].chosen in chosen and dataset.pairs[i].rejected in rejected


@pytest.mark.parametrize("mixer", ["interleave", "none"])
def test_supervised_tokens_are_the_response_under_interleaving(tiny_parts, pairs, mixer):
    _, processor = tiny_model(tiny_parts, mixer)
    batch, dataset = pair_batch(pairs, processor)
    template = get_template("vicuna_v1")
    for row in range(8):
        pair = dataset.pairs[row % 4]
        response = pair.chosen if row < 4 else pair.rejected
        rendered = template.render([(pair.prompt, response)])
        prefix = rendered.text[: rendered.supervised_spans[0][0]]  # up to "ASSISTANT:", the prompt side
        expected = len(processor.encode(rendered.text).ids) - len(processor.encode(prefix).ids)
        labels = batch["labels"][row]
        assert int((labels != IGNORE_INDEX).sum()) == expected
        placeholders = batch["input_ids"][row] == processor.image_token_id
        assert int(placeholders.sum()) == processor.num_image_tokens == (32 if mixer == "interleave" else 16)
        assert not (labels[placeholders] != IGNORE_INDEX).any()


def test_loss_is_log_2_when_policy_equals_reference(tiny_parts, pairs, tmp_path):
    model, processor = tiny_model(tiny_parts)
    batch, _ = pair_batch(pairs, processor)
    for trainer in (
        # LoRA's B starts at zero
        preference_trainer(apply_stage(copy.deepcopy(model), "preference", LORA), tmp_path),
        preference_trainer(
            apply_stage(copy.deepcopy(model), "preference"), tmp_path, "frozen_copy", copy.deepcopy(model)
        ),
    ):
        loss = trainer._objective(trainer.model, dict(batch))
        assert loss.item() == pytest.approx(math.log(2), rel=0, abs=1e-7)
        assert trainer._metric_sums["rewards/margins"] == 0.0  # log-ratios exactly zero


def test_lora_disabled_reference_is_the_base_models_log_probs(tiny_parts, pairs, tmp_path):
    model, processor = tiny_model(tiny_parts)
    base = copy.deepcopy(model).eval()
    policy = apply_stage(model, "preference", LORA)
    with torch.no_grad():  # move LoRA away from zero so that the policy differs from the base
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    trainer = preference_trainer(policy.eval(), tmp_path)
    batch, _ = pair_batch(pairs, processor)
    labels = batch.pop("labels")
    with torch.no_grad():
        reference = trainer.reference_logps(policy, batch, labels)
        own = trainer.response_logps(policy, batch, labels)[0]
    expected = _naive_logps(base, {**batch, "labels": labels})
    torch.testing.assert_close(reference.double(), expected, rtol=1e-5, atol=1e-4)
    assert (own.double() - expected).abs().max() > 1e-2  # the policy itself is not the base


@pytest.mark.parametrize("reference", ["lora_disabled", "frozen_copy"])
def test_one_optimiser_step_lowers_the_loss(tiny_parts, pairs, tmp_path, reference):
    model, processor = tiny_model(tiny_parts)
    frozen = copy.deepcopy(model) if reference == "frozen_copy" else None
    policy = apply_stage(model, "preference", LORA if reference == "lora_disabled" else None)
    trainer = preference_trainer(policy, tmp_path, reference, frozen, beta=0.5)
    batch, _ = pair_batch(pairs, processor, n=1)  # one pair
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trainable, lr=0.05)
    before = trainer._objective(policy, dict(batch))
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = trainer._objective(policy, dict(batch))
    assert after.item() < before.item() - 1e-4


def test_a_micro_batch_of_skipped_pairs_still_runs_policy_and_reference(tiny_parts, tmp_path):
    # every rank runs the same modules every step (ZeRO-3 gathers parameters module by module)
    model, processor = tiny_model(tiny_parts)
    policy = apply_stage(model, "preference", LORA).train()
    trainer = preference_trainer(policy, tmp_path)
    calls = []
    policy.get_base_model().language_model.register_forward_hook(
        lambda *_: calls.append(torch.is_grad_enabled())
    )
    batch = PreferenceCollator(processor.pad_token_id)(
        [SkippedSample(0, "pairs.jsonl (pair 0)", "image missing")]
    )
    loss = trainer.compute_loss(policy, batch)
    assert loss.item() == 0.0 and calls == [True, False]  # the policy, then the reference without gradients
    assert trainer.skips.total == 1


@pytest.mark.parametrize("lora", [LORA, None])
def test_the_stage_freezes_towers_and_adapters_and_says_so(tiny_parts, caplog, lora):
    model, _ = tiny_model(tiny_parts)
    with caplog.at_level(logging.INFO, logger="mof_llava"):
        policy = apply_stage(model, "preference", lora)
    counts = trainable_by_module(policy)
    assert counts["mixer"].trainable == 0 and counts["vision_towers.clip"].trainable == 0
    trained = {n for n, p in policy.named_parameters() if p.requires_grad}
    if lora is None:
        assert counts["language_model"].trainable == counts["language_model"].total
    else:
        assert trained and all("lora_" in n and ".language_model." in n for n in trained)
    assert "frozen   mixer" in caplog.text and "trained  language_model" in caplog.text
