"""Where everything of one run lives, and the run's record `experiment.json`.

    <run>/
      experiment.json        what the run is: sweep, arm, group, grid point, seed, steps (RunRecord)
      stage1.yaml            the resolved stage-1 run config (what train/train.py is given)
      stage2.yaml            the resolved stage-2 run config (loads <run>/stage1/adapters)
      (a preference run instead: negatives/pairs.jsonl, preference.yaml and preference/, from the
      stage-2 model of its base run)
      stage1/                stage-1 output: run_config.yaml, metrics.jsonl, checkpoint-*/, adapters/
      stage2/                stage-2 output: ..., model/ (lora/ for LoRA runs, then model/ by merge-lora)
      eval/<bench>/          answers.jsonl, metrics.json, run.json (mof-llava eval run)
      jobs/                  the job scripts
      status/                <step>.running / .exit / .submitted / .log, written by the job scripts

The demo writes its runs in the same layout, so the same status and tables code reads both. Each
step is done when its *artifact* exists: a file written last (after everything else of the step)
and atomically, so its presence means the step finished.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

RECORD = "experiment.json"
RECORD_FORMAT = "mof-llava run record 1"


@dataclass(frozen=True)
class Step:
    name: str  # stage1, stage2, negatives, preference, merge-lora, eval-<bench>
    artifact: str  # relative to the run folder


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / RECORD

    def config(self, stage: int | str) -> Path:
        """stage1.yaml, stage2.yaml (by number), or preference.yaml (by name)."""
        return self.root / (f"stage{stage}.yaml" if isinstance(stage, int) else f"{stage}.yaml")

    def output_dir(self, stage: int) -> Path:
        return self.root / f"stage{stage}"

    @property
    def adapters(self) -> Path:
        return self.output_dir(1) / "adapters"

    @property
    def model(self) -> Path:
        return self.output_dir(2) / "model"

    def eval_dir(self, benchmark: str) -> Path:
        return self.root / "eval" / benchmark

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def status(self) -> Path:
        return self.root / "status"

    def steps(self, benchmarks: list[str], lora: bool = False) -> list[Step]:
        """The steps of a run in order, each with the file whose presence says it finished."""
        # adapters_config.json is written after the weights, processor_config.json after the model.
        first = Step("stage1", "stage1/adapters/adapters_config.json")
        return [first, *_trained_steps("stage2", lora), *_eval_steps(benchmarks)]

    @property
    def negatives(self) -> Path:
        return self.root / "negatives" / "pairs.jsonl"

    def preference_steps(self, benchmarks: list[str], lora: bool = False) -> list[Step]:
        """A preference run's steps: its negatives (written atomically at the end), the preference
        stage and the evaluation of its model."""
        first = Step("negatives", "negatives/pairs.jsonl")
        return [first, *_trained_steps("preference", lora), *_eval_steps(benchmarks)]


def _trained_steps(stage: str, lora: bool) -> list[Step]:
    """A stage that ends in a model: LoRA weights then merged, or the model itself."""
    model = Step(stage, f"{stage}/model/processor_config.json")
    if lora:
        return [Step(stage, f"{stage}/lora/adapter_config.json"), Step("merge-lora", model.artifact)]
    return [model]


def _eval_steps(benchmarks: list[str]) -> list[Step]:
    return [Step(f"eval-{b}", f"eval/{b}/metrics.json") for b in benchmarks]


@dataclass
class RunRecord:
    """`<run>/experiment.json`: what a run is, for status and tables. `group` names the row of the
    tables: runs that differ only by seed share it."""

    sweep: str
    run: str
    group: str
    arm: str
    point: dict[str, Any] = field(default_factory=dict)  # swept key -> value
    seed: int | None = None
    benchmarks: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    format: str = RECORD_FORMAT
    base: str | None = None  # a preference run: the group of the model it starts from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = RECORD) -> RunRecord:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"{source}: not a run record of this version (format {data.get('format')!r})")
        data = dict(data)
        data["steps"] = [Step(**s) for s in data.get("steps", [])]
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from None

    def save(self, run_dir: Path) -> Path:
        return write_text_atomic(RunLayout(run_dir).record, json.dumps(self.to_dict(), indent=1) + "\n")


def read_record(run_dir: Path) -> RunRecord:
    path = RunLayout(run_dir).record
    return RunRecord.from_dict(json.loads(path.read_text()), str(path))


def find_record(path: Path) -> tuple[Path, RunRecord] | None:
    """The run folder holding `path` (the nearest parent with an experiment.json), and its record."""
    for parent in path.resolve().parents:
        if (parent / RECORD).is_file():
            return parent, read_record(parent)
    return None


def repo_root() -> Path:
    """The checkout the jobs run in: train/train.py and eval/run.py are there, and relative data
    paths in run configs (data/...) and sweep files (output_root) start there. A run config's
    train.deepspeed does not: it is relative to the config file that names it."""
    return Path(__file__).resolve().parents[2]


