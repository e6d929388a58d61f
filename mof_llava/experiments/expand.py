"""A sweep into runs: every arm x grid point x seed becomes one run folder with its own resolved
stage-1 and stage-2 configs, whose outputs live inside that folder and whose stage 2 loads that
folder's stage-1 adapters.

The overrides of a run go through `load_run_config(path, ["key=value", ...])`, the same path as
`mof-llava train CONFIG key=value`, so a sweep value means exactly what it means on the command line
(it replaces the key's value). They are applied in this order: the sweep's `set`, the arm's `set`,
the grid point, the seed, then the run's own name, output folder and (stage 2) adapters.

A preference arm's run starts from the stage-2 model of its base arm's run with the same seed: its
`negatives.*` settings make the NegativesJob (the seed also seeds it; the output is the run's
negatives/pairs.jsonl), the other unprefixed keys go to its preference config, whose model, pairs and
output folder the sweep decides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .layout import RunLayout, RunRecord, Step, repo_root
from .spec import (
    NEGATIVES_PREFIX,
    STAGE_PREFIXES,
    ArmSpec,
    EvaluationSpec,
    GridAxis,
    SweepError,
    SweepSpec,
    grid_axis,
)

if TYPE_CHECKING:
    from ..preference.negatives import NegativesJob
    from ..training.config import RunConfig

TRAIN_SEED = "train.seed"


# what the sweep decides for a preference run's negatives itself
_NEGATIVES_DECIDED = ("output", "model", "progress")


@dataclass
class PlannedRun:
    record: RunRecord
    layout: RunLayout
    stage1: RunConfig | None  # None for a preference run
    stage2: RunConfig | None
    evaluation: EvaluationSpec
    preference: RunConfig | None = None
    negatives: NegativesJob | None = None
    base: PlannedRun | None = None  # the run whose stage-2 model a preference run starts from

    @property
    def name(self) -> str:
        return self.record.run

    @property
    def steps(self) -> list[Step]:
        return self.record.steps

    @property
    def configs(self) -> dict[str, RunConfig]:
        """The run's trained stages by file stem: stage1 and stage2, or preference."""
        if self.preference is not None:
            return {"preference": self.preference}
        return {"stage1": self.stage1, "stage2": self.stage2}

    @property
    def trained(self) -> str:
        """The folder of the run's last stage, whose model/ is evaluated."""
        return "preference" if self.preference is not None else "stage2"


