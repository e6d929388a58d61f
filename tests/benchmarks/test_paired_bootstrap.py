"""The paired bootstrap of two models on the same units equals a plain loop that resamples (a, b)
pairs together, and the per-unit values are read back from each benchmark's metrics as its score
counts them."""

from __future__ import annotations

import pytest
from test_intervals import _loop_interval

from mof_llava.benchmarks import intervals, mmvp


def test_paired_difference_equals_a_loop_resampling_pairs_of_answers():
    a = [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    b = [0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0]
    diff, interval = intervals.paired_difference(a, b)
    pairs = list(zip(a, b))
    expected = _loop_interval(
        [pairs], lambda d: 100 * (sum(x for x, _ in d[0]) - sum(y for _, y in d[0])) / len(d[0])
    )
    assert diff == pytest.approx(100 * (9 - 4) / 12)
    assert interval == pytest.approx(expected, abs=1e-9)


def test_identical_answers_give_an_interval_of_zero_and_mismatched_units_are_refused():
    assert intervals.paired_difference([1, 0, 1], [1, 0, 1]) == (0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="same units on both sides"):
        intervals.paired_difference([1, 0], [1])


def test_mmvp_units_are_pairs_whose_mean_is_the_pair_accuracy():
    correct = {1: True, 2: True, 3: True, 4: False, 5: False, 6: False, 7: True, 8: True}
    metrics = {"benchmark": "mmvp", "per_question": {str(k): {"correct": v} for k, v in correct.items()}}
    units = intervals.unit_values(metrics)
    assert units == {"0": 1.0, "1": 0.0, "2": 0.0, "3": 1.0}
    assert 100 * sum(units.values()) / len(units) == mmvp.pair_accuracy(correct)[0] == 50.0


def test_mmbench_groups_and_naturalbench_samples_are_units_and_others_have_none():
    assert intervals.unit_values({"benchmark": "mmbench", "groups": {"7": 1, "9": 0}}) == {"7": 1.0, "9": 0.0}
    assert intervals.unit_values({"benchmark": "naturalbench", "per_sample": {"3": 1.0}}) == {"3": 1.0}
    assert intervals.unit_values({"benchmark": "pope", "score": 80.0}) is None


def test_naturalbench_metrics_keep_per_sample_g_acc_whose_mean_is_the_score(fixtures_dir):
    from mof_llava.benchmarks import naturalbench

    folder = fixtures_dir / "naturalbench"
    samples = naturalbench.read_samples(folder / "naturalbench_excerpt.jsonl")
    metrics = naturalbench.score_answer_file(folder / "answers.jsonl", samples)
    units = intervals.unit_values(metrics)
    assert sorted(units) == sorted(str(s.index) for s in samples)
    # 2 of the excerpt's 5 samples have all four answers right (counted by hand, tests/fixtures/README.md)
    assert sum(units.values()) == 2 and 100 * sum(units.values()) / len(units) == metrics["score"] == 40.0
