"""The demo's closing report: smoothed losses (said so), chance levels beside the MMVP scores, and
why a score below chance is what a model this small gets."""

from __future__ import annotations

from pathlib import Path

from mof_llava.demo.report import format_report
from mof_llava.demo.run import I_MOF, Components, DemoResult, StageResult, VariantResult, smoothed_loss_ends


def _result(tmp_path: Path, pair_accuracy: float, pairs_correct: int) -> DemoResult:
    # Stage 2's text-only batches score 2-3 where the others score ~0.5: the last step alone is 2.355.
    stage2_losses = [0.715, 0.72, 0.57, 0.49, 0.41, 0.42, 0.5, 1.9, 0.62, 0.42, 0.41, 0.4, 0.38, 0.39, 2.355]
    stages = [
        StageResult(tmp_path / f"stage{n}.yaml", tmp_path / f"stage{n}", tmp_path / "artifact", losses)
        for n, losses in ((1, [1.8, 1.86, 2.45, 2.15, 1.0, 0.9, 0.7, 0.64]), (2, stage2_losses))
    ]
    scores = {
        "pair_accuracy": pair_accuracy,
        "pairs_correct": pairs_correct,
        "pairs": 24,
        "question_accuracy": 50.0,
        "unread": 0,
        "per_pattern": {"Color and Appearance": {"accuracy": pair_accuracy, "pairs": 24}},
    }
    variant = VariantResult(I_MOF, stages[0], stages[1], tmp_path / "eval", scores)
    components = Components(
        tmp_path, tmp_path / "llm-text", tmp_path / "clip", tmp_path / "dinov2", (6.2, 0.25)
    )
    return DemoResult(tmp_path, tmp_path / "data", components, [variant], {"data": 2.0, "components": 46.0})


def test_losses_are_medians_of_both_ends_and_say_so(tmp_path):
    report = format_report(_result(tmp_path, 0.0, 0))
    # 15 steps: the median of steps 1-3 and of steps 13-15 (a 2.355 last step does not read as a rise)
    assert "stage 2: 15 steps, loss 0.715 -> 0.390 (median of the first / last 3 steps)" in report
    assert "stage 1: 8 steps, loss 1.830 -> 0.670 (median of the first / last 2 steps)" in report
    assert "median of the first and of the last steps" in report
    assert "(first step)" not in report


def test_scores_come_with_their_chance_levels(tmp_path):
    report = format_report(_result(tmp_path, 0.0, 0))
    assert "pair accuracy 0.0% (0/24 pairs; chance 25%), question accuracy 50.0% (chance 50%)" in report
    assert "below chance is expected here" in report
    assert "below chance" not in format_report(_result(tmp_path, 37.5, 9))


def test_smoothed_ends_never_overlap():
    assert smoothed_loss_ends([3.0, 1.0]) == (3.0, 1.0)
    assert smoothed_loss_ends([5.0, 4.0, 9.0, 3.0, 2.0, 1.0, 0.5, 8.0]) == (4.5, 4.25)
