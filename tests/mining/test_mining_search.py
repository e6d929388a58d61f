"""The pair search: exact and IVF against an independent brute force over the full similarity
matrix, on planted pairs in clustered and isotropic random embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mining_helpers import ArrayRows

from mof_llava.mining.ivf import ivf_pairs, plan_ivf
from mof_llava.mining.kernel import BadEmbeddingError, Candidates
from mof_llava.mining.search import (
    RecallEstimate,
    SearchConfig,
    SearchReport,
    exact_pairs,
    load_unit_rows,
    sample_rows,
    sample_true_pairs,
)
from mof_llava.mining.synthetic import LayoutSpec, SyntheticSpec, make_collection

THRESHOLD = 0.95


def brute_force_pairs(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every (a < b) with cosine >= threshold, from the whole float64 similarity matrix."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    a, b = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(a.tolist(), b.tolist()))


def collect(chunks) -> tuple[list[tuple[int, int]], dict[tuple[int, int], float]]:
    pairs, scores = [], {}
    for chunk in chunks:
        for a, b, s in zip(chunk.a.tolist(), chunk.b.tolist(), chunk.score.tolist()):
            pairs.append((a, b))
            scores[(a, b)] = s
    return pairs, scores


def run_exact(x, cfg=None, threshold=THRESHOLD):
    cfg = cfg or SearchConfig()
    unit = load_unit_rows(ArrayRows(x), cfg)
    return collect(exact_pairs(unit, threshold, cfg, SearchReport("exact", len(x), x.shape[1])))


def run_ivf(x, cfg, threshold=THRESHOLD):
    report = SearchReport("ivf", len(x), x.shape[1])
    plan, unit = plan_ivf(ArrayRows(x), threshold, cfg, report)
    pairs, scores = collect(ivf_pairs(plan, unit, threshold, cfg, report))
    return pairs, scores, plan, unit, report


@pytest.fixture(scope="module", params=["clustered", "isotropic"])
def collection(request):
    layout = LayoutSpec(kind=request.param, concepts=40)
    spec = SyntheticSpec(
        rows=4000, clip_dim=48, dino_dim=32, blind_pairs=150, clip_layout=layout, dino_layout=layout, seed=3
    )
    return make_collection(spec)


@pytest.fixture(scope="module")
def truth(collection):
    return brute_force_pairs(collection.clip, THRESHOLD)


def test_exact_search_equals_brute_force(collection, truth):
    # Small tiles so that pairs cross tile borders in both directions.
    pairs, scores = run_exact(collection.clip, SearchConfig(tile_rows=300, tile_cols=700, workers=2))
    assert len(pairs) == len(set(pairs)), "a pair was reported twice"
    assert set(pairs) == truth
    planted = {tuple(p) for p in collection.planted.blind.tolist()}
    assert planted <= set(pairs)
    x = collection.clip.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for (a, b), score in scores.items():
        assert a < b
        assert score == pytest.approx(float(x[a] @ x[b]), abs=1e-6)


def test_ivf_with_slack_one_is_exact(collection, truth):
    """The probe rule at slack 1 is a proof that no pair is missed, whatever the clustering."""
    cfg = SearchConfig(method="ivf", lists=32, probe_slack=1.0, max_probes=0, tile_rows=256, tile_cols=512)
    pairs, _, _, _, report = run_ivf(collection.clip, cfg)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == truth
    assert report.lists == 32


@pytest.mark.parametrize("slack", [0.0, 0.1, 0.25])
def test_ivf_reports_each_compared_pair_once(collection, truth, slack):
    """Whatever the slack, the search returns exactly the true pairs its probes compare, once each,
    with the same similarity as exact search."""
    cfg = SearchConfig(method="ivf", lists=64, probe_slack=slack, tile_rows=128, tile_cols=256)
    pairs, scores, plan, _, _ = run_ivf(collection.clip, cfg)
    _, exact_scores = run_exact(collection.clip)
    assert len(pairs) == len(set(pairs))
    true = np.array(sorted(truth))
    compared = {tuple(p) for p in true[plan.finds(true[:, 0], true[:, 1])].tolist()}
    assert set(pairs) == compared
    assert all(scores[p] == exact_scores[p] for p in pairs)


def test_ivf_default_slack_finds_the_planted_pairs(collection, truth):
    cfg = SearchConfig(method="ivf", lists=64)
    pairs, _, _, _, report = run_ivf(collection.clip, cfg)
    planted = {tuple(p) for p in collection.planted.blind.tolist()}
    assert len(planted & set(pairs)) / len(planted) >= 0.99
    assert set(pairs) <= truth
    assert 1.0 <= report.probes_per_row < 64


def test_larger_slack_probes_more_and_misses_less(collection, truth):
    results = [
        run_ivf(collection.clip, SearchConfig(method="ivf", lists=64, probe_slack=s, max_probes=0))
        for s in (0.0, 0.3, 1.0)
    ]
    probes = [r[4].probes_per_row for r in results]
    found = [len(set(r[0])) for r in results]
    assert probes == sorted(probes) and probes[0] < 1.01  # slack 0: own cluster (and exact ties)
    assert found == sorted(found) and found[-1] == len(truth)


def test_max_probes_limits_the_rule_to_the_most_similar_clusters(collection):
    cfg = SearchConfig(method="ivf", lists=64, probe_slack=1.0, max_probes=3)
    _, _, plan, unit, report = run_ivf(collection.clip, cfg)
    rows = plan.probe_keys // plan.lists
    clusters = plan.probe_keys % plan.lists
    assert np.bincount(rows).max() <= 3
    assert report.probes_per_row <= 4.0
    # Every extra probe is among the row's 3 most similar clusters after its own.
    x = unit.unit(unit.positions_of(rows))
    scores = x @ plan.centroids.T
    rank = (scores > scores[np.arange(len(rows)), clusters][:, None]).sum(axis=1)  # 0 = most similar
    assert rank.min() >= 1 and rank.max() <= 3


def test_sampled_truth_is_exact_search_restricted_to_the_sample(collection, truth):
    cfg = SearchConfig(method="ivf", lists=64, tile_rows=100)
    _, _, plan, unit, _ = run_ivf(collection.clip, cfg)
    sample = sample_rows(len(collection.clip), 1500, seed=0)
    found = sample_true_pairs(unit, THRESHOLD, sample, cfg)
    in_sample = set(sample.tolist())
    expected = {p for p in truth if p[0] in in_sample or p[1] in in_sample}
    got = list(zip(found.a.tolist(), found.b.tolist()))
    assert len(got) == len(set(got))
    assert set(got) == expected


def test_wilson_interval_matches_the_formula():
    est = RecallEstimate(sample_rows=1000, true_pairs=50, found_pairs=49)
    low, high = est.interval()
    # Wilson 95% interval for 49/50, computed by hand: centre (p + z^2/2n)/(1 + z^2/n).
    z, n, p = 1.96, 50, 0.98
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert 0.89 < low < 0.9 and high > 0.996
    assert RecallEstimate(10, 0, 0).recall is None and RecallEstimate(10, 0, 0).interval() is None


def test_zero_and_nan_rows_are_named():
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    x[17] = 0
    with pytest.raises(BadEmbeddingError, match="row 17: embedding is all zeros"):
        run_exact(x)
    x[17] = 1
    x[31, 2] = np.nan
    with pytest.raises(BadEmbeddingError, match="row 31: embedding holds NaN"):
        run_ivf(x, SearchConfig(method="ivf", lists=2, train_rows_per_list=5))


def test_automatic_choices():
    cfg = SearchConfig()
    assert cfg.resolved_method(50_000) == "exact" and cfg.resolved_method(50_001) == "ivf"
    assert cfg.resolved_lists(1_000_000) == 2048
    assert cfg.resolved_lists(100_000) == 512
    assert cfg.resolved_lists(1000) == 25  # capped: at least 40 training rows per cluster
    with pytest.raises(ValueError, match="unknown search method"):
        SearchConfig(method="hnsw").resolved_method(10)


def test_candidates_select():
    c = Candidates(np.array([1, 2, 3]), np.array([4, 5, 6]), np.array([0.1, 0.2, 0.3]))
    picked = c.select(np.array([True, False, True]))
    assert picked.a.tolist() == [1, 3] and picked.score.tolist() == [0.1, 0.3]
