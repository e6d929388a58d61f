"""LION's tag soft prompt through a real training run on the tiny model: the hint vector trains in
stage 2 and is saved with the model, or beside the LoRA weights (merge-lora puts it back); stage 1 and a
saved model without it are refused."""

import json
from dataclasses import replace

import pytest
import torch
from toydata import run_config

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.constants import TAG_HINT_TOKEN_INDEX
from mof_llava.data.tag_prompt import TagPromptConfig
from mof_llava.training.config import ConfigError
from mof_llava.training.run import load_model, train
from mof_llava.training.stages import apply_stage, trainable_by_module


def _tagged(toy_data, tmp_path):
    records = json.loads(toy_data["finetune"].read_text())
    for record in records:
        if "image" in record:
            record["tags"] = ["colour", "picture", "plain"]
    path = tmp_path / "tagged.json"
    path.write_text(json.dumps(records))
    return {**toy_data, "finetune": path}


def _config(tiny_parts, data, output_dir, **train_settings):
    config = run_config(tiny_parts, data, output_dir, stage="finetune", max_steps=2, learning_rate=1e-2,
                        **train_settings)  # fmt: skip
    config.model.tag_soft_prompt = True
    return replace(config, data=replace(config.data, tag_prompt=TagPromptConfig(dropout=0.3, shuffle=True)))


def test_stage2_trains_the_hint_and_saves_it_with_the_model(tiny_parts, toy_data, tmp_path):
    from transformers import set_seed

    config = _config(tiny_parts, _tagged(toy_data, tmp_path), tmp_path / "run")
    set_seed(config.train.seed)  # as train() does before it builds the model: the same starting vector
    start, _ = load_model(config.model)
    result = train(config)
    model = MofLlavaForConditionalGeneration.from_pretrained(result.artifact)
    assert MofLlavaProcessor.from_pretrained(result.artifact).tag_hint_token_id == TAG_HINT_TOKEN_INDEX
    assert model.config.tag_hint_token_id == TAG_HINT_TOKEN_INDEX
    moved = (model.tag_prompt.vector - start.tag_prompt.vector.to(model.tag_prompt.vector.dtype)).abs().max()
    assert moved > 1e-4


def test_stages_train_the_hint_in_stage2_only(tiny_parts, toy_data, tmp_path, caplog):
    model, _ = load_model(_config(tiny_parts, toy_data, tmp_path / "s").model)
    with caplog.at_level("INFO", logger="mof_llava.training.stages"):
        apply_stage(model, "finetune")
    assert model.tag_prompt.vector.requires_grad and "tag_prompt" in caplog.text
    assert trainable_by_module(model)["tag_prompt"].trainable == model.tag_prompt.vector.numel()
    apply_stage(model, "preference")
    assert not model.tag_prompt.vector.requires_grad
    with pytest.raises(ValueError, match=r"LION trains with the LLM: stage 1 \(pretrain\) keeps the LLM frozen"):
        apply_stage(model, "pretrain")


def test_a_lora_run_keeps_the_trained_hint_beside_lora_and_merge_restores_it(tiny_parts, toy_data, tmp_path):
    from safetensors.torch import load_file
    from transformers import set_seed

    from mof_llava.training.lora_merge import merge_lora

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    config = _config(tiny_parts, _tagged(toy_data, tmp_path), tmp_path / "lora", lora=lora)
    set_seed(config.train.seed)  # as train() does before it builds the model: the same starting vector
    start, _ = load_model(config.model)
    result = train(config)
    trained = load_file(str(result.artifact / "tag_prompt.safetensors"))["vector"]
    assert (trained - start.tag_prompt.vector).abs().max() > 1e-4  # it trained beside the LoRA weights
    merged = MofLlavaForConditionalGeneration.from_pretrained(merge_lora(tmp_path / "lora", tmp_path / "merged"))
    assert merged.config.tag_hint_token_id == TAG_HINT_TOKEN_INDEX
    assert torch.equal(merged.tag_prompt.vector, trained)


def test_init_from_a_model_without_the_hint_is_refused(tiny_parts, toy_data, tmp_path):
    config = run_config(tiny_parts, toy_data, tmp_path / "plain", stage="finetune")
    plain, processor = load_model(config.model)
    plain.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    start = replace(
        config.model, llm=None, towers=[], init_from=str(tmp_path / "saved"), tag_soft_prompt=True
    )
    with pytest.raises(ConfigError, match="model.tag_soft_prompt: the saved model .* has no tag soft prompt"):
        load_model(start)
