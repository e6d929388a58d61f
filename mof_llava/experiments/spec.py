"""A sweep file: which runs an experiment consists of, how to evaluate them and how to launch them.

    # configs/experiments/sweeps/paper.yaml
    name: paper
    output_root: runs/paper                  # one folder per run below it
    evaluation: ../evaluation.yaml            # benchmarks and their data (or the mapping inline)
    seeds: [42]                               # every run once per seed (train.seed)
    launch: {launcher: deepspeed, nodes: 1, gpus_per_node: 8}
    arms:
      llava-1.5-7b: {stage1: ../llava15_7b/stage1.yaml, stage2: ../llava15_7b/stage2.yaml}
      a-mof-7b:
        stage1: ../amof_7b/stage1.yaml
        stage2: ../amof_7b/stage2.yaml
        grid: {model.mixer.alpha: [0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0]}

An arm is a pair of stage configs plus `set` (dotted key -> value, applied to both stages, or to one
with a `stage1.` / `stage2.` prefix) and `grid` (dotted key -> list of values, or label -> value for
values that are not scalars; every combination is one run). `set` and `grid` at the top apply to
every arm. Config paths are relative to the sweep file; `output_root`, and data paths as in run
configs, to the directory the jobs run in (the repository root). Unknown keys are errors naming the file and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..benchmarks import BENCHMARKS
from .layout import repo_root

LAUNCHERS = ("deepspeed", "torchrun", "python", "deepspeed-hostfile", "torchrun-multinode", "slurm")
SINGLE_NODE_LAUNCHERS = ("deepspeed", "torchrun", "python")
# Benchmarks a sweep can evaluate (mmvp-vlm scores CLIP models, not trained runs).
SWEEP_BENCHMARKS = tuple(b for b in BENCHMARKS if b != "mmvp-vlm")
STAGE_PREFIXES = ("stage1.", "stage2.")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+=-]*$")


class SweepError(ValueError):
    """A sweep file (or a change to it from the command line) that cannot be expanded."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One `mof-llava eval run BENCH --data DATA [ARGS]` per run."""

    name: str
    data: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationSpec:
    benchmarks: tuple[BenchmarkSpec, ...] = ()

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.benchmarks]


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    # wall-time limit per job: stage1, stage2, eval
    time: dict[str, str] = field(
        default_factory=lambda: {"stage1": "12:00:00", "stage2": "48:00:00", "eval": "06:00:00"}
    )
    cpus_per_task: int | None = None
    extra: tuple[str, ...] = ()  # more `#SBATCH` options, e.g. "--qos=high"


@dataclass(frozen=True)
class LaunchSpec:
    launcher: str = "deepspeed"
    nodes: int = 1
    gpus_per_node: int = 8
    hostfile: str = "hostfile"  # deepspeed-hostfile
    master_port: int = 29500
    setup: tuple[str, ...] = ()  # shell lines every job runs first (module load, source .venv/bin/activate)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)

    @property
    def world_size(self) -> int:
        """Training processes: the global batch must divide into them."""
        return 1 if self.launcher == "python" else self.nodes * self.gpus_per_node

    def check(self) -> None:
        """The job scripts of a one-node launcher start on one node only: more nodes would not be used."""
        if self.nodes > 1 and self.launcher in SINGLE_NODE_LAUNCHERS:
            raise SweepError(
                f"launcher {self.launcher} runs on one node, not {self.nodes}; for several nodes use "
                "deepspeed-hostfile, torchrun-multinode or slurm"
            )


@dataclass(frozen=True)
class GridAxis:
    """One swept key: its values and the label each gives the run's name."""

    key: str
    values: tuple[tuple[str, Any], ...]  # (label, value)


@dataclass(frozen=True)
class ArmSpec:
    name: str
    stage1: Path
    stage2: Path
    set: dict[str, Any] = field(default_factory=dict)
    grid: tuple[GridAxis, ...] = ()
    seeds: tuple[int, ...] | None = None
    evaluation: EvaluationSpec | None = None


@dataclass(frozen=True)
class SweepSpec:
    name: str
    source: Path  # the sweep file
    output_root: Path
    arms: tuple[ArmSpec, ...]
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    seeds: tuple[int, ...] | None = None
    set: dict[str, Any] = field(default_factory=dict)
    grid: tuple[GridAxis, ...] = ()
    launch: LaunchSpec = field(default_factory=LaunchSpec)


