"""`train.stage: preference` end to end on the tiny model: what it trains and logs, its artifacts, its
refusals, the shipped BPO configs, and exact resume after an abrupt death."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
import torch
from pair_data import write_pairs
from safetensors.torch import load_file

from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
from mof_llava.training import checkpoints, reference_logps
from mof_llava.training.config import ConfigError, load_run_config, run_config_from_dict
from mof_llava.training.lora_merge import merge_lora
from mof_llava.training.rendezvous import RENDEZVOUS_VARIABLES
from mof_llava.training.run import gradient_accumulation_steps, train

HERE = Path(__file__).parent
CONFIGS = HERE.parents[1] / "configs"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
DPO_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected"}  # fmt: skip


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def _config(init_from, pairs, output_dir, **train):
    settings = {"stage": "preference", "output_dir": str(output_dir), "global_batch_size": 4,
                "per_device_batch_size": 2, "learning_rate": 1e-3, "max_steps": 4, "save_steps": 2,
                "report_to": "none", "dataloader_num_workers": 0, "gradient_checkpointing": False, "lora": LORA,
                **train}  # fmt: skip
    return run_config_from_dict(
        {
            "model": {"init_from": str(init_from)},
            "data": {"data_path": str(pairs["pairs"]), "image_folder": str(pairs["images"])},
            "train": settings,
        }
    )


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_lora_run_trains_only_the_llm_and_logs_the_dpo_metrics(tiny_model_dirs, pairs, tmp_path):
    start = tiny_model_dirs("interleave")
    result = train(_config(start, pairs, tmp_path / "bpo", max_steps=3))
    assert result.artifact == tmp_path / "bpo" / "lora" and result.global_step == 3
    assert result.trainer.trainable_names and all("lora_" in n for n in result.trainer.trainable_names)
    steps = [row for row in _log(tmp_path / "bpo") if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3] and all(DPO_METRICS <= set(row) for row in steps)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # LoRA starts at zero: policy = reference
    assert steps[0]["rewards/margins"] == 0.0
    assert steps[-1]["rewards/margins"] > 0  # chosen pulled ahead of rejected
    # the adapters are frozen: the run's adapters artifact is the starting model's
    merged = MofLlavaForConditionalGeneration.from_pretrained(
        merge_lora(tmp_path / "bpo", tmp_path / "merged")
    )
    original = MofLlavaForConditionalGeneration.from_pretrained(start)
    for key, value in original.mixer.state_dict().items():
        assert torch.equal(merged.mixer.state_dict()[key], value), key
    assert any(not torch.equal(merged.language_model.state_dict()[k], v)
               for k, v in original.language_model.state_dict().items())  # fmt: skip


def test_full_llm_run_with_a_frozen_copy_writes_the_model(tiny_model_dirs, pairs, tmp_path):
    result = train(_config(tiny_model_dirs("interleave"), pairs, tmp_path / "full", max_steps=2, lora=None,
                           preference={"reference": "frozen_copy", "loss_type": "ipo"}))  # fmt: skip
    assert result.artifact == tmp_path / "full" / "model"
    assert MofLlavaProcessor.from_pretrained(result.artifact).num_image_tokens == 32
    first = [row for row in _log(tmp_path / "full") if "loss" in row][0]
    assert first["loss"] == pytest.approx(25.0)  # IPO with policy = reference: (0 − 1/(2·0.1))²


def test_precomputed_reference_trains_as_lora_disabled_and_is_cached(tiny_model_dirs, pairs, tmp_path):
    start = tiny_model_dirs("interleave")
    train(_config(start, pairs, tmp_path / "live", max_steps=3))
    result = train(
        _config(start, pairs, tmp_path / "cached", max_steps=3, preference={"reference": "precomputed"})
    )
    expected = {row["step"]: row for row in _log(tmp_path / "live") if "loss" in row}
    got = {row["step"]: row for row in _log(tmp_path / "cached") if "loss" in row}
    assert sorted(got) == sorted(expected) == [1, 2, 3]
    for step in got:
        for key in ("loss", *sorted(DPO_METRICS)):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-6), (step, key)
    cache = tmp_path / "cached" / reference_logps.CACHE
    cached = load_file(str(cache))["logps"]
    assert cached.shape == (8, 2) and torch.isfinite(cached).all()
    assert (cached[:, 0] > cached[:, 1]).all()  # the toy's rejected answers are the longer ones
    fingerprint = reference_logps._fingerprint(result.trainer.train_dataset)
    torch.testing.assert_close(reference_logps.read(cache, fingerprint), cached)
    with pytest.raises(ConfigError, match="reference log-probs of other pairs"):
        reference_logps.read(cache, "0" * 64)


def test_refusals_name_the_setting(tiny_model_dirs, pairs, tmp_path):
    start = tiny_model_dirs("interleave")
    with pytest.raises(ConfigError, match="lora_disabled .* needs train.lora"):
        _config(start, pairs, tmp_path / "a", lora=None)
    with pytest.raises(ConfigError, match="train.preference applies to train.stage: preference"):
        _config(start, pairs, tmp_path / "b", stage="finetune", preference={"beta": 0.2})
    zero3 = CONFIGS / "deepspeed" / "zero3.json"
    config = _config(start, pairs, tmp_path / "c", lora=None, preference={"reference": "frozen_copy"},
                     deepspeed=str(zero3))  # fmt: skip
    # a DeepSpeed run sets the rendezvous variables; the later runs of this process must not inherit them
    with mock.patch.dict(os.environ), pytest.raises(ConfigError, match="frozen_copy .* ZeRO-3"):
        train(config)
    config = _config(start, pairs, tmp_path / "d")
    config.data = replace(config.data, packing=True)
    with pytest.raises(ConfigError, match="data.packing"):
        train(config)


@pytest.mark.parametrize("folder, mode", [("bpo_llava15_7b", "none"), ("bpo_imof_7b", "interleave")])
def test_shipped_bpo_configs_have_bpos_recipe(folder, mode):
    config = load_run_config(CONFIGS / "experiments" / folder / "preference.yaml")
    stage2 = load_run_config(CONFIGS / "experiments" / folder.removeprefix("bpo_") / "stage2.yaml")
    assert config.model.init_from == f"{stage2.train.output_dir}/model"  # on top of the stage-2 model
    tcfg = config.train
    assert (tcfg.stage, tcfg.learning_rate, tcfg.num_epochs) == ("preference", 2e-6, 2)
    assert (tcfg.lora.r, tcfg.lora.alpha, tcfg.lora.dropout) == (32, 256, 0.05)
    dpo = tcfg.preference
    assert (dpo.beta, dpo.loss_type, dpo.reference) == (0.1, "sigmoid", "lora_disabled")
    assert Path(tcfg.deepspeed).name == "zero2.json" and (CONFIGS.parent / tcfg.deepspeed).is_file()
    assert tcfg.global_batch_size == 32  # BPO: 4 per GPU on 8 GPUs
    assert gradient_accumulation_steps(tcfg.global_batch_size, tcfg.per_device_batch_size, 8) >= 1
    assert config.data.template == "vicuna_v1" and stage2.model.mixer.mode == mode


def _launch(config_path, die_after=None):
    cmd = [sys.executable, str(HERE.parent / "training" / "run_until.py"), str(config_path)]
    if die_after is not None:
        cmd += ["--die-after-step", str(die_after)]
    # a plain one-process start, whatever rendezvous an earlier in-process DeepSpeed run left behind
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARIABLES}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_killed_preference_run_resumes_with_identical_losses_and_rewards(tiny_model_dirs, pairs, tmp_path):
    start = tiny_model_dirs("interleave")
    train(_config(start, pairs, tmp_path / "straight", max_steps=6))
    killed = _config(start, pairs, tmp_path / "killed", max_steps=6)
    killed.save(tmp_path / "killed.yaml")
    # abruptly, after checkpoint-4, mid-way to the next one
    died = _launch(tmp_path / "killed.yaml", die_after=5)
    assert died.returncode == 137, died.stderr[-3000:]
    assert checkpoints.latest_complete_checkpoint(tmp_path / "killed") == tmp_path / "killed" / "checkpoint-4"
    train(killed)  # resume: auto
    record = json.loads((tmp_path / "killed" / "run_record.json").read_text())
    assert [Path(r["from"]).name for r in record["resumes"]] == ["checkpoint-4"]  # resumed, not started over
    assert record["data"]["index_sha256"]  # the pairs' fingerprint, checked on resume
    expected = {row["step"]: row for row in _log(tmp_path / "straight") if "loss" in row}
    got = {row["step"]: row for row in _log(tmp_path / "killed") if "loss" in row}
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        for key in ("loss", *sorted(DPO_METRICS)):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (step, key)
