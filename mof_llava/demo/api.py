"""`mof-llava demo` as one call: what to train, where, at which sizes, and whether to rehearse the
paper's sweep.

    from mof_llava.demo.api import DemoConfig, demo
    outcome = demo(DemoConfig("demo-out", models=("i-mof", "a-mof-0.5")))
    print(outcome.describe())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .run import DemoFolderError, DemoResult, DemoSettings, parse_variant

SCALE_NOTE = "At this size the scores are near chance: the rehearsal shows the pipeline runs, not the paper's findings."


class DemoConfigError(ValueError):
    """Demo options that do not go together, or a model name the demo does not know."""


@dataclass(frozen=True)
class DemoConfig:
    out: str | Path = "mof-llava-demo"
    settings: DemoSettings = field(default_factory=DemoSettings)
    models: tuple[str, ...] | None = None  # as `run.parse_variant` reads them; None: i-mof
    sweep: bool = False  # rehearse the paper's sweep: its own models, all evaluated, then the tables
    evaluate: bool = True


@dataclass
class DemoOutcome:
    result: DemoResult
    rehearsal: object | None = None  # mof_llava.demo.sweep.Rehearsal with `sweep`

    def describe(self) -> str:
        from .report import format_report

        lines = [format_report(self.result)]
        if self.rehearsal is not None:
            tables = self.rehearsal.tables_dir
            lines += ["", self.rehearsal.report.text]
            lines.append(
                f"tables and figures in {tables}/ (the same as `mof-llava tables {self.result.out_dir}`)"
            )
            lines.append(SCALE_NOTE)
        return "\n".join(lines)


def demo(config: DemoConfig) -> DemoOutcome:
    """Generate the data and tiny components, train (and evaluate) each model; nothing is
    downloaded. A folder holding an earlier demo with the same settings is resumed."""
    if config.sweep and (config.models or not config.evaluate):
        raise DemoConfigError("--sweep trains and evaluates its own list of models; drop --model / --no-eval")
    try:
        variants = [parse_variant(name) for name in (config.models or ["i-mof"])]
    except ValueError as err:
        raise DemoConfigError(str(err)) from None
    if config.sweep:
        from .sweep import run_rehearsal

        rehearsal = run_rehearsal(config.out, config.settings)
        return DemoOutcome(rehearsal.demo, rehearsal)
    from .run import run_demo

    return DemoOutcome(run_demo(config.out, config.settings, variants, evaluate=config.evaluate))


__all__ = ["DemoConfig", "DemoConfigError", "DemoFolderError", "DemoOutcome", "demo"]
