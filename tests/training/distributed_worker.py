"""Runs one training config on every torchrun rank, then writes what the test compares:
world size, rank, and a digest of every trainable parameter (gathered in full under ZeRO-3)."""

import hashlib
import json
import sys
from pathlib import Path

import torch.distributed as dist

from mof_llava.training.config import load_run_config
from mof_llava.training.run import finish_distributed, train


def full_parameters(trainer):
    model = trainer.model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    if trainer.is_deepspeed_enabled and hasattr(params[0], "ds_id"):  # ZeRO-3 partitions parameters
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return {n: p.detach().clone().float() for n, p in zip(names, params)}
    return {n: p.detach().clone().float() for n, p in zip(names, params)}


if __name__ == "__main__":
    config_path, out_dir = sys.argv[1], Path(sys.argv[2])
    result = train(load_run_config(config_path, sys.argv[3:]))
    params = full_parameters(result.trainer)
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].numpy().tobytes())
    rank = dist.get_rank()
    report = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "trainer_world_size": result.trainer.args.world_size,
        "deepspeed": result.trainer.is_deepspeed_enabled,
        "global_step": result.global_step,
        "digest": digest.hexdigest(),
        "adapter_sum": float(sum(v.abs().sum() for n, v in params.items() if ".mixer." in f".{n}")),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    del result, params  # the trainer holds the DeepSpeed engine, which must go before the process group
    finish_distributed()
