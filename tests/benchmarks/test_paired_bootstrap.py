"""The paired bootstrap of two models on the same units equals a plain loop that resamples (a, b)
pairs together, and the per-unit values are read back from each benchmark's metrics as its score
counts them; for POPE (F1 within splits), GQA and CV-Bench (its composite over sources) the
benchmark's statistic is computed for both rows on one draw."""

from __future__ import annotations

import pytest
from test_intervals import _f1, _loop_interval

from mof_llava.benchmarks import cvbench, gqa, intervals, mmvp, pope


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


def _paired_loop(metrics_a, metrics_b, statistic):
    """The documented scheme by hand: strata in the metrics' order, unit ids sorted, each stratum a
    list of (a's unit, b's unit); `statistic(strata, side)` scores one side of a resample."""
    ua, ub = intervals.units(metrics_a), intervals.units(metrics_b)
    strata = [list(zip(va.tolist(), vb.tolist())) for va, vb in zip(ua.values, ub.values)]
    return _loop_interval(strata, lambda d: statistic(d, 0) - statistic(d, 1))


def _pope_metrics(said_yes):
    """POPE metrics for two splits of 12 questions (6 labelled yes, then 6 no); `said_yes[split]`
    holds the positions answered "Yes"."""
    questions, labels = [], {}
    for offset, split in ((0, "random"), (100, "popular")):
        pairs = []
        for i in range(12):
            q = pope.PopeLine(offset + i, f"{i}.jpg", "Is there a cat?", split, None, f"q:{i}")
            pairs.append(
                (q, pope.PopeLine(i, f"{i}.jpg", "Is there a cat?", split, "yes" if i < 6 else "no", "a"))
            )
            questions.append(q)
        labels[split] = pairs
    answers = {
        str(q.question_id): {
            "question_id": q.question_id,
            "text": "Yes" if q.question_id % 100 in said_yes[q.category] else "No",
        }
        for q in questions
    }
    return pope.score_pope(answers, pope.PopeData(questions, labels, {}))


def test_pope_paired_statistic_is_the_mean_f1_difference_and_a_loop_gives_its_interval():
    # a: 5 of the 6 "yes" questions and one "no" question answered yes in each split, F1 5/6;
    # b: yes to everything, precision 1/2 and recall 1, F1 2/3 (worked by hand)
    a = _pope_metrics({"random": {0, 1, 2, 3, 4, 6}, "popular": {0, 1, 2, 3, 4, 7}})
    b = _pope_metrics({"random": set(range(12)), "popular": set(range(12))})
    assert a["per_question"]["random"]["6"] == ["yes", "no"] and len(a["per_question"]["popular"]) == 12
    diff, interval = intervals.paired_statistic([intervals.units(a)], [intervals.units(b)])
    assert diff == pytest.approx(100 * (5 / 6 - 2 / 3)) == pytest.approx(a["score"] - b["score"])

    def mean_f1(strata, side):
        return sum(_f1([unit[side] for unit in units]) for units in strata) / len(strata)

    assert interval == pytest.approx(_paired_loop(a, b, mean_f1), abs=1e-9)
    assert intervals.paired_statistic([intervals.units(a)], [intervals.units(a)]) == (0.0, [0.0, 0.0])


def _gqa_questions():
    """13 questions, 12 balanced: 12 must be resampled, the unbalanced one must not count."""
    return {
        str(100 + i): {
            "question": "What colour?",
            "answer": "red",
            "imageId": "n1",
            "isBalanced": i < 12,
            "types": {"structural": "query", "semantic": "attr"},
            "semantic": [],
        }  # fmt: skip
        for i in range(13)
    }


def _gqa_metrics(right):
    questions = _gqa_questions()
    answers = {
        qid: {"question_id": qid, "text": "Red." if int(qid) - 100 in right else "blue"} for qid in questions
    }
    return gqa.score_gqa(answers, questions)


def test_gqa_metrics_keep_correctness_per_balanced_question_and_pair_like_a_loop():
    a, b = _gqa_metrics(set(range(9)) | {12}), _gqa_metrics({0, 3, 5, 7, 11})
    assert sorted(a["per_question"]) == [str(100 + i) for i in range(12)] and a["per_question"]["108"] is True
    diff, interval = intervals.paired_statistic([intervals.units(a)], [intervals.units(b)])
    assert diff == pytest.approx(100 * (9 - 5) / 12) == pytest.approx(a["score"] - b["score"])

    def accuracy(strata, side):
        return 100 * sum(unit[side] for unit in strata[0]) / len(strata[0])

    assert interval == pytest.approx(_paired_loop(a, b, accuracy), abs=1e-9)


def _cvbench_metrics(right):
    """4 ADE20K, 4 COCO, 6 Omni3D questions (ids 1-14, so string order differs from numeric)."""
    sources = ["ADE20K"] * 4 + ["COCO"] * 4 + ["Omni3D"] * 6
    questions = [
        cvbench.CVBenchQuestion(i, "Count" if i <= 8 else "Depth", "?", "(A)", src, None, None, f"q:{i}")
        for i, src in enumerate(sources, start=1)
    ]
    answers = {
        str(q.idx): {"question_id": q.idx, "text": "(A)" if q.idx in right else "(B)"} for q in questions
    }
    return cvbench.score_cvbench(answers, questions)


def test_cvbench_paired_statistic_is_the_composite_difference_and_a_loop_gives_its_interval():
    # a: ADE20K 3/4, COCO 2/4, Omni3D 5/6; b: ADE20K 1/4, COCO 2/4, Omni3D 2/6 (hand-counted)
    a = _cvbench_metrics({1, 2, 3, 5, 6, 9, 10, 11, 12, 13})
    b = _cvbench_metrics({4, 7, 8, 9, 14})
    assert a["per_question"]["9"] == {"correct": True, "source": "Omni3D", "task": "Depth"}
    composite = {"a": ((75 + 50) / 2 + 500 / 6) / 2, "b": ((25 + 50) / 2 + 200 / 6) / 2}
    diff, interval = intervals.paired_statistic([intervals.units(a)], [intervals.units(b)])
    assert diff == pytest.approx(composite["a"] - composite["b"]) == pytest.approx(a["score"] - b["score"])

    def formula(strata, side):
        ade, coco, omni = (100 * sum(unit[side] for unit in units) / len(units) for units in strata)
        return ((ade + coco) / 2 + omni) / 2

    assert interval == pytest.approx(_paired_loop(a, b, formula), abs=1e-9)


def test_a_row_of_several_runs_scores_the_mean_of_its_runs_statistics_on_one_draw():
    runs = [_pope_metrics({"random": set(range(k)), "popular": set(range(6))}) for k in (4, 6, 9)]
    base = _pope_metrics({"random": set(range(12)), "popular": set(range(12))})
    diff, _ = intervals.paired_statistic([intervals.units(r) for r in runs], [intervals.units(base)])
    assert diff == pytest.approx(sum(r["score"] for r in runs) / 3 - base["score"])
    with pytest.raises(ValueError, match="same units and statistic"):
        intervals.paired_statistic([intervals.units(runs[0])], [intervals.units(_gqa_metrics({1}))])


def test_metrics_written_before_per_question_results_were_kept_have_no_units():
    for bench in ("pope", "gqa", "cvbench"):
        assert intervals.units({"benchmark": bench, "score": 80.0}) is None
