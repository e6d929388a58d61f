"""Every run config shipped in configs/ loads, type-checks, and fits 8 GPUs with its global batch."""

from pathlib import Path

import pytest

from mof_llava.training.config import load_run_config
from mof_llava.training.run import gradient_accumulation_steps

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RUN_CONFIGS = sorted((CONFIGS / "experiments").rglob("*.yaml"))


def test_there_are_run_configs():
    assert len(RUN_CONFIGS) >= 4


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_divides_on_8_gpus(path):
    config = load_run_config(path)
    assert config.train.output_dir.startswith("runs/")
    assert gradient_accumulation_steps(config.train.global_batch_size, config.train.per_device_batch_size, 8) >= 1
    assert (CONFIGS.parent / config.train.deepspeed).is_file()
    stage = config.train.stage
    assert config.train.global_batch_size == (256 if stage == "pretrain" else 128)
    assert config.data.template == ("plain" if stage == "pretrain" else "vicuna_v1")
    if stage == "finetune":
        assert config.model.adapters_from and "stage1/adapters" in config.model.adapters_from


def test_paper_imof_recipe():
    stage1 = load_run_config(CONFIGS / "experiments" / "imof_7b" / "stage1.yaml")
    assert [(t.name, t.feature_layer, t.normalization) for t in stage1.model.towers] == [
        ("clip", -2, "shared"), ("dinov2", -1, "shared")]
    assert stage1.model.mixer.mode == "interleave" and stage1.train.learning_rate == 1e-3
