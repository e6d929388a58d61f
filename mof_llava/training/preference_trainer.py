"""`PreferenceTrainer`: `MofLlavaTrainer` with the DPO objective of the preference stage (BPO).

A batch is `[chosen; rejected]` (preference/collator.py). The policy runs once over it; the LLM's last
hidden states go to `sequence_logps`, which scores only the response tokens (never a visual position)
without building full-vocabulary logits for the sequence. They are taken from the decoder's output by
a hook, not asked for with `output_hidden_states`, which would keep every layer's output alive until
the forward returns (a no-grad reference forward need not hold them). The reference runs the same
batch without gradients: the policy with its LoRA switched off (peft's `disable_adapter()`, BPO's
choice) or a frozen copy of the starting model; or the batch carries the reference log-probs,
computed once before training (`precomputed`, reference_logps.py). The loss is `preference/dpo.py`'s,
a mean over the micro-batch's pairs, which the Trainer divides by the accumulation steps. Rewards,
margins, accuracies and the mean log-probs are averaged over the steps since the last log line (over
every rank) and logged with it: metrics.jsonl and wandb get them.

Everything else (sampler, skipped samples, NaN guard, checkpoints, exact resume, throughput) is
MofLlavaTrainer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..preference.dpo import dpo_loss, response_labels, sequence_logps, split_pair
from .config import PreferenceConfig
from .stages import base_model
from .throughput import FlopsModel
from .trainer import MofLlavaTrainer, placeholder_batch

REFERENCES = ("lora_disabled", "frozen_copy", "precomputed")


class PreferenceTrainer(MofLlavaTrainer):
    # a mean over the pairs of a micro-batch: the Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self, *args, preference: PreferenceConfig, reference_model: nn.Module | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        if preference.reference not in REFERENCES:
            raise ValueError(
                f"unknown reference {preference.reference!r}; choose one of {', '.join(REFERENCES)}"
            )
        if (preference.reference == "frozen_copy") != (reference_model is not None):
            raise ValueError("reference frozen_copy takes a reference_model, lora_disabled none")
        if preference.reference == "lora_disabled" and not hasattr(self.model, "disable_adapter"):
            raise ValueError(
                "reference lora_disabled needs a LoRA (peft) model; set train.lora or reference: frozen_copy"
            )
        self.preference = preference
        self.reference_model = reference_model
        if reference_model is not None:
            reference_model.requires_grad_(False).eval().to(self.args.device)
        if self.flops_model is not None:  # the MFU estimate counts the reference forward of each step
            self.flops_model = self._with_reference_flops(self.flops_model)
        self.model_accepts_loss_kwargs = False  # DPO needs no count of supervised tokens
        self._metric_sums: dict[str, float] = {}
        self._metric_batches = 0

    def _objective(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, reference_logps = inputs.pop("labels"), inputs.pop("reference_logps", None)
        if (reference_logps is None) == (self.preference.reference == "precomputed"):
            raise ValueError(f"reference {self.preference.reference}: precomputed log-probs come with the batch "
                             "exactly when the reference is precomputed")  # fmt: skip
        policy_logps, counts, outputs = self.response_logps(model, inputs, labels)
        if reference_logps is None:
            with torch.no_grad():
                reference_logps = self.reference_logps(model, inputs, labels)
        cfg = self.preference
        out = dpo_loss(policy_logps, reference_logps, counts, cfg.beta, cfg.loss_type, cfg.label_smoothing,
                       cfg.nll_weight)  # fmt: skip
        self._add_metrics(out.metrics(), policy_logps.detach())
        return (out.loss, outputs) if return_outputs else out.loss

    def _empty_batch_loss(self, model, inputs, return_outputs=False):
        result = super()._empty_batch_loss(model, inputs, return_outputs)
        if self.preference.reference == "lora_disabled":
            # The other ranks run the reference through the same modules this step; under ZeRO-3 (which
            # gathers parameters module by module) this rank must too, or the collectives hang.
            batch = placeholder_batch(inputs, self.processing_class)
            with torch.no_grad():
                self.reference_logps(model, batch, batch.pop("labels"))
        return result

    def response_logps(self, model, inputs, labels):
        base = base_model(self.accelerator.unwrap_model(model))
        return response_logps(model, inputs, labels, self.preference.chunk_size, base)

    def reference_logps(self, model, inputs, labels) -> torch.Tensor:
        if self.reference_model is not None:
            return self.response_logps(self.reference_model, inputs, labels)[0]
        policy = self.accelerator.unwrap_model(model)
        with policy.disable_adapter():
            return self.response_logps(policy, inputs, labels)[0]

    def _with_reference_flops(self, flops: FlopsModel) -> FlopsModel:
        if self.preference.reference == "precomputed":
            return flops.with_reference(None)
        if self.reference_model is not None:
            return flops.with_reference(self.reference_model)
        return flops.with_reference(self.model, without_adapter=True)  # lora_disabled

    # -- logging ----------------------------------------------------------------------------------
    def _add_metrics(self, metrics: dict[str, float], policy_logps: torch.Tensor) -> None:
        chosen, rejected = split_pair(policy_logps)
        metrics = {**metrics, "logps/chosen": float(chosen.mean()), "logps/rejected": float(rejected.mean())}
        for key, value in metrics.items():
            self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value
        self._metric_batches += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_sums:
            keys = sorted(self._metric_sums)
            totals = self._global_sum_tensor([*(self._metric_sums[k] for k in keys), self._metric_batches])
            logs.update({k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)})
            self._metric_sums, self._metric_batches = {}, 0
        super().log(logs, start_time)


def response_logps(model, inputs, labels, chunk_size: int, base: nn.Module | None = None):
    """(summed response log-probs, response token counts, model outputs) of every row of a batch;
    `base`: the MofLlava model inside `model` (by default found through peft's wrapper). The policy
    and every reference (LoRA disabled, frozen copy, precomputed) are scored through here."""
    base = base_model(model) if base is None else base
    with last_hidden_state(base.get_decoder()) as captured:
        # logits_to_keep=1: the head runs on one position here; sequence_logps runs it on the scored ones
        outputs = model(**inputs, output_hidden_states=False, logits_to_keep=1)
    if len(captured) != 1:
        raise RuntimeError(f"the LLM's decoder ran {len(captured)} times in one forward, expected once")
    labels = response_labels(labels, inputs["input_ids"], base.config.image_token_id)
    logps, counts = sequence_logps(captured.pop(), base.get_output_embeddings(), labels, chunk_size)
    return logps, counts, outputs


@contextmanager
def last_hidden_state(decoder: nn.Module) -> Iterator[list[torch.Tensor]]:
    """A list that receives `decoder`'s `last_hidden_state` (after the final norm, the tensor that
    `hidden_states[-1]` would be) each time it runs inside the block. Each layer's output is then
    freed as the next layer consumes it, unless autograd keeps it for the backward pass."""
    captured: list[torch.Tensor] = []

    def keep(module, args, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = decoder.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()
