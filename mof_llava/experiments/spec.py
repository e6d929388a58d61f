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
configs, to the directory the jobs run in (the repository root). Keys and types are checked by pydantic
(mof_llava/typed_config.py): unknown keys and wrong types are errors naming the file and key.

A *preference arm* trains BPO on the stage-2 model of an arm listed before it (`base`): per run, a
negatives step (`mof-llava preference negatives`, its settings under `negatives:`, swept as
`negatives.<field>`) and the preference stage (`preference:`, a `train.stage: preference` config):

      bpo-i-mof-7b:
        base: i-mof-7b
        preference: ../bpo_imof_7b/preference.yaml
        negatives: {data: data/bpo/seeds.jsonl, image_folder: data/coco}
        grid: {negatives.target: [both, clip, dinov2]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field

from ..benchmarks import BENCHMARKS
from ..typed_config import STRICT_KEYS, ConfigError, read_yaml_mapping, validate, yaml_value
from .layout import repo_root

T = TypeVar("T")

LAUNCHERS = ("deepspeed", "torchrun", "python", "deepspeed-hostfile", "torchrun-multinode", "slurm")
SINGLE_NODE_LAUNCHERS = ("deepspeed", "torchrun", "python")
# Benchmarks a sweep can evaluate (mmvp-vlm scores CLIP models, not trained runs).
SWEEP_BENCHMARKS = tuple(b for b in BENCHMARKS if b != "mmvp-vlm")
STAGE_PREFIXES = ("stage1.", "stage2.")
NEGATIVES_PREFIX = "negatives."  # a preference arm's negatives settings (NegativesJob fields)
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


SLURM_TIMES = {"stage1": "12:00:00", "stage2": "48:00:00", "eval": "06:00:00"}


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _with_default_times(value: Any) -> Any:
    """The jobs a file gives no time keep the default; a time YAML read as a number is passed as its text."""
    if isinstance(value, dict):
        return {**SLURM_TIMES, **{k: v if v is None else str(v) for k, v in value.items()}}
    return value


Lines = Annotated[tuple[str, ...], BeforeValidator(_one_or_many)]  # one string or a list of them
AtLeast1 = Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class SlurmSpec:
    __pydantic_config__ = STRICT_KEYS

    partition: str | None = None
    account: str | None = None
    # wall-time limit per job: stage1, stage2, eval
    time: Annotated[dict[Literal["stage1", "stage2", "eval"], str], BeforeValidator(_with_default_times)] = field(
        default_factory=lambda: dict(SLURM_TIMES)
    )
    cpus_per_task: AtLeast1 | None = None
    extra: Lines = ()  # more `#SBATCH` options, e.g. "--qos=high"


@dataclass(frozen=True)
class LaunchSpec:
    __pydantic_config__ = STRICT_KEYS

    launcher: str = "deepspeed"  # checked by with_launcher, which the --launcher flag shares
    nodes: AtLeast1 = 1
    gpus_per_node: AtLeast1 = 8
    hostfile: str = "hostfile"  # deepspeed-hostfile
    master_port: AtLeast1 = 29500
    setup: Lines = ()  # shell lines every job runs first (module load, source .venv/bin/activate)
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
    stage1: Path | None  # None for a preference arm
    stage2: Path | None
    set: dict[str, Any] = field(default_factory=dict)
    grid: tuple[GridAxis, ...] = ()
    seeds: tuple[int, ...] | None = None
    evaluation: EvaluationSpec | None = None
    base: str | None = None  # a preference arm: the arm whose stage-2 model it starts from
    preference: Path | None = None  # its train.stage: preference config
    negatives: dict[str, Any] = field(default_factory=dict)  # NegativesJob fields (data, target, ...)


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


# -- the files' keys (their values are checked below, where the messages need more than a type) ------
@dataclass
class _ArmFile:
    __pydantic_config__ = STRICT_KEYS

    stage1: Any = None
    stage2: Any = None
    set: Any = None
    grid: Any = None
    seeds: Any = None
    evaluation: Any = None
    base: str | None = None
    preference: str | None = None
    negatives: dict[str, Any] | None = None


@dataclass
class _SweepFile:
    __pydantic_config__ = STRICT_KEYS

    arms: dict[str, _ArmFile] | None = None
    name: str | int | None = None
    output_root: str | None = None
    evaluation: Any = None
    seeds: Any = None
    set: Any = None
    grid: Any = None
    launch: LaunchSpec | None = None


@dataclass
class _BenchmarkFile:
    __pydantic_config__ = STRICT_KEYS

    data: str
    args: list[str | int | float] = field(default_factory=list)


@dataclass
class _EvaluationFile:
    __pydantic_config__ = STRICT_KEYS

    benchmarks: dict[str, Any] | None = None


def _checked(cls: type[T], raw: Any, where: str) -> T:
    try:
        return validate(cls, raw, where)
    except ConfigError as err:
        raise SweepError(str(err)) from None


# -- reading -------------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    where = str(path)
    raw = _checked(_SweepFile, _read_yaml(path), where)
    if not raw.arms:
        raise SweepError(f"{where}: `arms` must map arm names to their stage configs")
    base = path.parent
    name = _label(str(raw.name or path.stem), f"{where}: name")
    output_root = Path(raw.output_root or f"runs/{name}")
    launch = raw.launch or LaunchSpec()
    return SweepSpec(
        name=name,
        source=path.resolve(),
        # relative to the checkout the jobs run in, like train.output_dir in run configs
        output_root=output_root if output_root.is_absolute() else repo_root() / output_root,
        arms=_check_bases(
            tuple(_arm(str(name), value, base, f"{where}: arms.{name}") for name, value in raw.arms.items()),
            where,
        ),
        evaluation=_evaluation(raw.evaluation, base, f"{where}: evaluation"),
        seeds=_seeds(raw.seeds, f"{where}: seeds"),
        set=_settings(raw.set, f"{where}: set"),
        grid=_grid(raw.grid, f"{where}: grid"),
        launch=with_launcher(launch, launch.launcher, f"{where}: launch"),
    )


def _arm(name: str, raw: _ArmFile, base: Path, where: str) -> ArmSpec:
    preference = raw.base is not None or raw.preference is not None or raw.negatives is not None
    for key in ("base", "preference", "negatives") if preference else ():
        if getattr(raw, key) is None:
            what = "a mapping of negatives settings with `data`" if key == "negatives" else "a name"
            raise SweepError(f"{where}: `{key}` is missing ({what}) in a preference arm")
    for stage in () if preference else ("stage1", "stage2"):
        if not isinstance(getattr(raw, stage), str):
            raise SweepError(f"{where}: `{stage}` must name a run config file")
    if preference and (raw.stage1 is not None or raw.stage2 is not None):
        raise SweepError(
            f"{where}: a preference arm (base, preference, negatives) has no stage1 or stage2 of its own"
        )
    if preference and "data" not in raw.negatives:
        raise SweepError(f"{where}.negatives: `data` (the seed records) is missing")
    return ArmSpec(
        name=_label(name, where),
        stage1=None if preference else (base / raw.stage1).resolve(),
        stage2=None if preference else (base / raw.stage2).resolve(),
        base=raw.base,
        preference=(base / raw.preference).resolve() if preference else None,
        negatives={str(k): v for k, v in (raw.negatives or {}).items()},
        set=_settings(raw.set, f"{where}.set"),
        grid=_grid(raw.grid, f"{where}.grid"),
        seeds=_seeds(raw.seeds, f"{where}.seeds"),
        evaluation=None if raw.evaluation is None else _evaluation(raw.evaluation, base, f"{where}.evaluation"),
    )


def _check_bases(arms: tuple[ArmSpec, ...], where: str) -> tuple[ArmSpec, ...]:
    """A preference arm starts from an arm listed before it (run_all.sh runs the runs in order),
    one with stage configs and no grid (each seed's run is then one model)."""
    earlier: dict[str, ArmSpec] = {}
    for arm in arms:
        if arm.base is not None:
            base = earlier.get(arm.base)
            if base is None or base.stage2 is None:
                raise SweepError(
                    f"{where}: arms.{arm.name}.base: {arm.base!r} is not a two-stage arm listed before it "
                    f"(listed before: {list(earlier)})"
                )
            if base.grid:
                raise SweepError(
                    f"{where}: arms.{arm.name}.base: arm {arm.base} has a grid; a base must be one model"
                )
        earlier[arm.name] = arm
    return arms


def _evaluation(raw: Any, base: Path, where: str) -> EvaluationSpec:
    if raw is None:
        return EvaluationSpec()
    if isinstance(raw, str):
        path = base / raw
        where = str(path)
        raw = _read_yaml(path)
    benchmarks = _checked(_EvaluationFile, raw, where).benchmarks or {}
    specs = []
    for name, value in benchmarks.items():
        here = f"{where}: benchmarks.{name}"
        if name not in SWEEP_BENCHMARKS:
            raise SweepError(f"{here}: unknown benchmark; choose from {list(SWEEP_BENCHMARKS)}")
        bench = _checked(_BenchmarkFile, value, here)
        specs.append(BenchmarkSpec(name, bench.data, tuple(str(a) for a in bench.args)))
    return EvaluationSpec(tuple(specs))


def with_launcher(launch: LaunchSpec, launcher: str, where: str = "launcher") -> LaunchSpec:
    if launcher not in LAUNCHERS:
        raise SweepError(f"{where}: launcher {launcher!r} is not one of {list(LAUNCHERS)}")
    return replace(launch, launcher=launcher)


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
    if section not in ("name", "model", "data", "train", "negatives") or not all(bare.split(".")):
        raise SweepError(
            f"{where}: {key!r} is not a run-config key (model.*, data.*, train.*, optionally prefixed by stage1. or "
            "stage2.; negatives.* in a preference arm)"
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
        parsed = yaml_value(value, f"{flag} {text!r}")
    except ConfigError as err:
        raise SweepError(str(err)) from None
    check_dotted_key(key.strip(), flag)
    return key.strip(), parsed


def _label(text: str, where: str) -> str:
    if not _LABEL.match(text):
        raise SweepError(
            f"{where}: {text!r} cannot name a run folder; use letters, digits and . + = - (starting with a letter or digit)"
        )
    return text


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return read_yaml_mapping(path)
    except ConfigError as err:
        raise SweepError(str(err)) from None
