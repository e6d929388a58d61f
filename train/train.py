"""Launchable training entry point: the same as `mof-llava train CONFIG [key=value ...]`.

    python train/train.py configs/experiments/imof_7b/stage1.yaml
    torchrun --nproc_per_node 8 train/train.py configs/experiments/imof_7b/stage1.yaml
    deepspeed --num_gpus 8 train/train.py configs/experiments/imof_7b/stage1.yaml
    accelerate launch --multi_gpu --num_processes 8 train/train.py configs/experiments/imof_7b/stage1.yaml
"""

import sys

from mof_llava.cli import run

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the deepspeed launcher adds it
    run(["train", *argv])