def modify(
    spec: SweepSpec,
    grid: list[tuple[str, Any]] = (),
    settings: list[tuple[str, Any]] = (),
    seeds: tuple[int, ...] | None = None,
    output_root: str | Path | None = None,
) -> SweepSpec:
    """The sweep with command-line additions: more grid axes and settings for every arm, other seeds,
    another output folder. The command line wins: a `--grid` key replaces that axis of every arm, a
    `--set` key replaces the arm's `set` of it, `--seeds` the arms' own seeds, and a `--set` of a
    swept key is refused."""
    axes = {a.key: a for a in spec.grid}
    for key, values in grid:
        axes[key] = grid_axis(key, values, f"--grid {key}")
    cli_grid, cli_set = {key for key, _ in grid}, dict(settings)
    arms = tuple(
        replace(
            arm,
            grid=tuple(a for a in arm.grid if a.key not in cli_grid),
            set={k: v for k, v in arm.set.items() if k not in cli_set},
            seeds=None if seeds is not None else arm.seeds,  # --seeds replaces every arm's seeds too
        )
        for arm in spec.arms
    )
    seeds = seeds if seeds is not None else spec.seeds
    seeded = [k for k in cli_set if _is_seed_key(k)]
    if seeded and (seeds is not None or any(arm.seeds is not None for arm in arms)):
        raise SweepError(
            f"--set {seeded[0]}: the sweep's seeds set train.seed of every run (the value would be replaced); "
            f"give it with --seeds {cli_set[seeded[0]]}"
        )
    for arm in arms:
        swept = sorted(set(cli_set) & ({a.key for a in axes.values()} | {a.key for a in arm.grid}))
        if swept:
            raise SweepError(
                f"--set {swept[0]}: arm {arm.name} sweeps this key; give its values with --grid {swept[0]}=[...]"
            )
    return replace(
        spec,
        arms=arms,
        grid=tuple(axes.values()),
        set={**spec.set, **cli_set},
        seeds=seeds,
        output_root=Path(output_root).resolve() if output_root is not None else spec.output_root,
    )


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the sweep, configs resolved and checked (types, stages, batch divisibility)."""
    runs: list[PlannedRun] = []
    for arm in spec.arms:  # a base arm comes before its preference arms (spec._check_bases)
        runs += _expand_arm(spec, arm, runs)
    names = [run.name for run in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(
            f"{spec.source}: several runs are named {repeated}; give the arms or grid values distinct labels"
        )
    return runs


def select(runs: list[PlannedRun], patterns: list[str] | None) -> list[PlannedRun]:
    """The runs whose name or group matches one of the shell patterns (all runs without patterns)."""
    if not patterns:
        return runs
    chosen = [r for r in runs if any(fnmatch(r.name, p) or fnmatch(r.record.group, p) for p in patterns)]
    if not chosen:
        raise SweepError(f"--only {patterns}: no run matches; runs are {[r.name for r in runs]}")
    return chosen


def _arm_axes(spec: SweepSpec, arm: ArmSpec) -> dict[str, GridAxis]:
    """The arm's grid axes (the sweep's and its own); its own keys checked against its kind."""
    own = [*arm.set, *(a.key for a in arm.grid)]
    wrong = (
        [k for k in own if k.startswith(STAGE_PREFIXES)]
        if arm.preference is not None
        else [k for k in own if k.startswith(NEGATIVES_PREFIX)]
    )
    if wrong:
        why = (
            "a preference arm has one stage (no prefix)"
            if arm.preference
            else "only a preference arm makes negatives"
        )
        raise SweepError(f"{spec.source}: arm {arm.name} sets {wrong[0]}, but {why}")
    axes = {a.key: a for a in spec.grid} | {a.key: a for a in arm.grid}
    if arm.preference is None:  # the sweep's negatives axes are its preference arms'
        axes = {k: a for k, a in axes.items() if not k.startswith(NEGATIVES_PREFIX)}
    if TRAIN_SEED in axes:
        raise SweepError(
            f"{spec.source}: sweep seeds with `seeds: [...]` (or --seeds), not a grid over {TRAIN_SEED}"
        )
    return axes


def _expand_arm(spec: SweepSpec, arm: ArmSpec, earlier: list[PlannedRun]) -> list[PlannedRun]:
    axes = _arm_axes(spec, arm)
    seeds = arm.seeds if arm.seeds is not None else spec.seeds
    seeded = sorted(k for k in {**spec.set, **arm.set} if _is_seed_key(k))
    if seeded and seeds is not None:
        raise SweepError(
            f"{spec.source}: arm {arm.name} sets {seeded[0]}, which its seeds {list(seeds)} replace; "
            "give the seed in `seeds: [...]` (or --seeds)"
        )
    evaluation = arm.evaluation if arm.evaluation is not None else spec.evaluation
    runs = []
    for point in itertools.product(*(axis.values for axis in axes.values())) if axes else [()]:
        chosen = dict(zip(axes, point))  # key -> (label, value)
        group = "_".join([arm.name] + [f"{_axis_label(k, axes)}-{label}" for k, (label, _) in chosen.items()])
        for seed in seeds if seeds is not None else [None]:
            name = group if seed is None else f"{group}_seed-{seed}"
            layout = RunLayout(spec.output_root / name)
            settings = {**spec.set, **arm.set, **{k: v for k, (_, v) in chosen.items()}}
            if seed is not None:
                settings[TRAIN_SEED] = seed
            record = RunRecord(
                sweep=spec.name,
                run=name,
                group=group,
                arm=arm.name,
                point={k: v for k, (_, v) in chosen.items()},
                seed=seed,
                benchmarks=evaluation.names,
            )
            if arm.preference is not None:
                runs.append(_preference_run(arm, settings, layout, record, evaluation, earlier))
            else:
                runs.append(_two_stage_run(arm, settings, layout, record, evaluation))
    return runs


def _two_stage_run(arm, settings, layout, record, evaluation) -> PlannedRun:
    settings = {k: v for k, v in settings.items() if not k.startswith(NEGATIVES_PREFIX)}
    stage1, stage2 = _resolve_stages(arm, settings, layout, record.run)
    record.seed = record.seed if record.seed is not None else stage2.train.seed
    record.steps = layout.steps(evaluation.names, lora=stage2.train.lora is not None)
    return PlannedRun(record, layout, stage1, stage2, evaluation)


def _preference_run(arm, settings, layout, record, evaluation, earlier) -> PlannedRun:
    """A run of a preference arm: negatives from its base run's model, then the preference stage."""
    from ..training.config import ConfigError, load_run_config

    name = record.run
    wanted = arm.base if record.seed is None else f"{arm.base}_seed-{record.seed}"  # one model per seed
    base = next((r for r in earlier if r.record.arm == arm.base and r.name == wanted), None)
    if base is None:
        raise SweepError(
            f"run {name}: arm {arm.base} has no run {wanted} to start from (it must share the seeds, without a grid)"
        )
    negatives = _negatives_job(arm, settings, layout, base, record.seed, name)
    overrides = [
        _override(k, v) for k, v in _for_stage(settings, 0).items() if not k.startswith(NEGATIVES_PREFIX)
    ]
    overrides += [
        _override("name", f"{name}-preference"),
        _override("train.output_dir", str(layout.root / "preference")),
        _override("model.init_from", str(base.layout.root / base.trained / "model")),
        _override("data.data_path", str(negatives.output)),
    ]
    if negatives.image_folder is not None:  # the pairs name their images as the seed records do
        overrides.append(_override("data.image_folder", negatives.image_folder))
    try:
        config = load_run_config(arm.preference, overrides)
    except ConfigError as err:
        raise SweepError(f"run {name}, preference: {err}") from None
    if config.train.stage != "preference":
        raise SweepError(
            f"run {name}: {arm.preference} must be a preference config, got {config.train.stage}"
        )
    record.seed = record.seed if record.seed is not None else config.train.seed
    record.base = base.record.group
    record.steps = layout.preference_steps(evaluation.names, lora=config.train.lora is not None)
    return PlannedRun(record, layout, None, None, evaluation, config, negatives, base)


