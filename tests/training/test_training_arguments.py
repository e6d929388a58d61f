"""`training_arguments`: every run-config field that has a TrainingArguments counterpart reaches it."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from toydata import run_config

from mof_llava.training.config import ConfigError
from mof_llava.training.run import World, resolve_precision, training_arguments

# No file is read: the paths only have to be there in the config.
PARTS = SimpleNamespace(clip="/absent/clip", dinov2="/absent/dinov2", llm="/absent/llm")
DATA = {"pretrain": Path("/absent/pretrain.json"), "finetune": Path("/absent/finetune.json"), "images": Path("/absent")}


def _config(tmp_path, **train):
    return run_config(PARTS, DATA, tmp_path / "run", **train)


def test_every_mapped_field_reaches_the_trainer(tmp_path):
    config = _config(
        tmp_path, global_batch_size=24, per_device_batch_size=3, learning_rate=3e-4, weight_decay=0.1,
        warmup_ratio=0.25, lr_scheduler="linear", num_epochs=2.0, max_steps=7, max_grad_norm=0.5, seed=11,
        precision="fp32", logging_steps=3, save_steps=5, save_total_limit=3, report_to="none",
        dataloader_num_workers=0, ddp_timeout=99, gradient_checkpointing=True,
    )
    args = training_arguments(config, World(size=2, rank=1, on_gpu=False))
    assert Path(args.output_dir) == tmp_path / "run"
    assert args.run_name == "run"
    assert args.per_device_train_batch_size == 3
    assert args.gradient_accumulation_steps == 4  # 24 = 3 per device x 2 devices x 4
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm) == (3e-4, 0.1, 0.5)
    assert args.warmup_steps == 0.25  # below 1: the Trainer's ratio of the total steps
    assert args.lr_scheduler_type == "linear"
    assert (args.num_train_epochs, args.max_steps) == (2.0, 7)
    assert (args.seed, args.data_seed) == (11, None)  # no data seed of its own: the sampler takes seed
    assert (args.bf16, args.fp16, args.use_cpu) == (False, False, True)
    assert (args.save_strategy, args.save_steps) == ("steps", 5)
    assert args.save_total_limit is None  # rotation is ours, after the COMPLETE marker
    assert args.logging_steps == 3
    assert args.report_to == []
    assert args.ddp_timeout == 99
    assert args.dataloader_num_workers == 0
    assert args.disable_tqdm is True  # rank 1 draws no bar
    assert args.activation_checkpointing is False  # applied to the LLM only, by the run
    assert args.remove_unused_columns is False and args.label_names == ["labels"]
    assert args.deepspeed is None


def test_a_data_seed_of_its_own_reaches_the_trainer_and_the_seed_stays(tmp_path):
    args = training_arguments(_config(tmp_path, seed=11, data_seed=3), World())
    assert (args.seed, args.data_seed) == (11, 3)


def test_rank_zero_draws_the_bar_and_wandb_is_a_reporter(tmp_path):
    args = training_arguments(_config(tmp_path, report_to="wandb"), World())
    assert args.disable_tqdm is False
    assert args.report_to == ["wandb"]
    assert args.gradient_accumulation_steps == 2  # the toy config: 4 = 2 per device x 1 device x 2


def test_a_global_batch_the_world_cannot_make_is_refused_naming_the_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"train.global_batch_size=4 is not a multiple of per_device_batch_size=2 x 3"):
        training_arguments(_config(tmp_path), World(size=3))


def test_precision_auto_is_fp32_on_cpu_and_half_precision_needs_a_gpu():
    assert resolve_precision("auto", on_gpu=False) == "fp32"
    assert resolve_precision("bf16", on_gpu=True) == "bf16"
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a GPU"):
        resolve_precision("fp16", on_gpu=False)


def test_the_deepspeed_file_is_passed_on(tmp_path, monkeypatch):
    # TrainingArguments starts DeepSpeed's process group when given a file: record the call instead.
    import transformers

    seen = {}
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kwargs: seen.update(kwargs))
    training_arguments(_config(tmp_path, deepspeed="configs/deepspeed/zero2.json"), World())
    assert seen["deepspeed"] == "configs/deepspeed/zero2.json"
