"""How many torch threads a CPU process uses. One decision, here, for train, eval, mine and demo.

torch's default (one thread per core, in every process) is wrong twice over on a shared CPU box: N
processes launched by torchrun each take all the cores, and when other jobs already keep the cores
busy, threads that wait on each other make every step many times slower (the demo's stage 2 took
5-14 s a step on a loaded 2-core machine, 0.1 s with one thread). So a CPU process takes its share of
the cores that are not already busy, at least one:

    threads = max(1, (cores - busy cores) // local processes)

where `cores` are the processors this process may run on, `busy cores` the whole part of the 1-minute
load average, and `local processes` torchrun's LOCAL_WORLD_SIZE. An explicit setting wins
(`train.cpu_threads`, `eval run --threads`, `mine embed --threads`), then OMP_NUM_THREADS. Data loader
workers use one thread each (torch sets that in every worker). CUDA runs are left alone.

The count follows the load, so two runs on one machine may differ in it, and with it in the last
bits of their sums; set `train.cpu_threads` where CPU runs are compared bit for bit (a resumed run
with the straight one, say).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger("mof_llava.threads")


class ThreadsError(ValueError):
    """A thread count that cannot work (zero, negative, not a number)."""


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # why this many, for the log line

    def describe(self) -> str:
        return f"torch CPU threads: {self.threads} ({self.reason})"


def available_cores() -> int:
    """The processors this process may run on (taskset / cgroup cpusets included)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores the rest of the machine keeps busy: the whole part of the 1-minute load average."""
    try:
        return int(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        return 0


def local_processes() -> int:
    """Processes of this run on this machine (torchrun / accelerate set LOCAL_WORLD_SIZE)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return max(1, int(value)) if value.isdigit() else 1


def choose_cpu_threads(requested: int | None = None, setting: str = "the thread setting") -> ThreadChoice:
    """The thread count of one CPU process. `requested` is the user's explicit setting (None: decide
    here); `setting` names where it came from, for messages."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ThreadsError(f"{setting} must be a whole number of at least 1, got {requested!r}")
        return ThreadChoice(requested, setting)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        if not omp.isdigit() or int(omp) < 1:
            raise ThreadsError(f"OMP_NUM_THREADS must be a whole number of at least 1, got {omp!r}")
        return ThreadChoice(int(omp), "OMP_NUM_THREADS")
    cores, busy, processes = available_cores(), busy_cores(), local_processes()
    threads = max(1, (cores - busy) // processes)
    return ThreadChoice(
        threads,
        f"{cores} cores, {min(busy, cores)} busy (load average), {processes} local process(es); "
        f"set {setting} to choose",
    )


def apply_cpu_threads(requested: int | None = None, setting: str = "the thread setting") -> ThreadChoice:
    """Choose, set `torch.set_num_threads` and log the choice in one line. Call it only on CPU runs."""
    import torch

    choice = choose_cpu_threads(requested, setting)
    torch.set_num_threads(choice.threads)
    logger.info(choice.describe())
    return choice


def cap_workers(requested: int, setting: str = "the worker setting") -> int:
    """Data-decoding worker processes: at most this process's share of the cores (more only queue
    up behind each other and take memory); 0 (decode in the main process) stays 0. Says so when it
    cuts the request."""
    share = max(1, available_cores() // local_processes())
    if requested <= share:
        return requested
    logger.warning(
        "%s %d: using %d worker(s), the %d core(s) this process may use%s",
        setting,
        requested,
        share,
        available_cores(),
        f" shared by {local_processes()} local processes" if local_processes() > 1 else "",
    )
    return share
