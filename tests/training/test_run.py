"""Training runs end to end on the tiny model: the stage artifacts, exact resume after an abrupt
death, a crash while saving a checkpoint, the NaN guard, bad images, LoRA merging."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toydata import losses, run_config, write_dataset
from transformers import TrainerCallback

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.data.images import ImageLoadError
from mof_llava.model.adapter_artifact import load_adapters, save_adapters
from mof_llava.model.configuration import AggregatorSpec
from mof_llava.training import checkpoints
from mof_llava.training.run import load_model, train
from mof_llava.training.trainer import MofLlavaTrainer, NonFiniteLossError

HERE = Path(__file__).parent


def test_stage1_then_stage2(tiny_parts, toy_data, tmp_path):
    # gradient checkpointing on, as in the shipped configs (stage 1: the LLM is frozen but backpropagated through)
    stage1 = train(run_config(tiny_parts, toy_data, tmp_path / "s1", stage="pretrain", max_steps=3, save_steps=2,
                              gradient_checkpointing=True))
    assert stage1.artifact == tmp_path / "s1" / "adapters" and stage1.global_step == 3
    assert (tmp_path / "s1" / "run_config.yaml").is_file()
    # a stage-1 checkpoint holds the adapters (and optimizer/scheduler/RNG/trainer state), not the frozen parts
    ckpt = tmp_path / "s1" / "checkpoint-2"
    assert {p.name for p in ckpt.iterdir()} >= {"COMPLETE", "model.safetensors", "optimizer.pt", "rng_state.pth",
                                                "scheduler.pt", "trainer_state.json"}
    assert all(k.startswith("mixer.") for k in load_file(str(ckpt / "model.safetensors")))
    log = [json.loads(line) for line in (tmp_path / "s1" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "learning_rate", "grad_norm"} <= set(log[0])
    assert {"tokens_per_s", "samples_per_s", "step_time_s"} <= set(log[1])

    config2 = run_config(tiny_parts, toy_data, tmp_path / "s2", stage="finetune", max_steps=3, gradient_checkpointing=True)
    config2.model.adapters_from = str(stage1.artifact)
    model, _ = load_model(config2.model)
    trained = stage1.trainer.model.mixer.state_dict()
    assert all(torch.equal(model.mixer.state_dict()[k], v) for k, v in trained.items())  # stage 2 starts from stage 1
    stage2 = train(config2)
    assert stage2.artifact == tmp_path / "s2" / "model"
    reloaded = MofLlavaForConditionalGeneration.from_pretrained(stage2.artifact)
    processor = MofLlavaProcessor.from_pretrained(stage2.artifact)
    assert processor.num_image_tokens == 32 and processor.image_aspect_ratio == "pad"
    assert reloaded.config.mixer_spec.mode == "interleave"


def _launch(config_path, *extra, die_after=None):
    cmd = [sys.executable, str(HERE / "run_until.py"), str(config_path), *extra]
    if die_after is not None:
        cmd += ["--die-after-step", str(die_after)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_killed_run_resumes_with_identical_losses(tiny_parts, toy_data, tmp_path, stage):
    for name in ("straight", "killed"):
        run_config(tiny_parts, toy_data, tmp_path / name, stage=stage, max_steps=6, save_steps=2).save(tmp_path / f"{name}.yaml")
    straight = _launch(tmp_path / "straight.yaml")
    assert straight.returncode == 0, straight.stderr[-3000:]

    died = _launch(tmp_path / "killed.yaml", die_after=5)  # after checkpoint-4, mid-way to the next one
    assert died.returncode == 137
    assert checkpoints.latest_complete_checkpoint(tmp_path / "killed") == tmp_path / "killed" / "checkpoint-4"
    resumed = _launch(tmp_path / "killed.yaml")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-4" in resumed.stderr

    expected, got = losses(tmp_path / "straight"), losses(tmp_path / "killed")
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_crash_while_saving_leaves_the_previous_checkpoint(tiny_parts, toy_data, tmp_path, monkeypatch):
    config = run_config(tiny_parts, toy_data, tmp_path / "run", save_steps=2, max_steps=6, save_total_limit=1)
    original = MofLlavaTrainer._save_optimizer_and_scheduler

    def crash_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError("disk full (simulated) while writing the optimizer state")
        return original(self, output_dir)

    monkeypatch.setattr(MofLlavaTrainer, "_save_optimizer_and_scheduler", crash_at_step_4)
    with pytest.raises(OSError, match="disk full"):
        train(config)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert checkpoints.latest_complete_checkpoint(run) == run / "checkpoint-2"  # not rotated away
    assert checkpoints.incomplete_checkpoints(run) == [run / "checkpoint-4"]

    result = train(config)  # resume: auto
    assert result.global_step == 6
    straight = train(run_config(tiny_parts, toy_data, tmp_path / "straight", save_steps=2, max_steps=6))
    expected, got = losses(tmp_path / "straight"), losses(run)
    for step in (3, 4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2, 3, 4, 5, 6]  # steps 3, 4 once, after resume
    assert straight.global_step == 6
    assert [p.name for p in run.iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-6"]


def test_nan_loss_stops_the_run_naming_step_and_samples(tiny_parts, toy_data, tmp_path):
    class PoisonAdapters(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                with torch.no_grad():
                    next(model.mixer.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 .*pretrain\.json:\d+"):
        train(run_config(tiny_parts, toy_data, tmp_path / "nan", max_steps=3), callbacks=[PoisonAdapters()])


def test_bad_images_fail_or_are_skipped_and_counted(tiny_parts, tmp_path):
    data = write_dataset(tmp_path / "data", n_images=7, n_text=0, missing_image=True)
    base = dict(stage="finetune", max_steps=2, global_batch_size=4, per_device_batch_size=4)
    with pytest.raises(ImageLoadError, match=r"does_not_exist\.jpg: file not found \(image of .*finetune\.json"):
        train(run_config(tiny_parts, data, tmp_path / "fail", **base))

    config = run_config(tiny_parts, data, tmp_path / "skip", **base)
    config.data = replace(config.data, on_bad_image="skip")
    result = train(config)
    assert result.skipped_samples == 1
    assert json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[-2])["skipped_samples"] == 1


def test_adapter_learning_rate_gets_its_own_group(tiny_parts, toy_data, tmp_path):
    result = train(run_config(tiny_parts, toy_data, tmp_path / "lr", stage="finetune", max_steps=1,
                              learning_rate=2e-4, adapter_learning_rate=2e-5, warmup_ratio=0.0, lr_scheduler="constant"))
    optimizer = result.trainer.optimizer
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], 0)
        by_lr[group["lr"]] += sum(p.numel() for p in group["params"])
    mixer = sum(p.numel() for p in result.trainer.model.mixer.parameters())
    assert by_lr[2e-5] == mixer and by_lr[2e-4] == sum(p.numel() for p in result.trainer.model.language_model.parameters())


def test_aggregator_learning_rate_multiplier_scales_its_group(tiny_parts, toy_data, tmp_path):
    config = run_config(tiny_parts, toy_data, tmp_path / "agg", stage="finetune", max_steps=1,
                        learning_rate=2e-4, adapter_learning_rate=2e-5, warmup_ratio=0.0, lr_scheduler="constant")
    config.model.mixer = replace(config.model.mixer, aggregator=AggregatorSpec(layer_offsets=(-1,), lr_multiplier=3.0))
    result = train(config)
    by_lr = {}
    for group in result.trainer.optimizer.param_groups:
        by_lr[group["lr"]] = by_lr.get(group["lr"], 0) + sum(p.numel() for p in group["params"])
    model = result.trainer.model
    aggregators = sum(p.numel() for p in model.mixer.aggregators.parameters())
    assert aggregators > 0
    assert by_lr[2e-5 * 3.0] == aggregators  # the adapters' rate times the multiplier
    assert by_lr[2e-5] == sum(p.numel() for p in model.mixer.parameters()) - aggregators
    assert by_lr[2e-4] == sum(p.numel() for p in model.language_model.parameters())


def test_lora_run_and_merge(tiny_parts, toy_data, tmp_path):
    from peft import PeftModel

    from mof_llava.training.lora_merge import merge_lora

    config = run_config(tiny_parts, toy_data, tmp_path / "lora", stage="finetune", max_steps=2,
                        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    stage1 = tmp_path / "stage1-adapters"  # stands in for a stage-1 artifact the run starts from
    save_adapters(load_model(config.model)[0], stage1)
    config.model.adapters_from = str(stage1)
    result = train(config)
    assert result.artifact == tmp_path / "lora" / "lora"
    shutil.rmtree(stage1)  # merging needs only the run's own directory
    merged_dir = merge_lora(tmp_path / "lora", tmp_path / "merged")
    merged = MofLlavaForConditionalGeneration.from_pretrained(merged_dir).eval()
    base, _ = load_model(replace(config.model, adapters_from=None))
    load_adapters(base, tmp_path / "lora" / "adapters")
    peft_model = PeftModel.from_pretrained(base, tmp_path / "lora" / "lora").eval()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=0, atol=1e-5)
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # training moved the LoRA weights, so merging mattered


def test_wandb_runs_offline_without_a_key(tiny_parts, toy_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # an optional extra; CI installs it
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = run_config(tiny_parts, toy_data, tmp_path / "wb", max_steps=1, report_to="wandb")
    train(config)
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*")), "expected an offline wandb run"


@pytest.mark.parametrize("arrangement", ["sorted", "balanced"])
def test_the_configured_batch_arrangement_reaches_the_sampler(tiny_parts, toy_data, tmp_path, arrangement):
    from mof_llava.data.sampler import ModalityLengthGroupedSampler

    config = run_config(tiny_parts, toy_data, tmp_path / arrangement, stage="finetune", max_steps=1)
    config.data = replace(config.data, batch_arrangement=arrangement)
    sampler = train(config).trainer._get_train_sampler()
    assert isinstance(sampler, ModalityLengthGroupedSampler) and sampler.arrange == arrangement


class _FirstWeights(TrainerCallback):
    """The trainable weights as training starts (before any step)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_data_seed_orders_the_data_and_the_seed_draws_the_first_weights(tiny_parts, toy_data, tmp_path):
    runs = {}
    for seed, data_seed in ((1, 5), (2, 5), (1, 6), (5, None)):
        first = _FirstWeights()
        config = run_config(tiny_parts, toy_data, tmp_path / f"s{seed}d{data_seed}", stage="pretrain", max_steps=1,
                            seed=seed, data_seed=data_seed)  # fmt: skip
        runs[seed, data_seed] = (list(train(config, callbacks=[first]).trainer._get_train_sampler()), first.weights)

    def same_weights(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)

    (order, weights), (order_2, weights_2), (order_6, weights_6), (order_unset, _) = runs.values()
    assert order == order_2 and not same_weights(weights, weights_2)  # another seed: other weights, same order
    assert order != order_6 and same_weights(weights, weights_6)  # another data seed: the same weights
    assert sorted(order) == sorted(order_6)
    assert order_unset == order  # no data seed: seed 5 orders the data as data seed 5 does


def test_the_collator_pads_with_the_processors_pad_id(tiny_parts, toy_data, tmp_path, monkeypatch):
    # One rule picks the pad id (the processor's): the collator and the all-skipped placeholder batch
    # both use it. A processor whose rule gives a distinct id shows which one training reads.
    monkeypatch.setattr(MofLlavaProcessor, "pad_token_id", property(lambda self: 7))
    collate = train(run_config(tiny_parts, toy_data, tmp_path / "pad", stage="finetune", max_steps=1)).trainer.data_collator
    rows = [{"input_ids": [1, 20, 30], "labels": [-100, 20, 30]}, {"input_ids": [1], "labels": [-100]}]
    assert collate(rows)["input_ids"].tolist() == [[1, 20, 30], [1, 7, 7]]