def _negatives_job(arm, settings, layout, base, seed, name) -> NegativesJob:
    import dataclasses

    from ..preference.negatives import NegativesJob
    from ..typed_config import ConfigError, validate

    values = dict(arm.negatives)
    values |= {k[len(NEGATIVES_PREFIX) :]: v for k, v in settings.items() if k.startswith(NEGATIVES_PREFIX)}
    known = {f.name for f in dataclasses.fields(NegativesJob)} - set(_NEGATIVES_DECIDED)
    unknown = sorted(set(values) - known)
    if unknown:
        raise SweepError(
            f"run {name}: negatives {unknown}: not a negatives setting the sweep passes on; choose from {sorted(known)}"
        )
    values |= {"output": str(layout.negatives), "model": str(base.layout.root / base.trained / "model")}
    if seed is not None:
        if "seed" in values:
            raise SweepError(
                f"run {name}: negatives seed {values['seed']}: the run's seed {seed} seeds its negatives"
            )
        values["seed"] = seed
    try:
        return validate(NegativesJob, values, f"run {name}: negatives")
    except ConfigError as err:
        raise SweepError(str(err)) from None


def _is_seed_key(key: str) -> bool:
    """train.seed, for both stages or (stageN. prefix) one, or the negatives' seed (the run's seed)."""
    return key in (TRAIN_SEED, f"stage1.{TRAIN_SEED}", f"stage2.{TRAIN_SEED}", f"{NEGATIVES_PREFIX}seed")


def _axis_label(key: str, axes: dict[str, GridAxis]) -> str:
    """The last part of the key (alpha for model.mixer.alpha), or the whole key when two axes share it."""
    short = key.split(".")[-1]
    clash = sum(k.split(".")[-1] == short for k in axes) > 1
    return key.replace(".", "-") if clash else short


