"""Throughput and model-FLOPs utilisation (MFU) estimates for the training log.

Model FLOPs per step, counting matrix multiplies only (2 FLOPs per multiply-add):
- LLM forward: 2 * N_llm per token; backward through the LLM to the visual tokens: another
  2 * N_llm per token, in both stages (stage 1 trains the adapters *through* the frozen LLM); weight
  gradients: 2 * N_trainable_llm per token. So 6N per token in full fine-tuning, 4N in stage 1,
  about 4N with LoRA.
- towers: 2 * N_tower per patch token, forward only (frozen, no_grad).
Attention score FLOPs and activation recomputation (gradient checkpointing) are not counted, as
usual for MFU. Peak FLOP/s is the dense bf16 figure of known GPUs, or `peak_tflops` from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def for_model(cls, model) -> FlopsModel:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        llm = base.language_model
        embedding = llm.get_input_embeddings().weight
        # Embedding lookups are not multiplies; the output head is.
        llm_params = sum(p.numel() for p in llm.parameters()) - embedding.numel()
        if llm.get_output_embeddings() is not None and llm.get_output_embeddings().weight is embedding:
            llm_params += embedding.numel()  # tied: the head multiplies with these weights
        trainable = sum(p.numel() for p in llm.parameters() if p.requires_grad and p is not embedding)
        per_image = 0.0
        for name in base.mixer.required_towers:
            tower = base.vision_towers[name]
            per_image += 2.0 * sum(p.numel() for p in tower.parameters()) * (tower.num_patches + 1)
        return cls(llm_params, trainable, per_image)

    def step_flops(self, tokens: int, images: int) -> float:
        per_token = 4.0 * self.llm_params + 2.0 * self.llm_trainable_params
        return per_token * tokens + self.tower_flops_per_image * images
