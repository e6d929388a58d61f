"""Figures as PNG: MMVP and an instruction-following proxy against the DINOv2 ratio alpha, MMVP
per-pattern radar charts, and per-tower attribution (each model's per-pattern MMVP beside its runs
with a tower ablated); through mof_llava.benchmarks.plots, the charts of `mof-llava eval analyze`.

The paper measured instruction following with LLaVA-Bench, which this project does not score; the
proxy is any benchmark score (default MMBench, whose answers must follow the "answer with the
option's letter" instruction) or a numeric key of its metrics, named `BENCH` or `BENCH:KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..benchmarks.plots import bar_chart, pyplot, radar_chart, save_png, score_limits
from .results import Result, title
from .tables import Group, Stat


@dataclass(frozen=True)
class Measure:
    """A number per result: a benchmark's `score` or another numeric key of its metrics."""

    benchmark: str
    key: str = "score"

    @classmethod
    def parse(cls, text: str) -> Measure:
        bench, _, key = text.partition(":")
        return cls(bench, key or "score")

    @property
    def label(self) -> str:
        return title(self.benchmark) + ("" if self.key == "score" else f" {self.key}")

    def value(self, result: Result) -> float | None:
        value = result.score if self.key == "score" else result.metrics.get(self.key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{result.path}: {self.key} is not a number ({value!r})")
        return float(value)

    def stat(self, group: Group) -> Stat | None:
        return group.stat(self.benchmark, self.value)


def alpha_figure(groups: Sequence[Group], path: Path, proxy: Measure | None) -> Path | None:
    """MMVP (and the proxy) against alpha, one line per arm with the standard deviation over seeds as
    error bars; the other models (baseline, I-MoF) as dashed horizontal lines. None without A-MoF."""
    additive = [g for g in groups if g.mixer_mode == "additive" and g.alpha is not None]
    measures = [Measure("mmvp")] + ([proxy] if proxy is not None else [])
    measures = [m for m in measures if any(m.stat(g) for g in additive)]
    if not additive or not measures:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures), 4.2), squeeze=False)
    others = [g for g in groups if g.mixer_mode != "additive"]
    for ax, measure in zip(axes[0], measures):
        drawn: list[float] = []  # every y value on the axes, for the limits
        for arm in dict.fromkeys(g.arm or "A-MoF" for g in additive):
            points = sorted(
                ((g.alpha, s) for g in additive if (g.arm or "A-MoF") == arm and (s := measure.stat(g)) is not None),
                key=lambda point: point[0],  # rows may share an alpha (other settings); stats do not order
            )
            drawn += [s.mean + d for _, s in points for d in (-(s.std or 0.0), s.std or 0.0)]
            if points:
                ax.errorbar(
                    [a for a, _ in points],
                    [s.mean for _, s in points],
                    yerr=[s.std or 0.0 for _, s in points],
                    marker="o",
                    capsize=3,
                    label=arm,
                )
        for k, group in enumerate(others):
            stat = measure.stat(group)
            if stat is not None:
                ax.axhline(stat.mean, linestyle="--", linewidth=1, color=f"C{k + 3}", label=group.name)
                drawn.append(stat.mean)
        ax.set_ylim(*score_limits(drawn))
        ax.set_xlabel("alpha (share of DINOv2 features)")
        ax.set_ylabel(f"{measure.label} (%)")
        ax.set_title(f"{measure.label} vs alpha")
        ax.legend(fontsize=8)
    return save_png(fig, path)


def pattern_stats(groups: Sequence[Group], patterns: Mapping[int, str]) -> dict[str, dict[str, Stat]]:
    """group -> pattern -> pair accuracy over the group's MMVP runs."""
    from ..benchmarks.analysis import mmvp_correctness, per_pattern_pair_accuracy

    stats: dict[str, dict[str, Stat]] = {}
    for group in groups:
        per_run: dict[str, list[float]] = {}
        for result in group.results.get("mmvp", []):
            accuracy = per_pattern_pair_accuracy(mmvp_correctness(result.metrics, str(result.path)), patterns)
            for pattern, entry in accuracy["per_pattern"].items():
                per_run.setdefault(pattern, []).append(entry["accuracy"])
        if per_run:
            stats[group.name] = {p: Stat(tuple(v)) for p, v in per_run.items()}
    return stats


def radar_figures(
    groups: Sequence[Group], stats: Mapping[str, Mapping[str, Stat]], out_dir: Path
) -> list[Path]:
    """One radar chart for the baseline / I-MoF rows and one for the A-MoF rows (means over seeds)."""
    written = []
    for name, title_text, chosen in (
        (
            "mmvp_patterns_radar.png",
            "MMVP pair accuracy per pattern",
            [g for g in groups if g.mixer_mode != "additive"],
        ),
        (
            "mmvp_patterns_radar_amof.png",
            "MMVP per pattern, A-MoF by alpha",
            [g for g in groups if g.mixer_mode == "additive"],
        ),
    ):
        series = {g.name: {p: s.mean for p, s in stats[g.name].items()} for g in chosen if g.name in stats}
        if series:
            written.append(radar_chart(series, out_dir / name, title=title_text))
    return written


def attribution_figure(groups: Sequence[Group], stats: Mapping[str, Mapping[str, Stat]], path: Path) -> Path | None:
    """Grouped bars per MMVP pattern: each model that has tower-ablated rows, then those rows (means
    over seeds). None without ablated rows with pattern scores."""
    ablated = [g for g in groups if g.base_group is not None and g.name in stats]
    if not ablated:
        return None
    series: dict[str, dict[str, float]] = {}
    for base in dict.fromkeys(g.base_group for g in ablated):
        for name in [base] + [g.name for g in ablated if g.base_group == base]:
            if name in stats:
                series[name] = {p: s.mean for p, s in stats[name].items()}
    return bar_chart(series, path, title="MMVP pair accuracy per pattern, with a tower removed")
