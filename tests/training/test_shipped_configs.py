"""Every run config shipped in configs/experiments loads, type-checks, and fits 8 GPUs with its global batch."""

from pathlib import Path

import pytest

from mof_llava.training.config import load_run_config
from mof_llava.training.run import gradient_accumulation_steps

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Run configs are the stage files; experiments/ also holds sweeps, the evaluation set and reported numbers.
RUN_CONFIGS = sorted((CONFIGS / "experiments").rglob("stage[12].yaml"))


def test_there_are_run_configs_for_every_paper_run():
    folders = {p.parent.name for p in RUN_CONFIGS}
    assert folders >= {"llava15_7b", "llava15_13b", "imof_7b", "imof_13b", "amof_7b"}
    assert all(
        {p.name for p in RUN_CONFIGS if p.parent.name == f} == {"stage1.yaml", "stage2.yaml"} for f in folders
    )


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_divides_on_8_gpus(path):
    config = load_run_config(path)
    assert config.train.output_dir.startswith("runs/")
    assert (
        gradient_accumulation_steps(config.train.global_batch_size, config.train.per_device_batch_size, 8)
        >= 1
    )
    assert (CONFIGS.parent / config.train.deepspeed).is_file()
    stage = config.train.stage
    assert path.name == ("stage1.yaml" if stage == "pretrain" else "stage2.yaml")
    assert config.train.global_batch_size == (256 if stage == "pretrain" else 128)
    assert config.train.learning_rate == (1e-3 if stage == "pretrain" else 2e-5)
    assert config.data.template == ("plain" if stage == "pretrain" else "vicuna_v1")
    if stage == "finetune":
        stage1 = load_run_config(path.with_name("stage1.yaml"))
        # stage 2 loads its own stage 1's adapters, built for the same model
        assert config.model.adapters_from == f"{stage1.train.output_dir}/adapters"
        assert (config.model.llm, config.model.towers, config.model.mixer) == (
            stage1.model.llm,
            stage1.model.towers,
            stage1.model.mixer,
        )


def test_paper_imof_recipe():
    stage1 = load_run_config(CONFIGS / "experiments" / "imof_7b" / "stage1.yaml")
    assert [(t.name, t.feature_layer, t.normalization) for t in stage1.model.towers] == [
        ("clip", -2, "shared"),
        ("dinov2", -1, "shared"),
    ]
    assert stage1.model.mixer.mode == "interleave" and stage1.train.learning_rate == 1e-3


@pytest.mark.parametrize(
    "folder, llm, mode",
    [
        ("llava15_7b", "lmsys/vicuna-7b-v1.5", "none"),
        ("llava15_13b", "lmsys/vicuna-13b-v1.5", "none"),
        ("imof_7b", "lmsys/vicuna-7b-v1.5", "interleave"),
        ("imof_13b", "lmsys/vicuna-13b-v1.5", "interleave"),
        ("amof_7b", "lmsys/vicuna-7b-v1.5", "additive"),
    ],
)
def test_each_paper_run_has_its_llm_towers_and_mixer(folder, llm, mode):
    config = load_run_config(CONFIGS / "experiments" / folder / "stage2.yaml")
    towers = ["clip"] if mode == "none" else ["clip", "dinov2"]
    assert config.model.llm == llm and config.model.mixer.mode == mode
    assert [t.name for t in config.model.towers] == towers
    assert config.model.mixer.adapter == "mlp2x_gelu"
