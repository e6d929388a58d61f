"""LION's mixture of adapters through real training runs on the tiny model: a stage trains only the
parts train.lion names and its model/ artifact carries the routers; a LoRA run keeps them beside the
LoRA weights and merge-lora puts them back; init_from adds them to a saved model without any."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from toydata import run_config

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.configuration import MoaSpec
from mof_llava.training.config import ConfigError, LionStageConfig
from mof_llava.training.run import load_model, train


def _with_tasks(toy_data, tmp_path):
    """The toy chat file with every other record marked region-level (the rest take data.task)."""
    records = json.loads(toy_data["finetune"].read_text())
    for i, record in enumerate(records):
        if i % 2:
            record["task"] = "region"
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(records))
    return {**toy_data, "finetune": path}


def _lion_config(tiny_parts, data, output_dir, lion=None, **train):
    config = run_config(tiny_parts, data, output_dir, stage="finetune", max_steps=2, learning_rate=1e-2, **train)
    config.model.moa = MoaSpec()
    return replace(config, data=replace(config.data, task="image"), train=replace(config.train, lion=lion))


def test_a_lion_stage_trains_the_named_adapter_and_saves_the_routers(tiny_parts, toy_data, tmp_path):
    data = _with_tasks(toy_data, tmp_path)
    lion = LionStageConfig(llm=False, aggregator=None, adapters=["region"], gates=False)
    # with activation checkpointing, as the shipped configs: the backward recomputes the routed layers
    result = train(_lion_config(tiny_parts, data, tmp_path / "b", lion, gradient_checkpointing=True))
    model = MofLlavaForConditionalGeneration.from_pretrained(result.artifact)
    assert model.config.moa_spec == MoaSpec()
    fresh, _ = load_model(replace(_lion_config(tiny_parts, data, tmp_path / "x").model))
    for router, start in zip(model.moa.routers, fresh.moa.routers):
        assert torch.count_nonzero(router.adapters[1].up.weight) > 0  # the region adapter trained
        assert torch.equal(router.adapters[0].up.weight, start.adapters[0].up.weight)  # the image one did not
        assert torch.equal(router.gates, start.gates)
    llm = {k: v for k, v in fresh.language_model.state_dict().items()}
    assert all(torch.equal(v, llm[k]) for k, v in model.language_model.state_dict().items())  # LLM frozen


def test_a_lora_run_keeps_the_routers_beside_lora_and_merge_restores_them(tiny_parts, toy_data, tmp_path):
    from mof_llava.training.lora_merge import merge_lora

    config = _lion_config(tiny_parts, _with_tasks(toy_data, tmp_path), tmp_path / "lora",
                          lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    result = train(config)
    saved = load_file(str(result.artifact / "moa.safetensors"))
    assert saved and all(k.startswith("routers.") for k in saved)
    assert torch.count_nonzero(saved["routers.0.adapters.0.up.weight"]) > 0
    merged = MofLlavaForConditionalGeneration.from_pretrained(merge_lora(tmp_path / "lora", tmp_path / "merged"))
    assert all(torch.equal(merged.moa.state_dict()[k], v) for k, v in saved.items())


def test_init_from_adds_moa_to_a_saved_model_and_refuses_another(tiny_parts, toy_data, tmp_path):
    config = run_config(tiny_parts, toy_data, tmp_path / "plain", stage="finetune")
    plain, processor = load_model(config.model)
    plain.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    start = replace(config.model, llm=None, towers=[], init_from=str(tmp_path / "saved"), moa=MoaSpec(bottleneck=8))
    model, _ = load_model(start)
    assert model.moa.routers[0].adapters[0].down.out_features == 8
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids, task_ids=torch.tensor([1])).logits, plain.eval()(input_ids=ids).logits)
    model.save_pretrained(tmp_path / "with_moa")
    processor.save_pretrained(tmp_path / "with_moa")
    with pytest.raises(ConfigError, match="model.moa .* differs from the moa of model.init_from"):
        load_model(replace(start, init_from=str(tmp_path / "with_moa"), moa=MoaSpec()))
