"""scripts/bench_train.py --packing (tiny preset, CPU): the packed micro-batch trains like the padded
one (same losses step after step) and carries no padding."""

from __future__ import annotations

import pytest
import torch


def test_packed_steps_match_padded_steps_without_padding(bench):
    torch.set_num_threads(1)
    argv = ["--llm", "tiny", "--towers", "tiny", "--device", "cpu", "--micro-batch", "3", "--text-tokens", "30",
            "--text-tokens-min", "10", "--steps", "2", "--warmup", "1", "--stage", "finetune", "--mixer", "interleave"]
    padded = bench.main(argv)
    packed = bench.main([*argv, "--packing"])
    lengths = [32 + n for n in (10, 20, 30)]  # 32 interleaved visual tokens + the spread text lengths
    assert padded["padded_tokens"] == 3 * max(lengths) and padded["real_tokens"] == sum(lengths)
    assert packed["packing"] and packed["sequence_length"] == packed["padded_tokens"] == sum(lengths)
    assert packed["real_tokens"] == padded["real_tokens"]
    assert packed["losses"] == pytest.approx(padded["losses"], rel=1e-4)