# -- reading -------------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    raw = _read_yaml(path)
    where = str(path)
    _check_keys(raw, {"name", "output_root", "evaluation", "seeds", "set", "grid", "launch", "arms"}, where)
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise SweepError(f"{where}: `arms` must map arm names to their stage configs")
    base = path.parent
    name = _label(str(raw.get("name") or path.stem), f"{where}: name")
    output_root = Path(str(raw.get("output_root") or f"runs/{name}"))
    return SweepSpec(
        name=name,
        source=path.resolve(),
        # relative to the checkout the jobs run in, like train.output_dir in run configs
        output_root=output_root if output_root.is_absolute() else repo_root() / output_root,
        arms=tuple(_arm(str(name), value, base, f"{where}: arms.{name}") for name, value in arms_raw.items()),
        evaluation=_evaluation(raw.get("evaluation"), base, f"{where}: evaluation"),
        seeds=_seeds(raw.get("seeds"), f"{where}: seeds"),
        set=_settings(raw.get("set"), f"{where}: set"),
        grid=_grid(raw.get("grid"), f"{where}: grid"),
        launch=_launch(raw.get("launch"), f"{where}: launch"),
    )


def _arm(name: str, raw: Any, base: Path, where: str) -> ArmSpec:
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping with stage1 and stage2")
    _check_keys(raw, {"stage1", "stage2", "set", "grid", "seeds", "evaluation"}, where)
    for stage in ("stage1", "stage2"):
        if not isinstance(raw.get(stage), str):
            raise SweepError(f"{where}: `{stage}` must name a run config file")
    evaluation = raw.get("evaluation")
    return ArmSpec(
        name=_label(name, where),
        stage1=(base / raw["stage1"]).resolve(),
        stage2=(base / raw["stage2"]).resolve(),
        set=_settings(raw.get("set"), f"{where}.set"),
        grid=_grid(raw.get("grid"), f"{where}.grid"),
        seeds=_seeds(raw.get("seeds"), f"{where}.seeds"),
        evaluation=None if evaluation is None else _evaluation(evaluation, base, f"{where}.evaluation"),
    )


def _evaluation(raw: Any, base: Path, where: str) -> EvaluationSpec:
    if raw is None:
        return EvaluationSpec()
    if isinstance(raw, str):
        path = base / raw
        where = str(path)
        raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping with `benchmarks`")
    _check_keys(raw, {"benchmarks"}, where)
    benchmarks = raw.get("benchmarks") or {}
    if not isinstance(benchmarks, dict):
        raise SweepError(
            f"{where}: `benchmarks` maps benchmark names ({', '.join(SWEEP_BENCHMARKS)}) to their data"
        )
    specs = []
    for name, value in benchmarks.items():
        here = f"{where}: benchmarks.{name}"
        if name not in SWEEP_BENCHMARKS:
            raise SweepError(f"{here}: unknown benchmark; choose from {list(SWEEP_BENCHMARKS)}")
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise SweepError(f"{here}: expected {{data: PATH}} (and optionally args: [...])")
        _check_keys(value, {"data", "args"}, here)
        args = value.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            raise SweepError(
                f"{here}.args: expected a list of command-line arguments, e.g. [--prompt, llava]"
            )
        specs.append(BenchmarkSpec(name, value["data"], tuple(str(a) for a in args)))
    return EvaluationSpec(tuple(specs))


def _launch(raw: Any, where: str) -> LaunchSpec:
    if raw is None:
        return LaunchSpec()
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping")
    _check_keys(
        raw, {"launcher", "nodes", "gpus_per_node", "hostfile", "master_port", "setup", "slurm"}, where
    )
    values: dict[str, Any] = {}
    for key in ("nodes", "gpus_per_node", "master_port"):
        if key in raw:
            values[key] = _positive_int(raw[key], f"{where}.{key}")
    if "hostfile" in raw:
        values["hostfile"] = str(raw["hostfile"])
    if "setup" in raw:
        values["setup"] = _strings(raw["setup"], f"{where}.setup")
    if "slurm" in raw:
        values["slurm"] = _slurm(raw["slurm"], f"{where}.slurm")
    launch = LaunchSpec(**values)
    return with_launcher(launch, raw.get("launcher", launch.launcher), where)


def with_launcher(launch: LaunchSpec, launcher: str, where: str = "launcher") -> LaunchSpec:
    if launcher not in LAUNCHERS:
        raise SweepError(f"{where}: launcher {launcher!r} is not one of {list(LAUNCHERS)}")
    return replace(launch, launcher=launcher)


