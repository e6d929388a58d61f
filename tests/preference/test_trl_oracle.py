"""Our DPO objective against trl's (the optional oracle, `pip install 'mof-llava[bpo]'`), on the same
pairs through the same tiny I-MoF model: equal per-pair log-probs and equal losses within 1e-5.

trl's `DPOTrainer` cannot be built on our model as it is (issue 14's probe of trl 1.16: its collator
calls the processor with `add_special_tokens` and nested image lists, its fused LM head calls
`model.base_model(...)` for a `last_hidden_state`, it reads `config.auto_map` without a default). So
the oracle runs trl's own code where it can run: its fused LM head (`add_fused_lm_head`, trl's
chunked log-prob kernel) patched onto our LLM, and its `DPOTrainer._compute_loss` (the log-probs,
the reference through peft's `disable_adapter`, the loss formulas) called on a stand-in holding the
attributes it reads. Batches come from our collator: trl's completion mask is where our labels are
supervised.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from dpo_helpers import LORA, pair_batch, preference_trainer, tiny_model
from pair_data import write_pairs

from mof_llava.constants import IGNORE_INDEX
from mof_llava.training.stages import apply_stage

trl_dpo = pytest.importorskip(
    "trl.trainer.dpo_trainer", reason="trl (the DPO oracle) is not installed: pip install 'mof-llava[bpo]'"
)
trl_utils = pytest.importorskip("trl.trainer.utils")

FUSED_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what _compute_loss's metrics read


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def setup(tiny_parts, tmp_path_factory):
    pairs = write_pairs(tmp_path_factory.mktemp("pairs"), n=4)
    model, processor = tiny_model(tiny_parts)
    policy = apply_stage(model, "preference", LORA)
    with torch.no_grad():  # LoRA away from zero: the policy differs from the reference
        generator = torch.Generator().manual_seed(0)
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    trl_utils.add_fused_lm_head(policy.get_base_model().language_model, outputs=FUSED_OUTPUTS)
    batch, _ = pair_batch(pairs, processor)
    # float64: in float32 our sums and trl's (~100 nats) differ by two ulps (1.5e-5) from the order of
    # summation alone
    batch["pixel_values"] = batch["pixel_values"].double()
    return policy.double().eval(), batch, tmp_path_factory.mktemp("trainer")


def _trl_inputs(batch: dict) -> dict:
    """trl's batch: no labels, a completion mask (our supervised positions, shifted back onto the tokens)."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "pixel_values": batch["pixel_values"], "completion_mask": (batch["labels"] != IGNORE_INDEX).long()}  # fmt: skip


def _trl_loss(policy, batch, beta, loss_types, loss_weights):
    stand_in = SimpleNamespace(
        model=policy, ref_model=None, accelerator=Accelerator(cpu=True), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=False, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=loss_weights, beta=beta,
        label_smoothing=0.0, use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    with torch.no_grad():
        loss = trl_dpo.DPOTrainer._compute_loss(stand_in, policy, _trl_inputs(batch), return_outputs=False)
    return loss, {k: v[-1] for k, v in stand_in._metrics["eval"].items()}


def test_per_pair_log_probs_equal_trls_fused_head(setup):
    policy, batch, tmp_path = setup
    trainer = preference_trainer(policy, tmp_path)
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ours = trainer.response_logps(policy, inputs, labels)[0]
        ours_reference = trainer.reference_logps(policy, inputs, labels)
        trl_policy = policy(**inputs, labels=labels, fused_lm_head=True).log_probs.sum(1)
        with policy.disable_adapter():
            trl_reference = policy(**inputs, labels=labels, fused_lm_head=True).log_probs.sum(1)
    # trl's kernel returns float32: one ulp of a ~126-nat sum (7.6e-6) is the comparison's floor
    torch.testing.assert_close(ours, trl_policy.double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_reference, trl_reference.double(), rtol=0, atol=1e-5)
    assert (ours - ours_reference).abs().min() > 1e-3  # the comparison is not of a zero log-ratio


@pytest.mark.parametrize(
    "ours, trl_types, trl_weights",
    [
        ({"loss_type": "sigmoid"}, ["sigmoid"], [1.0]),
        ({"loss_type": "ipo"}, ["ipo"], [1.0]),
        # β large enough that the hinge is neither 0 nor 1
        ({"loss_type": "hinge", "beta": 5.0}, ["hinge"], [1.0]),
        # trl's RPO: the sft loss, weighted
        ({"loss_type": "sigmoid", "nll_weight": 0.4}, ["sigmoid", "sft"], [1.0, 0.4]),
    ],
)
def test_loss_and_rewards_equal_trls_dpo_trainer(setup, ours, trl_types, trl_weights):
    policy, batch, tmp_path = setup
    beta = ours.get("beta", 0.1)
    trainer = preference_trainer(policy, tmp_path, **ours)
    with torch.no_grad():
        loss = trainer._objective(policy, dict(batch))
    expected, metrics = _trl_loss(policy, batch, beta, trl_types, trl_weights)
    assert loss.item() == pytest.approx(expected.item(), rel=0, abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"):  # fmt: skip
        # a reward is β·log-ratio: the log-probs' 1e-5 floor (trl's float32 kernel) scales with β
        tolerance = 1e-5 * max(beta, 1.0) if key.startswith("rewards/") else 1e-5
        assert trainer._metric_sums[key] == pytest.approx(metrics[key], rel=1e-5, abs=tolerance), key
