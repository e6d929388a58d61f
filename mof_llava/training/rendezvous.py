"""What the launcher's environment says about this process: its global rank (`launch_rank`), and the
rendezvous of a one-process run that no launcher started (`mof-llava train CONFIG`).

DeepSpeed initialises torch.distributed even for one process; without RANK, WORLD_SIZE, ... it tries
to discover them through MPI and fails with `No module named 'mpi4py'`. A plain one-process start is
given the values a launcher would set for a world of one.
"""

from __future__ import annotations

import os
import socket

RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Set by launchers that start several processes without torch's variables (MPI, AzureML, SageMaker,
# SLURM's srun); DeepSpeed discovers those worlds itself, so they are left alone.
_OTHER_LAUNCHERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "AZUREML_EXPERIMENT_ID", "SM_TRAINING_ENV")

# Where launchers put a process's global rank. torch's RANK first (torchrun, deepspeed, accelerate); MPI
# and SLURM starts set theirs before DeepSpeed derives RANK from them.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def launch_rank(environ=os.environ) -> int:
    """This process's global rank as the launcher set it (0 for a plain start)."""
    return next((int(environ[name]) for name in RANK_VARIABLES if environ.get(name, "").isdigit()), 0)


def set_single_process_rendezvous(environ=os.environ) -> bool:
    """Set RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT when no
    launcher set any of the rank variables. Returns whether it did."""
    if any(name in environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", *_OTHER_LAUNCHERS)):
        return False
    if int(environ.get("SLURM_NTASKS", "1")) > 1:
        return False
    environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    environ.setdefault("MASTER_ADDR", "127.0.0.1")
    environ.setdefault("MASTER_PORT", str(free_port()))
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
