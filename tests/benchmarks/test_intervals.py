"""Bootstrap intervals: the vectorised scheme equals a plain-loop bootstrap written here, on the
benchmark's own unit (pairs, circular groups, questions within POPE splits)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mof_llava.benchmarks import gqa, intervals, mmbench, mmvp, mmvp_vlm, pope

B, SEED = intervals.RESAMPLES, intervals.SEED


def _percentile(values, q):
    """Linear-interpolation percentile, by hand."""
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _loop_interval(strata, statistic):
    """The documented scheme with loops: one generator, each stratum's (B, n) draw in order, then
    `statistic(list of resampled unit lists)` per resample."""
    rng = np.random.default_rng(SEED)
    draws = [rng.integers(0, len(units), size=(B, len(units))) for units in strata]
    stats = []
    for b in range(B):
        stats.append(statistic([[units[i] for i in draw[b]] for units, draw in zip(strata, draws)]))
    return [_percentile(stats, 2.5), _percentile(stats, 97.5)]


def _f1(outcomes):
    tp = sum(1 for said, truth in outcomes if said and truth)
    fp = sum(1 for said, truth in outcomes if said and not truth)
    fn = sum(1 for said, truth in outcomes if not said and truth)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 100 * 2 * p * r / (p + r) if p + r else 0.0


def test_mean_interval_equals_a_loop_bootstrap_and_contains_the_estimate():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1]
    ours = intervals.mean_interval(values)
    expected = _loop_interval([values], lambda d: 100 * sum(d[0]) / len(d[0]))
    assert ours == pytest.approx(expected, abs=1e-9)
    assert ours[0] < 100 * sum(values) / len(values) < ours[1]
    assert intervals.mean_interval([]) is None


def test_interval_shrinks_with_more_data():
    rng = np.random.default_rng(7)
    small = list(rng.random(60) < 0.7)
    large = small * 8
    width = [hi - lo for lo, hi in (intervals.mean_interval(small), intervals.mean_interval(large))]
    assert width[1] < width[0] / 2  # ~1/sqrt(8) of it


def test_pope_mean_f1_interval_on_llavas_13b_answers_equals_a_loop_bootstrap(fixtures_dir):
    data = pope.load_pope(fixtures_dir / "pope" / "coco", fixtures_dir / "pope" / "llava_pope_test.jsonl")
    answers = fixtures_dir / "pope" / "answers" / "llava-v1.5-13b.jsonl"
    metrics = pope.score_answer_file(answers, data)
    by_id = {
        json.loads(line)["question_id"]: json.loads(line)["text"] for line in answers.read_text().splitlines()
    }
    strata = [
        [(pope.llava_yes_no(by_id[q.question_id]) == "yes", a.label == "yes") for q, a in pairs]
        for pairs in data.labels.values()
    ]
    expected = _loop_interval(strata, lambda d: sum(_f1(s) for s in d) / len(d))
    assert metrics["mean_f1_ci95"] == pytest.approx(expected, abs=1e-9)
    assert metrics["score_ci95"] == metrics["mean_f1_ci95"]
    lo, hi = metrics["score_ci95"]
    assert metrics["score"] == pytest.approx(80.0)
    assert lo <= metrics["score"] <= hi and hi - lo > 10  # 18 questions: wide
    assert metrics["bootstrap"] == {
        "method": "percentile",
        "level": 0.95,
        "resamples": 1000,
        "seed": 0,
        "unit": "question, within each split",
    }
    # existing numbers untouched
    assert metrics["splits"]["random"]["f1"] == pytest.approx(80.0)


def _mmvp_correct(pattern):
    """Per-question correctness of pairs: pair k's two questions (2k-1, 2k) get pattern[k]."""
    correct = {}
    for k, both in enumerate(pattern):
        correct[2 * k + 1], correct[2 * k + 2] = both
    return correct


