"""Launch `mof-llava eval run` as a script, e.g. sharded over 8 GPUs:

    torchrun --nproc_per_node 8 eval/run.py pope --model CKPT --data playground/data/eval/pope

Arguments are those of `mof-llava eval run` (see `mof-llava eval run --help`).
"""

import sys

from mof_llava.cli import run

if __name__ == "__main__":
    run(["eval", "run", *sys.argv[1:]])
