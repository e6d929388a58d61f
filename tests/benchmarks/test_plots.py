"""The figures stay readable at the edges: a zero score is visible, a series on 0 or 100 % is drawn
inside the frame. Checked on the axes (limits, artists, display geometry), not on pixels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mof_llava.benchmarks import plots
from mof_llava.experiments import figures
from mof_llava.experiments.results import Result
from mof_llava.experiments.tables import Group

PATTERNS = ("Color", "Texts", "Orientation")


@pytest.fixture
def drawn(monkeypatch):
    """The figures that would have been written, still open."""
    figs = []

    def keep(fig, path):
        fig.canvas.draw()  # lay out, so display coordinates are final
        figs.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save_png", keep)
    monkeypatch.setattr(figures, "save_png", keep)
    yield figs
    for fig in figs:
        plots.pyplot().close(fig)


def _radius_px(ax, theta: float, r: float) -> float:
    centre = ax.transAxes.transform((0.5, 0.5))
    return float(np.hypot(*(ax.transData.transform((theta, r)) - centre)))


def test_radar_zero_scores_are_a_visible_ring_and_full_scores_inside_the_frame(tmp_path, drawn):
    series = {"zero": dict.fromkeys(PATTERNS, 0.0), "full": dict.fromkeys(PATTERNS, 100.0)}
    plots.radar_chart(series, tmp_path / "r.png")
    ax = drawn[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["zero"].get_ydata()) == [0.0] * 4  # drawn, at 0, closed
    outer = _radius_px(ax, 0.0, ax.get_ylim()[1])
    zero = _radius_px(ax, 0.0, 0.0)
    assert zero > 0.1 * outer  # a ring, not the centre point
    assert _radius_px(ax, 0.0, 100.0) < outer  # 100 % lies inside the outer frame, not on it
    assert 0 in list(ax.get_yticks())  # and the zero ring is labelled


def test_radar_keeps_the_0_100_scale(tmp_path, drawn):
    plots.radar_chart({"m": {"Color": 40.0, "Texts": 60.0}}, tmp_path / "r.png")
    ax = drawn[0].axes[0]
    low, high = ax.get_ylim()
    assert low == 0.0 and 100.0 < high <= 110.0


@pytest.mark.parametrize(
    "values, inside",
    [
        ([0.0, 0.0, 0.0], [0.0]),  # every score zero
        ([100.0], [100.0]),
        ([22.0, 26.0, 30.0, 0.0], [0.0, 30.0]),  # a baseline at 0 beside real scores
        ([40.0, 41.0], [40.0, 41.0]),
    ],
)
def test_score_limits_keep_every_value_off_the_frame(values, inside):
    low, high = plots.score_limits(values)
    assert high - low >= plots.MIN_SCORE_SPAN
    for v in inside:
        assert low < v < high and min(v - low, high - v) >= 0.03 * (high - low)


def test_score_limits_do_not_leave_the_percent_range_when_widening():
    assert plots.score_limits([1.0, 3.0])[0] > -1.0  # not centred on 2 (which would reach -3)
    assert plots.score_limits([98.0, 99.0])[1] < 101.0
    assert plots.score_limits([150.0, 152.0]) == pytest.approx((145.5, 156.5))  # a count, not a %


def _group(name: str, mode: str | None, alpha: float | None, score: float) -> Group:
    result = Result(
        path=Path(f"{name}/metrics.json"),
        benchmark="mmvp",
        score=score,
        run=name,
        group=name,
        arm=None,
        seed=1,
        mixer_mode=mode,
        alpha=alpha,
        towers=("clip", "dinov2"),
        signature={},
    )
    return Group(name, None, mode, alpha, result.towers, [name], {"mmvp": [result]})


@pytest.mark.parametrize("baseline", [0.0, 100.0])
def test_alpha_figure_draws_zero_scores_and_baselines_on_the_limit(tmp_path, drawn, baseline):
    groups = [_group(f"a-{a}", "additive", a, 0.0) for a in (0.0, 0.5, 1.0)]
    groups.append(_group("llava", None, None, baseline))
    assert figures.alpha_figure(groups, tmp_path / "a.png", proxy=None) is not None
    ax = drawn[0].axes[0]
    low, high = ax.get_ylim()
    lines = {line.get_label(): line for line in ax.get_lines()}
    baseline_line = lines["llava"]
    assert list(baseline_line.get_ydata()) == [baseline, baseline]
    curve = next(line for line in ax.get_lines() if list(line.get_xdata()) == [0.0, 0.5, 1.0])
    assert list(curve.get_ydata()) == [0.0, 0.0, 0.0]
    for y in (0.0, baseline):  # strictly inside the frame, clear of the spines
        assert low < y < high and min(y - low, high - y) >= 0.03 * (high - low)
    assert not math.isclose(low, 0.0) and not math.isclose(high, 100.0)


def test_alpha_figure_draws_rows_that_share_an_alpha(tmp_path, drawn):
    """Two rows of one arm at the same alpha (runs of other settings, or seeds not pooled) are both
    drawn in alpha order; they used to be sorted by their statistics, which do not order."""
    groups = [_group(name, "additive", alpha, score)
              for name, alpha, score in (("a-1", 1.0, 30.0), ("a-0", 0.0, 10.0), ("a-0-other", 0.0, 20.0))]  # fmt: skip
    assert figures.alpha_figure(groups, tmp_path / "a.png", proxy=None) is not None
    (curve,) = [line for line in drawn[0].axes[0].get_lines() if line.get_marker() == "o"]  # not the caps
    assert list(curve.get_xdata()) == [0.0, 0.0, 1.0]
    assert sorted(curve.get_ydata()[:2]) == [10.0, 20.0] and curve.get_ydata()[2] == 30.0