def _slurm(raw: Any, where: str) -> SlurmSpec:
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping")
    _check_keys(raw, {"partition", "account", "time", "cpus_per_task", "extra"}, where)
    values: dict[str, Any] = {}
    for key in ("partition", "account"):
        if raw.get(key) is not None:
            values[key] = str(raw[key])
    if raw.get("time") is not None:
        time = raw["time"]
        if not isinstance(time, dict) or set(time) - {"stage1", "stage2", "eval"}:
            raise SweepError(f"{where}.time: expected {{stage1: HH:MM:SS, stage2: ..., eval: ...}}")
        values["time"] = {**SlurmSpec().time, **{k: str(v) for k, v in time.items()}}
    if raw.get("cpus_per_task") is not None:
        values["cpus_per_task"] = _positive_int(raw["cpus_per_task"], f"{where}.cpus_per_task")
    if raw.get("extra") is not None:
        values["extra"] = _strings(raw["extra"], f"{where}.extra")
    return SlurmSpec(**values)


# -- values ------------------------------------------------------------------------------------------
def _settings(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(
            f"{where}: expected a mapping of dotted keys to values, e.g. {{train.learning_rate: 1e-5}}"
        )
    for key in raw:
        check_dotted_key(str(key), where)
    return {str(k): v for k, v in raw.items()}


def _grid(raw: Any, where: str) -> tuple[GridAxis, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping of dotted keys to lists of values")
    return tuple(grid_axis(str(key), values, f"{where}.{key}") for key, values in raw.items())


def grid_axis(key: str, values: Any, where: str) -> GridAxis:
    """A grid axis from a list of scalars (labelled by their values) or a mapping label -> value."""
    check_dotted_key(key, where)
    if isinstance(values, dict):
        pairs = [(_label(str(label), where), value) for label, value in values.items()]
    elif isinstance(values, list):
        pairs = []
        for value in values:
            if isinstance(value, dict | list):
                raise SweepError(
                    f"{where}: {value!r} is not a scalar; name each value instead, e.g. {{clip-only: [...], both: [...]}}"
                )
            pairs.append((_label(value_label(value), where), value))
    else:
        raise SweepError(f"{where}: expected a list of values, got {values!r}")
    if not pairs:
        raise SweepError(f"{where}: no values")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise SweepError(f"{where}: repeated values {labels}")
    return GridAxis(key, tuple(pairs))


def value_label(value: Any) -> str:
    """How a swept scalar appears in a run's name: 0.5, 1, true, interleave."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_dotted_key(key: str, where: str) -> None:
    bare = key[len("stage1.") :] if key.startswith(STAGE_PREFIXES) else key
    section = bare.split(".", 1)[0]
    if section not in ("name", "model", "data", "train") or not all(bare.split(".")):
        raise SweepError(
            f"{where}: {key!r} is not a run-config key (model.*, data.*, train.*, optionally prefixed by stage1. or stage2.)"
        )


def _seeds(raw: Any, where: str) -> tuple[int, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw)
    ):
        raise SweepError(f"{where}: expected a list of integer seeds, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise SweepError(f"{where}: repeated seeds {raw}")
    return tuple(raw)


def parse_seeds(text: str) -> tuple[int, ...]:
    """`--seeds 1,2,3` from the command line."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seeds {text!r}: expected integers separated by commas, e.g. 1,2,3") from None
    result = _seeds(seeds, "--seeds")
    assert result is not None
    return result


def parse_assignment(text: str, flag: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line, VALUE read as YAML (`[0, 0.5]`, `1e-5`, `{mode: interleave}`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SweepError(f"{flag} {text!r}: expected KEY=VALUE, e.g. {flag} model.mixer.alpha=0.5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise SweepError(f"{flag} {text!r}: value is not valid YAML ({err})") from None
    check_dotted_key(key.strip(), flag)
    return key.strip(), parsed


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SweepError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{where}: expected a list of strings")
    return tuple(value)


def _label(text: str, where: str) -> str:
    if not _LABEL.match(text):
        raise SweepError(
            f"{where}: {text!r} cannot name a run folder; use letters, digits and . + = - (starting with a letter or digit)"
        )
    return text


def _check_keys(raw: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(map(str, raw)) - known)
    if unknown:
        raise SweepError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SweepError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping, got {type(raw).__name__}")
    return raw
