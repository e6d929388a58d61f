"""The tiny model, a pair batch and a PreferenceTrainer, shared by the preference-stage tests."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from mof_llava.data.config import DataConfig
from mof_llava.preference.collator import PreferenceCollator
from mof_llava.preference.dataset import PreferenceDataset
from mof_llava.training.config import LoraConfig, ModelConfig, PreferenceConfig
from mof_llava.training.preference_trainer import PreferenceTrainer
from mof_llava.training.run import load_model
from mof_llava.typed_config import validate

LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def tiny_model(parts, mixer="interleave"):
    """The tiny model and processor built from components, as a run builds them (I-MoF by default)."""
    towers = [{"name": "clip", "path": str(parts.clip), "feature_layer": -2}]
    if mixer != "none":
        towers.append({"name": "dinov2", "path": str(parts.dinov2), "feature_layer": -1})
    config = validate(ModelConfig, {"llm": str(parts.llm), "towers": towers, "mixer": {"mode": mixer},
                                    "attn_implementation": "sdpa"})  # fmt: skip
    torch.manual_seed(0)
    return load_model(config, on_gpu=False)


def pair_batch(pairs, processor, n=4):
    """The first `n` pairs as a [chosen; rejected] model batch, and the dataset."""
    dataset = PreferenceDataset(
        DataConfig.for_stage("preference", str(pairs["pairs"]), image_folder=str(pairs["images"])), processor
    )
    batch = PreferenceCollator(processor.pad_token_id)([dataset[i] for i in range(n)])
    return {k: v for k, v in batch.items() if k not in ("skipped", "sample_records")}, dataset


def preference_trainer(
    model, tmp_path, reference="lora_disabled", reference_model=None, flops_model=None, **preference
):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2
    )
    return PreferenceTrainer(model=model, args=args, reference_model=reference_model, flops_model=flops_model,
                             preference=PreferenceConfig(reference=reference, **preference))  # fmt: skip
