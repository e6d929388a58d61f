"""Throughput and model-FLOPs utilisation (MFU) estimates for the training log.

Model FLOPs per step, counting matrix multiplies only (2 FLOPs per multiply-add):
- LLM forward: 2 * N_llm per token; backward through the LLM to the visual tokens: another
  2 * N_llm per token, in both stages (stage 1 trains the adapters *through* the frozen LLM); weight
  gradients: 2 * N_trainable_llm per token. So 6N per token in full fine-tuning, 4N in stage 1,
  about 4N with LoRA.
- towers: 2 * N_tower per patch token, forward only (frozen, no_grad).
- the preference stage's reference (`with_reference`): one more forward without gradients per step,
  2 * N_llm of the reference per token plus its towers per image (it re-encodes the images); none for
  reference `precomputed`, whose forward runs once over the data before training.
Attention score FLOPs and activation recomputation (gradient checkpointing) are not counted, as
usual for MFU. Peak FLOP/s is the dense bf16 figure of known GPUs, or `peak_tflops` from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# Dense bf16 tensor-core peak, FLOP/s per device.
KNOWN_PEAKS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "A6000": 155e12,
    "4090": 165e12,
}


def device_peak_flops(override_tflops: float | None = None) -> float | None:
    if override_tflops is not None:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in KNOWN_PEAKS.items():
        if key in name:
            return peak
    return None


@dataclass(frozen=True)
class FlopsModel:
    llm_params: int
    llm_trainable_params: int
    tower_flops_per_image: float
    # The preference stage's no-grad reference forward, every step: its LLM's multiplying parameters
    # and its towers' FLOPs per image (both 0 when there is none).
    reference_llm_params: int = 0
    reference_tower_flops_per_image: float = 0.0

    @classmethod
    def for_model(cls, model, without_adapter: bool = False) -> FlopsModel:
        """`without_adapter`: leave out peft's adapter weights (the model run with them switched off)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        llm = base.language_model
        embedding = llm.get_input_embeddings().weight
        adapter = _adapter_prefix(model) if without_adapter else None
        params = [p for name, p in llm.named_parameters() if adapter is None or adapter not in name]
        # Embedding lookups are not multiplies; the output head is.
        llm_params = sum(p.numel() for p in params) - embedding.numel()
        if llm.get_output_embeddings() is not None and llm.get_output_embeddings().weight is embedding:
            llm_params += embedding.numel()  # tied: the head multiplies with these weights
        trainable = sum(p.numel() for p in params if p.requires_grad and p is not embedding)
        per_image = 0.0
        for name in base.mixer.required_towers:
            tower = base.vision_towers[name]
            per_image += 2.0 * sum(p.numel() for p in tower.parameters()) * (tower.num_patches + 1)
        return cls(llm_params, trainable, per_image)

    def with_reference(self, reference, without_adapter: bool = False) -> FlopsModel:
        """This estimate plus a no-grad forward of `reference` over every step's batch: the frozen copy,
        or the policy itself with `without_adapter` (reference lora_disabled). None (reference
        precomputed) adds nothing: its forward runs once, before training, and is not in any step."""
        if reference is None:
            return replace(self, reference_llm_params=0, reference_tower_flops_per_image=0.0)
        counted = FlopsModel.for_model(reference, without_adapter)
        return replace(
            self,
            reference_llm_params=counted.llm_params,
            reference_tower_flops_per_image=counted.tower_flops_per_image,
        )

    def step_flops(self, tokens: int, images: int) -> float:
        per_token = 4.0 * self.llm_params + 2.0 * self.llm_trainable_params + 2.0 * self.reference_llm_params
        per_image = self.tower_flops_per_image + self.reference_tower_flops_per_image
        return per_token * tokens + per_image * images


def _adapter_prefix(model) -> str | None:
    """What names peft's adapter weights (LoRA's "lora_"), or None when `model` is not a peft model."""
    if not hasattr(model, "get_base_model"):
        return None
    return getattr(model.base_model, "prefix", None)
