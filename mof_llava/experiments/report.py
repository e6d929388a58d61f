"""`mof-llava tables`: metrics files in, the paper's tables and figures out.

OUT/
  tables.md                 every table, its notes, the figures' names (what the command prints)
  main.{md,tex,csv}         baseline vs I-MoF (every run group whose mixer is not additive)
  amof_ratio.{md,tex,csv}   A-MoF by DINOv2 ratio alpha
  mmvp_patterns.{md,tex,csv}  MMVP per visual pattern (with --patterns)
  results.csv               one line per metrics file: run, group, seed, benchmark, score, file
  mmvp_vs_alpha.png         MMVP and the instruction-following proxy against alpha
  mmvp_patterns_radar*.png  per-pattern radar charts (with --patterns)
  mmvp_patterns_attribution.png  per pattern, each model beside its tower-ablated runs (with --patterns)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_text_atomic
from .figures import Measure, alpha_figure, attribution_figure, pattern_stats, radar_figures
from .paired import compare_with_baseline, paired_note
from .render import csv_text, latex, markdown
from .reported import load_reported
from .results import DEFAULT_PROXY, Result, ResultsError, check_comparable, collect
from .tables import Table, group_results, main_table, pattern_table, ratio_table


@dataclass
class Report:
    out_dir: Path
    tables: list[Table]
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # files left out, and why
    text: str = ""  # tables.md


def write_report(
    paths: list[str | Path],
    out_dir: str | Path,
    reported: str | Path | None = None,
    patterns: str | Path | None = None,
    proxy: str | None = DEFAULT_PROXY,
    decimals: int = 1,
    allow_mixed: bool = False,
    baseline: str | None = None,
) -> Report:
    out_dir = Path(out_dir)
    results, notes = _scored_results(paths)
    if not allow_mixed:
        check_comparable(results)
    groups = group_results(results)
    reported_numbers = load_reported(reported) if reported else None
    paired_notes = compare_with_baseline(groups, baseline) if baseline else []

    tables = [t for t in (main_table(groups, reported_numbers), ratio_table(groups, reported_numbers)) if t]
    for table in tables if baseline else ():
        table.notes += [paired_note(baseline), *paired_notes]
    stats = None
    if patterns is not None:
        from ..benchmarks.analysis import read_pattern_map

        stats = pattern_stats(groups, read_pattern_map(patterns))
        table = pattern_table(groups, stats)
        if table is not None:
            tables.append(table)
    report = Report(out_dir, tables, notes=notes)
    _write_tables(report, results, decimals)
    _write_figures(report, groups, stats, proxy)
    report.text = _summary(report, decimals)
    report.files.append(write_text_atomic(out_dir / "tables.md", report.text))
    return report


def _scored_results(paths: list[str | Path]) -> tuple[list[Result], list[str]]:
    """The scored trained-run results under `paths`, and a note for every file left out."""
    collection = collect(paths)
    notes = list(collection.skipped)
    results: list[Result] = []
    for result in collection.results:
        if result.benchmark == "mmvp-vlm":
            notes.append(
                f"{result.path}: MMVP-VLM scores a CLIP model, not a trained run; see `mof-llava eval analyze`"
            )
        elif result.score is None:
            notes.append(f"{result.path}: no score ({result.metrics.get('note', 'not scored')})")
        else:
            results.append(result)
    if not results:
        raise ResultsError(f"no scored evaluation metrics (metrics.json) under {', '.join(map(str, paths))}")
    return results, notes


def _write_tables(report: Report, results: list[Result], decimals: int) -> None:
    """Each table as .md, .tex and .csv, then results.csv."""
    for table in report.tables:
        for suffix, text in (
            ("md", markdown(table, decimals)),
            ("tex", latex(table, decimals)),
            ("csv", csv_text(table)),
        ):
            report.files.append(write_text_atomic(report.out_dir / f"{table.name}.{suffix}", text))
    report.files.append(write_text_atomic(report.out_dir / "results.csv", results_csv(results)))


def _write_figures(report: Report, groups, stats, proxy: str | None) -> None:
    """The alpha figure (noting a proxy with no A-MoF scores) and, with pattern stats, the radars."""
    out_dir = report.out_dir
    measure = Measure.parse(proxy) if proxy else None
    figure = alpha_figure(groups, out_dir / "mmvp_vs_alpha.png", measure)
    report.figures += [figure] if figure else []
    amof = [g for g in groups if g.mixer_mode == "additive"]
    if measure is not None and amof and not any(measure.stat(g) for g in amof):
        report.notes.append(
            f"instruction-following proxy {proxy}: no such scores for the A-MoF runs; "
            + (
                f"{figure.name} shows MMVP only"
                if figure
                else "no MMVP scores for them either, so no alpha figure"
            )
        )
    if stats:
        report.figures += radar_figures([g for g in groups if g.base_group is None], stats, out_dir)
        figure = attribution_figure(groups, stats, out_dir / "mmvp_patterns_attribution.png")
        report.figures += [figure] if figure else []


def results_csv(results: list[Result]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["run", "group", "arm", "seed", "mixer", "alpha", "towers", "benchmark", "score", "metrics_file"]
        + ["ablation", "score_ci95_lo", "score_ci95_hi"]  # each run's own interval beside the pooled cells
    )
    for r in sorted(results, key=lambda r: (r.group, r.run, r.benchmark)):
        writer.writerow(
            [
                r.run,
                r.group,
                r.arm or "",
                "" if r.seed is None else r.seed,
                r.mixer_mode or "",
                "" if r.alpha is None else r.alpha,
                "+".join(r.towers),
                r.benchmark,
                repr(r.score),
                r.path,
                (r.ablation or {}).get("label", ""),
                *_interval_cells(r.metrics.get("score_ci95")),
            ]
        )
    return out.getvalue()


def _interval_cells(interval) -> list[str]:
    if isinstance(interval, list) and len(interval) == 2:
        return [repr(float(interval[0])), repr(float(interval[1]))]
    return ["", ""]


def _summary(report: Report, decimals: int) -> str:
    parts = [markdown(t, decimals) for t in report.tables]
    if report.figures:
        parts.append("Figures: " + ", ".join(f.name for f in report.figures) + "\n")
    if report.notes:
        parts.append("Left out:\n" + "".join(f"- {n}\n" for n in report.notes))
    return "\n".join(parts)