def test_mmvp_resamples_pairs_not_questions():
    # pairs whose two answers go together: resampling questions would treat them as independent
    pattern = [(True, True)] * 9 + [(False, False)] * 8 + [(True, False)] * 3
    cis = mmvp.pair_intervals(_mmvp_correct(pattern))
    by_pair = _loop_interval([pattern], lambda d: 100 * sum(a + b for a, b in d[0]) / (2 * len(d[0])))
    questions = [ok for pair in pattern for ok in pair]
    by_question = _loop_interval([questions], lambda d: 100 * sum(d[0]) / len(d[0]))
    assert cis["question_accuracy_ci95"] == pytest.approx(by_pair, abs=1e-9)
    assert cis["question_accuracy_ci95"] != pytest.approx(by_question, abs=1.0)
    width_pairs, width_questions = by_pair[1] - by_pair[0], by_question[1] - by_question[0]
    assert width_pairs > width_questions * 1.15  # correlated answers: pairs carry less information
    both = _loop_interval([pattern], lambda d: 100 * sum(a and b for a, b in d[0]) / len(d[0]))
    assert cis["pair_accuracy_ci95"] == pytest.approx(both, abs=1e-9)
    assert cis["bootstrap"]["unit"] == "pair"


def test_mmbench_resamples_circular_groups(fixtures_dir, tmp_path):
    rows = [json.loads(line) for line in (fixtures_dir / "mmbench" / "gt.jsonl").read_text().splitlines()]
    tsv = tmp_path / "mmbench.tsv"
    pd.DataFrame(rows).to_csv(tsv, sep="\t", index=False)
    metrics = mmbench.score_answer_file(
        fixtures_dir / "mmbench" / "llava-v1.5-13b.answers.jsonl", mmbench.read_tsv(tsv)
    )
    hits = list(metrics["groups"].values())  # one per question, all its rotations together
    expected = _loop_interval([hits], lambda d: 100 * sum(d[0]) / len(d[0]))
    assert (
        metrics["overall_ci95"] == pytest.approx(expected, abs=1e-9)
        and metrics["score_ci95"] == metrics["overall_ci95"]
    )
    assert metrics["bootstrap"]["unit"] == "circular group"


def test_gqa_intervals_resample_questions():
    def q(answer, structural):
        return {
            "isBalanced": True,
            "answer": answer,
            "question": "what is it ?",
            "semantic": [],
            "types": {"structural": structural, "semantic": "attr"},
        }

    questions = {str(i): q("yes" if i % 2 else "red", "verify" if i % 2 else "query") for i in range(12)}
    answers = {str(i): {"question_id": str(i), "text": ("Yes" if i % 3 else "blue")} for i in range(12)}
    metrics = gqa.score_gqa(answers, questions)
    correct = [(("yes" if i % 3 else "blue") == questions[str(i)]["answer"]) for i in range(12)]
    assert metrics["accuracy_ci95"] == pytest.approx(
        _loop_interval([correct], lambda d: 100 * sum(d[0]) / len(d[0])), abs=1e-9
    )
    binary = [c for i, c in enumerate(correct) if i % 2]
    assert metrics["binary_ci95"] == pytest.approx(
        _loop_interval([binary], lambda d: 100 * sum(d[0]) / len(d[0])), abs=1e-9
    )
    assert metrics["score_ci95"] == metrics["accuracy_ci95"] and metrics["bootstrap"]["unit"] == "question"


def test_mmvp_vlm_average_resamples_pairs_within_patterns():
    per_pattern = {"Texts": [True, False, True], "Color and Appearance": [False, False, True, True]}
    order = list(per_pattern)
    cis = mmvp_vlm._intervals(per_pattern, order)
    expected = _loop_interval(
        [per_pattern[p] for p in order], lambda d: sum(100 * sum(s) / len(s) for s in d) / len(d)
    )
    assert cis["average_ci95"] == pytest.approx(expected, abs=1e-9) == cis["score_ci95"]
