"""Planning a sweep: the run folders on disk (resolved configs, run records, job scripts).

Planning again is safe: it rewrites configs and scripts, but refuses to change the resolved config
of a run that has started (its stage outputs or status files exist) unless forced, because its
checkpoints, adapters and scores belong to the old config.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import write_text_atomic
from .expand import PlannedRun, check_batches, config_text, expand, missing_inputs, select
from .scripts import SweepScripts, check_slurm_paths, write_scripts
from .spec import SweepError, SweepSpec

PLAN_FILE = "plan.json"


@dataclass
class Plan:
    spec: SweepSpec
    runs: list[PlannedRun]
    selected: list[PlannedRun]
    scripts: SweepScripts
    missing: list[str]  # local data the runs name that does not exist (yet)

    @property
    def root(self) -> Path:
        return self.spec.output_root


def plan_sweep(spec: SweepSpec, only: list[str] | None = None, force: bool = False) -> Plan:
    spec.launch.check()
    runs = expand(spec)
    check_batches(runs, spec.launch.world_size)
    if spec.launch.launcher == "slurm":
        check_slurm_paths(runs)  # before anything is written
    selected = select(runs, only)
    for run in runs:
        write_run(spec, run, force)
    scripts = write_scripts(spec, runs, selected, spec.output_root)
    plan = Plan(spec, runs, selected, scripts, missing_inputs(selected))
    _write_plan_file(plan, only)
    return plan


def write_run(spec: SweepSpec, run: PlannedRun, force: bool = False) -> None:
    from ..training.config import load_run_config

    layout = run.layout
    arm = next(a for a in spec.arms if a.name == run.record.arm)
    sources = {"stage1": arm.stage1, "stage2": arm.stage2, "preference": arm.preference}
    # stage numbers for the two stages (layout.config, the refusal's wording), names otherwise
    keys = {name: int(name[-1]) if name.startswith("stage") else name for name in run.configs}
    configs = {keys[name]: config for name, config in run.configs.items()}
    texts = {keys[name]: config_text(c, run, keys[name], sources[name]) for name, c in run.configs.items()}
    if not force and started(run):
        for stage, text in texts.items():
            path = layout.config(stage)
            old, new = (yaml.safe_load(path.read_text()) if path.is_file() else None), yaml.safe_load(text)
            if old is not None and old != new:
                changed = _changed_keys(old, new)
                raise SweepError(
                    f"run {run.name} has started, and its {_what(stage)} config would change ({', '.join(changed)}); "
                    f"give the change its own run (another arm, grid value or output_root), delete {layout.root} "
                    "to start it over, or plan with --force to keep its outputs under the new config"
                )
    for stage, text in texts.items():
        write_text_atomic(layout.config(stage), text)
        config = configs[stage]
        if load_run_config(layout.config(stage)).to_dict() != config.to_dict():
            raise SweepError(f"{layout.config(stage)}: does not read back as the config it was written from")
    run.record.save(layout.root)


def started(run: PlannedRun) -> bool:
    layout = run.layout
    outputs = (
        layout.output_dir(1),
        layout.output_dir(2),
        layout.negatives.parent,
        layout.root / "preference",
    )
    return any(p.exists() for p in (layout.status, *outputs, layout.root / "eval"))


def _what(stage: int | str) -> str:
    return f"stage-{stage}" if isinstance(stage, int) else stage


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _write_plan_file(plan: Plan, only: list[str] | None) -> None:
    spec = plan.spec
    content = {
        "sweep": spec.name,
        "source": str(spec.source),
        "planned": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "launcher": spec.launch.launcher,
        "nodes": spec.launch.nodes,
        "gpus_per_node": spec.launch.gpus_per_node,
        "only": only or [],
        "entry": str(plan.scripts.entry),
        "runs": [run.name for run in plan.runs],
        "selected": [run.name for run in plan.selected],
    }
    write_text_atomic(spec.output_root / PLAN_FILE, json.dumps(content, indent=1) + "\n")
