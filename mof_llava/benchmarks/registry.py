"""The benchmark registry: one module per benchmark, found by name, imported on first use.

A benchmark module defines `BENCHMARK = Benchmark(...)`: its name, a one-line description, an
options dataclass (data paths, prompt variant, grader, judge ... with defaults and help in the
fields' metadata, see `mof_llava.options.option`), how those options become an `EvalTask` and how
they score an answer file. `mof-llava eval` builds its subcommands, flags and help from these entries, so a new
benchmark is one new module plus one line in `MODULES`, the one list of benchmarks (its order is
the paper's, and that of `--help`); tests/benchmarks/test_registry.py checks that every module of
this package defining a `BENCHMARK` is in it. The library verb that runs an entry is
`mof_llava.benchmarks.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import group, option  # also re-exported: benchmark modules declare their options with them

if TYPE_CHECKING:
    from .judge import ChatJudge
    from .runner import GenerateFn
    from .task import EvalTask

# benchmark name -> the module that defines its `BENCHMARK`; the order of `--help`
MODULES: dict[str, str] = {
    "mmvp": "mof_llava.benchmarks.mmvp",
    "mmvp-vlm": "mof_llava.benchmarks.mmvp_vlm",
    "pope": "mof_llava.benchmarks.pope",
    "mmbench": "mof_llava.benchmarks.mmbench",
    "gqa": "mof_llava.benchmarks.gqa",
    "naturalbench": "mof_llava.benchmarks.naturalbench",
    "cvbench": "mof_llava.benchmarks.cvbench",
    "rec": "mof_llava.benchmarks.rec",
    "vsr": "mof_llava.benchmarks.vsr",
}

RUNNING = frozenset({"run", "merge"})  # the actions that build the EvalTask


class BenchmarkRegistryError(LookupError):
    """A benchmark name or module that the registry cannot serve."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


@dataclass(frozen=True)
class JudgeOptions:
    """The optional LLM judge (docs/evaluation.md, "LLM judge")."""

    url: str | None = option(None, "OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    model: str | None = option(None, "model name sent to the judge endpoint")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the key")
    temperature: float = option(
        0.0,
        "sampling temperature of the judge (default 0; the official MMVP grader used 0.2)",
        parse=non_negative_float,
    )


def judge_group() -> Any:
    return group("LLM judge (off unless --judge-url is given)", JudgeOptions)


def make_judge(options: JudgeOptions, grader: str | None = None) -> ChatJudge | None:
    """The judge the options ask for (None when off); `grader` "judge" requires one."""
    from .judge import ChatJudge, JudgeConfig

    if not options.url:
        if grader == "judge":
            raise SystemExit("--grader judge needs --judge-url and --judge-model")
        return None
    if not options.model:
        raise SystemExit("--judge-url needs --judge-model")
    return ChatJudge(JudgeConfig(options.url, options.model, options.api_key_env, options.temperature))


@dataclass(frozen=True)
class Answerer:
    """How a kind of model answers a task's questions for the runner (default: a mof-llava
    checkpoint generating text, `evaluate.MLLM`; MMVP-VLM's is a CLIP image-text scorer)."""

    describe: Callable[[Any, str], dict[str, Any]]  # (EvalConfig, device) -> what metrics record
    load: Callable[[EvalTask, Any, str], GenerateFn]  # (task, EvalConfig, device) -> batch answerer


@dataclass(frozen=True)
class Benchmark:
    """What `mof-llava eval` needs to know about one benchmark."""

    name: str
    description: str  # one line: what it is and what its `score` is
    options: type  # dataclass of `option` fields
    score: Callable[[Any, Path], dict[str, Any]]  # (options, answer file) -> metrics
    # (options, max_new_tokens or None) -> the task the runner generates answers for (run, merge)
    build_task: Callable[[Any, int | None], EvalTask] | None = None
    answerer: Answerer | None = None  # the model kind that answers (default: a mof-llava checkpoint)
    run_flags: type | None = None  # dataclass of `eval run`'s model flags (default: run_options.MllmRunFlags)
    after_score: Callable[[Any, Path, dict[str, Any]], None] | None = None  # `eval score` extras
    export: Callable[[Path, Path | None, Path], None] | None = None  # `eval export`: (answers, data, out)
    # the task of LION's mixture of adapters its questions belong to (a model with `moa` routes them there)
    moa_task: str = "image"


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def get(name: str) -> Benchmark:
    module_name = MODULES.get(name)
    if module_name is None:
        raise BenchmarkRegistryError(f"unknown benchmark {name!r}; choose from {list(MODULES)}")
    benchmark = getattr(importlib.import_module(module_name), "BENCHMARK", None)
    if not isinstance(benchmark, Benchmark) or benchmark.name != name:
        raise BenchmarkRegistryError(f"{module_name}: BENCHMARK must be a Benchmark named {name!r}")
    return benchmark


def benchmarks() -> list[Benchmark]:
    return [get(name) for name in MODULES]
