"""Each stage trains exactly what LLaVA-1.5 and the paper train, and says so."""

import logging

import pytest
import torch

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.training.config import LoraConfig
from mof_llava.training.stages import apply_stage, trainable_by_module


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_stage1_trains_both_imof_adapters_and_nothing_else(tiny_model_dirs, caplog):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    with caplog.at_level(logging.INFO, logger="mof_llava"):
        apply_stage(model, "pretrain")
    names = _trainable(model)
    assert names and all(n.startswith("mixer.adapters.") for n in names)
    assert {n.split(".")[2] for n in names} == {"clip", "dinov2"}
    counts = trainable_by_module(model)
    assert counts["language_model"].trainable == 0 and counts["vision_towers.dinov2"].trainable == 0
    assert "trained  mixer" in caplog.text and "frozen   language_model" in caplog.text


def test_stage1_amof_trains_its_single_shared_adapter(tiny_model_dirs):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("additive", 0.5))
    apply_stage(model, "pretrain")
    assert {n.split(".")[2] for n in _trainable(model)} == {"shared"}


def test_stage2_trains_adapters_and_llm_towers_stay_frozen(tiny_model_dirs):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    apply_stage(model, "finetune")
    counts = trainable_by_module(model)
    assert counts["language_model"].trainable == counts["language_model"].total
    assert counts["mixer"].trainable == counts["mixer"].total
    assert counts["vision_towers.clip"].trainable == 0 and counts["vision_towers.dinov2"].trainable == 0


def test_stage2_lora_trains_lora_weights_and_full_adapters(tiny_model_dirs):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    wrapped = apply_stage(model, "finetune", LoraConfig(r=4, alpha=8))
    names = _trainable(wrapped)
    lora = {n for n in names if "lora_" in n}
    assert lora and all(".language_model." in n for n in lora)
    assert {n for n in names - lora} == {n for n in names if ".mixer." in n}
    base_llm = [p for n, p in wrapped.named_parameters() if ".language_model." in n and "lora_" not in n]
    assert all(not p.requires_grad for p in base_llm)
    # LoRA starts as a no-op: the wrapped model computes what the plain one did
    ids = torch.tensor([[1, 5, 7, 9]])
    plain = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave")).eval()
    with torch.no_grad():
        torch.testing.assert_close(wrapped.eval()(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_lora_in_stage1_is_refused(tiny_model_dirs):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    with pytest.raises(ValueError, match="LoRA applies to the LLM, which stage 1"):
        apply_stage(model, "pretrain", LoraConfig())