def _resolve_stages(arm: ArmSpec, settings: dict[str, Any], layout: RunLayout, name: str):
    from ..training.config import ConfigError, load_run_config

    configs = []
    for stage, path in ((1, arm.stage1), (2, arm.stage2)):
        overrides = [_override(k, v) for k, v in _for_stage(settings, stage).items()]
        overrides += [
            _override("name", f"{name}-stage{stage}"),
            _override("train.output_dir", str(layout.output_dir(stage))),
        ]
        if stage == 2:
            overrides.append(_override("model.adapters_from", str(layout.adapters)))
        try:
            configs.append(load_run_config(path, overrides))
        except ConfigError as err:
            raise SweepError(f"run {name}, stage {stage}: {err}") from None
    _check_stages(name, *configs)
    return configs[0], configs[1]


def _for_stage(settings: dict[str, Any], stage: int) -> dict[str, Any]:
    """Unprefixed keys for both stages, `stageN.` keys for stage N only (these win); stage 0 (a
    preference run) takes the unprefixed keys only."""
    both = {k: v for k, v in settings.items() if not k.startswith(STAGE_PREFIXES)}
    if stage == 0:  # the sweep's stage1./stage2. keys are its two-stage arms', never a preference run's
        return both
    mine = f"stage{stage}."
    return both | {k[len(mine) :]: v for k, v in settings.items() if k.startswith(mine)}


def _override(key: str, value: Any) -> str:
    """`key=value` with the value written as one line of YAML that reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    if "\n" in text or yaml.safe_load(text) != value:
        raise SweepError(f"{key}: the value {value!r} cannot be passed as an override")
    return f"{key}={text}"


def _check_stages(name: str, stage1, stage2) -> None:
    if stage1.train.stage != "pretrain" or stage2.train.stage != "finetune":
        raise SweepError(
            f"run {name}: stage1 must be a pretrain config and stage2 a finetune config, got "
            f"{stage1.train.stage} and {stage2.train.stage}"
        )
    if stage2.model.init_from is None:
        for part in ("llm", "towers", "mixer"):
            if getattr(stage1.model, part) != getattr(stage2.model, part):
                raise SweepError(
                    f"run {name}: model.{part} differs between stage 1 and stage 2 "
                    f"({getattr(stage1.model, part)!r} vs {getattr(stage2.model, part)!r}); stage 2 could not load "
                    "the stage-1 adapters"
                )


def check_batches(runs: list[PlannedRun], world_size: int) -> None:
    """Each stage's global batch must divide into per-device batches on `world_size` processes."""
    from ..training.config import ConfigError
    from ..training.run import gradient_accumulation_steps

    for run in runs:
        for stage, config in run.configs.items():
            try:
                gradient_accumulation_steps(
                    config.train.global_batch_size, config.train.per_device_batch_size, world_size
                )
            except ConfigError as err:
                label = stage.replace("stage", "stage ") if stage != "preference" else stage
                raise SweepError(f"run {run.name}, {label}: {err}") from None


def config_text(config, run: PlannedRun, stage: int | str, source: Path) -> str:
    what = f"stage {stage}" if isinstance(stage, int) else stage
    header = (
        f"# {run.name}, {what}: resolved from {source} by `mof-llava sweep plan`.\n"
        f"# Plan the sweep again rather than editing this file (a changed file is refused once the run started).\n"
    )
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False)


def missing_inputs(runs: list[PlannedRun]) -> list[str]:
    """Local data files, folders and benchmark data the runs name that do not exist (hub ids such as
    lmsys/vicuna-7b-v1.5 are not checked)."""
    root = repo_root()
    missing: dict[str, str] = {}
    for run in runs:
        made = {str(run.negatives.output)} if run.negatives is not None else set()  # made by the run itself
        for config in run.configs.values():
            for role, path in (
                ("data.data_path", config.data.data_path),
                ("data.image_folder", config.data.image_folder),
            ):
                if (
                    path and str(path) not in made and not (root / path).exists()
                ):  # an absolute path stays itself
                    missing.setdefault(str(path), role)
        if run.negatives is not None:
            for role, path in (
                ("negatives.data", run.negatives.data),
                ("negatives.image_folder", run.negatives.image_folder),
            ):
                if path and not (root / path).exists():
                    missing.setdefault(str(path), role)
        for bench in run.evaluation.benchmarks:
            if not (root / bench.data).exists():
                missing.setdefault(bench.data, f"evaluation {bench.name}")
    return [f"{path} ({role})" for path, role in missing.items()]
