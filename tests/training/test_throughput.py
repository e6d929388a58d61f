"""The MFU estimate's FLOP count: 2N forward + 2N backward-to-inputs + 2N_trainable weight gradients per token,
plus the towers' forward per image."""

import pytest

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.training.stages import apply_stage
from mof_llava.training.throughput import FlopsModel, device_peak_flops


def _counts(model):
    llm = model.language_model
    embedding = llm.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in llm.parameters())
    return total - embedding  # the tiny Llama has an untied head: the head multiplies, the embedding looks up


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_step_flops(tiny_model_dirs, stage):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    apply_stage(model, stage)
    flops = FlopsModel.for_model(model)
    n = _counts(model)
    assert flops.llm_params == n
    trainable = n if stage == "finetune" else 0  # embeddings train in stage 2 but are lookups, not multiplies
    assert flops.llm_trainable_params == trainable
    towers = sum(2 * sum(p.numel() for p in t.parameters()) * (16 + 1) for t in model.vision_towers.values())
    assert flops.tower_flops_per_image == towers
    assert flops.step_flops(tokens=100, images=3) == (4 * n + 2 * trainable) * 100 + 3 * towers


@pytest.mark.parametrize(
    ("available", "name", "expected"),
    [
        (True, "NVIDIA H100 80GB HBM3", 989e12),
        (True, "NVIDIA A100-SXM4-80GB", 312e12),
        (True, "Some Future GPU", None),  # unknown: no MFU rather than a made-up one
        (False, "", None),
    ],
)
def test_peak_flops(monkeypatch, available, name, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert device_peak_flops(None) == expected
    assert device_peak_flops(312) == 312e12  # the config's peak_tflops wins
