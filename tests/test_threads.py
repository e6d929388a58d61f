"""One decision for torch's CPU threads (mof_llava/threads.py): an explicit setting, then
OMP_NUM_THREADS, then this process's share of the cores the machine does not keep busy."""

from __future__ import annotations

import logging

import pytest
import torch

from mof_llava import threads
from mof_llava.threads import ThreadsError, apply_cpu_threads, cap_workers, choose_cpu_threads


@pytest.fixture
def machine(monkeypatch):
    """A machine with `cores` processors, a 1-minute load average and LOCAL_WORLD_SIZE."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_machine(cores: int, load: float = 0.0, local_processes: int | None = None):
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
        if local_processes is not None:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))

    return set_machine


@pytest.mark.parametrize(
    ("cores", "load", "processes", "expected"),
    [
        (2, 0.2, None, 2),  # idle: every core
        (2, 1.3, None, 1),  # one core busy elsewhere
        (2, 5.8, None, 1),  # overloaded: never fewer than one
        (16, 0.0, 4, 4),  # torchrun --nproc_per_node 4: a quarter each
        (16, 8.5, 4, 2),  # ... of the 8 idle ones
        (2, 0.0, 4, 1),
    ],
)
def test_share_of_the_idle_cores(machine, cores, load, processes, expected):
    machine(cores, load, processes)
    assert choose_cpu_threads().threads == expected


def test_an_explicit_setting_wins_then_omp_num_threads(machine, monkeypatch):
    machine(16, 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_cpu_threads(5, "train.cpu_threads") == threads.ThreadChoice(5, "train.cpu_threads")
    choice = choose_cpu_threads(None, "train.cpu_threads")
    assert choice.threads == 3 and choice.reason == "OMP_NUM_THREADS"


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_settings_name_themselves(bad):
    with pytest.raises(ThreadsError, match=r"train\.cpu_threads must be a whole number of at least 1"):
        choose_cpu_threads(bad, "train.cpu_threads")


def test_bad_omp_num_threads_is_named(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    with pytest.raises(ThreadsError, match="OMP_NUM_THREADS must be"):
        choose_cpu_threads()


def test_apply_sets_torch_and_logs_one_line(machine, caplog):
    machine(4, 2.0)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="mof_llava.threads"):
            choice = apply_cpu_threads(None, "--threads")
        assert torch.get_num_threads() == choice.threads == 2
    finally:
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if r.name == "mof_llava.threads"]
    assert lines == [
        "torch CPU threads: 2 (4 cores, 2 busy (load average), 1 local process(es); set --threads to choose)"
    ]


def test_workers_are_capped_at_the_cores_with_a_note(machine, caplog):
    machine(2)
    with caplog.at_level(logging.WARNING, logger="mof_llava.threads"):
        assert cap_workers(4, "--workers") == 2
    assert [r.getMessage() for r in caplog.records] == [
        "--workers 4: using 2 worker(s), the 2 core(s) this process may use"
    ]
    caplog.clear()
    assert cap_workers(2, "--workers") == 2 and cap_workers(0, "--workers") == 0
    assert not caplog.records
