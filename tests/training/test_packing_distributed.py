"""Two processes on CPU (gloo) under DeepSpeed ZeRO-2 and ZeRO-3: a packed run trains like the padded
one (same step losses, same weights) and both ranks end identical. Micro-batches hold varying numbers
of samples of mixed modalities (no modality grouping), so a rank may see no image in a micro-step."""

import json
from dataclasses import replace

import pytest
from test_distributed import ROOT, _launch
from toydata import run_config, write_dataset


def _run(tiny_parts, data, root, mode, packing):
    overrides = {
        "global_batch_size": 8, "per_device_batch_size": 2, "max_steps": 3, "save_steps": 100,
        "learning_rate": 1e-3, "deepspeed": str(ROOT / "configs" / "deepspeed" / f"{mode}.json"),
    }
    config = run_config(tiny_parts, data, root / "run", stage="finetune", **overrides)
    config.data = replace(config.data, packing=packing, group_by_modality_length=False)
    root.mkdir(parents=True, exist_ok=True)
    config.save(root / "run.yaml")
    done = _launch(root)
    assert done.returncode == 0, done.stderr[-5000:]
    reports = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["global_step"] for r in reports] == [3, 3] and [r["deepspeed"] for r in reports] == [True, True]
    assert reports[0]["digest"] == reports[1]["digest"]  # the ranks agree
    lines = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line], reports[0]["adapter_sum"]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_two_rank_packed_run_trains_like_the_padded_one(tiny_parts, tmp_path, mode):
    data = write_dataset(tmp_path / "data", n_images=10, n_text=6)
    padded_losses, padded_adapters = _run(tiny_parts, data, tmp_path / "padded", mode, packing=False)
    packed_losses, packed_adapters = _run(tiny_parts, data, tmp_path / "packed", mode, packing=True)
    assert len(padded_losses) == 3
    assert packed_losses == pytest.approx(padded_losses, rel=1e-5)
    assert packed_adapters == pytest.approx(padded_adapters, rel=1e-6)
