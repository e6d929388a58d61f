"""scripts/bench_train.py measures real training steps: the stage's freezing, one image per sample,
finite losses. Run on the tiny preset (the real-size presets need a GPU)."""

from __future__ import annotations

import json
import math

import pytest


def _run(bench, tmp_path, *extra):
    out = tmp_path / "results.jsonl"
    argv = ["--llm", "tiny", "--towers", "tiny", "--device", "cpu", "--micro-batch", "2", "--text-tokens", "24",
            "--steps", "2", "--warmup", "1", "--json", str(out), *extra]
    result = bench.main(argv)
    assert json.loads(out.read_text().splitlines()[-1]) == result
    return result


def test_stage1_trains_only_the_adapters(bench, tmp_path):
    result = _run(bench, tmp_path, "--stage", "pretrain", "--mixer", "interleave")
    trainable = result["trainable_params"]
    assert trainable["language_model"] == 0 and trainable["vision_towers.clip"] == 0
    assert trainable["vision_towers.dinov2"] == 0 and trainable["mixer"] > 0
    assert result["visual_tokens"] == 32  # 16 CLIP + 16 DINOv2 tokens interleaved
    assert result["sequence_length"] == 32 + 24
    assert all(math.isfinite(v) for v in result["losses"]) and len(result["losses"]) == 2
    assert result["tokens_per_s"] > 0 and result["mfu"] is None  # no known peak on a CPU


def test_stage2_trains_the_llm_and_layers_can_be_cut(bench, tmp_path):
    full = _run(bench, tmp_path, "--stage", "finetune", "--mixer", "none")
    cut = _run(bench, tmp_path, "--stage", "finetune", "--mixer", "none", "--llm-layers", "1")
    assert "vision_towers.dinov2" not in full["trainable_params"]  # the baseline has one tower
    assert full["visual_tokens"] == 16 and full["llm_layers"] == 2 and cut["llm_layers"] == 1
    assert 0 < cut["trainable_params"]["language_model"] < full["trainable_params"]["language_model"]
    # Full fine-tuning adds the LLM's weight gradients to the step's model FLOPs.
    stage1 = _run(bench, tmp_path, "--stage", "pretrain", "--mixer", "none")
    assert full["model_tflops_per_step"] > stage1["model_tflops_per_step"]
    assert all(math.isfinite(v) for v in full["losses"] + cut["losses"])


def test_layer_count_is_checked(bench):
    with pytest.raises(SystemExit, match="--llm-layers must be in 1..2"):
        bench.main(["--llm", "tiny", "--towers", "tiny", "--device", "cpu", "--llm-layers", "3"])
