"""The paper-style figures of the pattern analysis, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

# Radar charts put r = 0 on a ring this far (in score points) from the centre, so a zero score is a
# visible ring and an all-zero model a drawn polygon, not a dot hidden under the others.
RADAR_HOLE = 15.0
RADAR_TICKS = (0, 25, 50, 75, 100)
# Line charts of percentages: at least this many points tall, and a margin beyond the data, so a
# value at 0 or 100 (a zero score, a baseline on the limit) lies inside the frame, not on it.
MIN_SCORE_SPAN = 10.0
SCORE_MARGIN = 0.05


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def _pattern_order(series: Mapping[str, Mapping[str, float]]) -> list[str]:
    order: list[str] = []
    for scores in series.values():
        order += [p for p in scores if p not in order]
    return order


def _values(name: str, scores: Mapping[str, float], patterns: Sequence[str]) -> tuple[list[float], str]:
    """A model's scores in pattern order and its legend label. A pattern the model has no score for
    is NaN (no point, no bar) and the label says so: drawing it as 0 would read as a measured 0%."""
    values = [float(scores[p]) if p in scores else math.nan for p in patterns]
    missing = sum(math.isnan(v) for v in values)
    return values, f"{name} (no score for {missing} pattern{'s' if missing > 1 else ''})" if missing else name


def radar_chart(series: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """One closed polygon per model over the patterns (0-100)."""
    plt = pyplot()
    patterns = _pattern_order(series)
    angles = [2 * math.pi * i / len(patterns) for i in range(len(patterns))]
    fig, ax = plt.subplots(figsize=(7, 7), subplot_kw={"projection": "polar"})
    for name, scores in series.items():
        values, label = _values(name, scores, patterns)
        ax.plot(angles + angles[:1], values + values[:1], linewidth=1.5, marker=".", label=label)
        if not any(math.isnan(v) for v in values):  # a gap in the outline has no inside to fill
            ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([p.replace(" and ", "\nand ") for p in patterns], fontsize=8)
    ax.set_rorigin(-RADAR_HOLE)
    ax.set_ylim(0, 100 * (1 + SCORE_MARGIN))  # a 100 % score inside the outer frame
    ax.set_yticks(RADAR_TICKS)
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    return save_png(fig, path)


def score_limits(values: Sequence[float]) -> tuple[float, float]:
    """y limits for percentages: the drawn values (means, error-bar ends, baselines) with a margin,
    at least `MIN_SCORE_SPAN` tall, and kept within 0-100 when widened."""
    finite = [float(v) for v in values if math.isfinite(v)]
    first, last = (min(finite), max(finite)) if finite else (0.0, 100.0)
    low, high = first, last
    if high - low < MIN_SCORE_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_SCORE_SPAN / 2, middle + MIN_SCORE_SPAN / 2
        if low < 0.0 <= first:  # widened below 0 %: widen upwards instead
            low, high = 0.0, MIN_SCORE_SPAN
        elif high > 100.0 >= last:
            low, high = 100.0 - MIN_SCORE_SPAN, 100.0
    margin = SCORE_MARGIN * (high - low)
    return low - margin, high + margin


def bar_chart(series: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Grouped bars: patterns on the x axis, one bar per model."""
    plt = pyplot()
    patterns = _pattern_order(series)
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(patterns)), 5))
    for k, (name, scores) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(patterns))]
        values, label = _values(name, scores, patterns)
        ax.bar(xs, values, width=width, label=label)
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels(patterns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def correlation_scatter(
    points: Sequence[tuple[str, Mapping[str, float], Mapping[str, float], float | None]],
    path: str | Path,
    title: str = "",
) -> Path:
    """For each (label, clip scores, mllm scores, r): one point per shared pattern, CLIP score on x,
    MLLM score on y, with the least-squares line and r in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, clip, mllm, r in points:
        common = [p for p in mllm if p in clip]
        xs, ys = [clip[p] for p in common], [mllm[p] for p in common]
        text = f"{label} (r = {r:.2f})" if r is not None else f"{label} (r undefined)"
        dots = ax.scatter(xs, ys, label=text)
        if r is not None:
            slope, intercept = _fit(xs, ys)
            ends = [min(xs), max(xs)]
            ax.plot(ends, [slope * x + intercept for x in ends], color=dots.get_facecolor()[0], linewidth=1)
    ax.set_xlabel("CLIP model, MMVP-VLM pattern accuracy (%)")
    ax.set_ylabel("MLLM, MMVP pattern accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def save_png(fig, path: str | Path) -> Path:
    """Write the figure as PNG through a temporary file, so a crash never leaves half an image."""
    from ..atomic import atomic_path

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)
