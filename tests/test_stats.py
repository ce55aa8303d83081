"""harness.results.stats: confidence intervals, paired tests and the Pareto front against scipy / sklearn computed
directly on small known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from harness.results.stats import (
    PairedSet,
    macro_f1_counts,
    mcnemar,
    mean_ci,
    paired_bootstrap_macro_f1,
    paired_mcnemar,
    paired_seed_ttest,
    pareto_front,
)


def _f1(y, p, k):
    return f1_score(y, p, average="macro", labels=np.arange(k), zero_division=0)


def _f1_fast(y, p, k):
    """Macro-F1 from a bincount confusion matrix: scikit-learn's definition, fast enough to bootstrap."""
    cm = np.bincount(np.asarray(y) * k + np.asarray(p), minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)))


def _noisy(y, k, accuracy, rng):
    return np.where(rng.random(len(y)) < accuracy, y, rng.integers(0, k, len(y)))


# ---------------------------------------------------------------- confidence intervals


@pytest.mark.parametrize("values", [[0.61, 0.55, 0.58], [0.2, 0.9], [1.0, 2.0, 4.0, 8.0, 16.0]])
def test_mean_ci_is_scipy_t_interval(values):
    x = np.asarray(values)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(len(x)))
    mean, lo, hi = mean_ci(values)
    assert mean == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((low, high))


def test_mean_ci_three_known_values_closed_form():
    # mean 2, sd 1, n 3: half-width t_{0.975,2} * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert (hi - lo) / 2 == pytest.approx(2.484138, abs=1e-6)


def test_mean_ci_edge_cases():
    mean, lo, hi = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert mean_ci([0.4, None, float("nan"), 0.6])[0] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in mean_ci([]))


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize("b,c", [(3, 9), (0, 7), (12, 12), (40, 25)])
def test_mcnemar_exact_is_binomtest(b, c):
    out = mcnemar(b, c)
    assert out["test"] == "exact"
    assert out["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


def test_mcnemar_chi2_with_continuity_correction():
    out = mcnemar(600, 500)
    assert out["test"] == "chi2-cc"
    assert out["statistic"] == pytest.approx((100 - 1) ** 2 / 1100)
    assert out["p_value"] == pytest.approx(stats.chi2.sf((100 - 1) ** 2 / 1100, 1))
    forced = mcnemar(30, 10, exact=False)
    assert forced["p_value"] == pytest.approx(stats.chi2.sf(19 ** 2 / 40, 1))


def test_mcnemar_no_discordant_pairs_and_bad_input():
    assert mcnemar(0, 0)["p_value"] == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar(-1, 3)


def test_paired_mcnemar_counts_discordant_pairs():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    a = np.array([0, 1, 2, 0, 1, 2, 1, 1])  # wrong on image 6
    b = np.array([0, 0, 2, 1, 1, 2, 0, 2])  # wrong on images 1, 3, 7
    out = paired_mcnemar([PairedSet(y, a, b)])
    assert (out["b"], out["c"]) == (3, 1)
    assert out["p_value"] == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)
    assert out["accuracy_diff"] == pytest.approx(7 / 8 - 5 / 8)
    pooled = paired_mcnemar([PairedSet(y, a, b), PairedSet(y, a, b)])
    assert (pooled["b"], pooled["c"]) == (6, 2)


# ---------------------------------------------------------------- paired bootstrap


def test_macro_f1_counts_matches_sklearn():
    rng = np.random.default_rng(1)
    k = 4
    y = rng.integers(0, k - 1, 60)  # class 3 never true
    p = rng.integers(0, k, 60)
    tp = np.array([np.sum((y == c) & (p == c)) for c in range(k)])
    fp = np.array([np.sum((y != c) & (p == c)) for c in range(k)])
    fn = np.array([np.sum((y == c) & (p != c)) for c in range(k)])
    assert macro_f1_counts(tp, fp, fn) == pytest.approx(_f1(y, p, k))


def test_bootstrap_observed_difference_and_ci_agree_with_scipy_bootstrap():
    rng = np.random.default_rng(7)
    k, n = 3, 150
    y = rng.integers(0, k, n)
    a, b = _noisy(y, k, 0.75, rng), _noisy(y, k, 0.55, rng)
    out = paired_bootstrap_macro_f1([PairedSet(y, a, b)], k, replicates=3000, seed=3)
    assert out["diff"] == pytest.approx(_f1(y, a, k) - _f1(y, b, k))
    assert _f1_fast(y, a, k) == pytest.approx(_f1(y, a, k))
    ref = stats.bootstrap(
        (y, a, b), lambda yy, aa, bb: _f1_fast(yy, aa, k) - _f1_fast(yy, bb, k), paired=True, vectorized=False,
        n_resamples=3000, method="percentile", confidence_level=0.95, rng=np.random.default_rng(11),
    )
    # two independent Monte Carlo estimates of the same percentile interval (standard error ~0.005)
    assert out["low"] == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert out["high"] == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert out["low"] < out["diff"] < out["high"]


def test_bootstrap_p_value_against_the_direct_definition():
    """Recompute p = (1 + #{|d* - d| >= |d|}) / (B + 1) with a plain loop over the same resamples."""
    rng = np.random.default_rng(5)
    k, n, replicates, seed = 3, 40, 300, 9
    y = rng.integers(0, k, n)
    a, b = _noisy(y, k, 0.7, rng), _noisy(y, k, 0.6, rng)
    out = paired_bootstrap_macro_f1([PairedSet(y, a, b)], k, replicates=replicates, seed=seed, chunk=replicates)
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    d = _f1(y, a, k) - _f1(y, b, k)
    assert _f1_fast(y[draws[0]], a[draws[0]], k) == pytest.approx(_f1(y[draws[0]], a[draws[0]], k))
    dstar = np.array([_f1_fast(y[i], a[i], k) - _f1_fast(y[i], b[i], k) for i in draws])
    assert out["p_value"] == pytest.approx((1 + np.sum(np.abs(dstar - d) >= abs(d) - 1e-12)) / (replicates + 1))
    assert (out["low"], out["high"]) == pytest.approx(tuple(np.quantile(dstar, [0.025, 0.975])))


def test_better_on_every_image_is_significant_identical_is_not():
    rng = np.random.default_rng(0)
    k, n = 3, 60
    y = rng.integers(0, k, n)
    perfect = y.copy()
    wrong = (y + 1) % k  # wrong on every image
    better = paired_bootstrap_macro_f1([PairedSet(y, perfect, wrong)], k, replicates=500)
    assert better["diff"] == pytest.approx(1.0)
    assert better["p_value"] < 0.05 and better["low"] > 0
    mc = paired_mcnemar([PairedSet(y, perfect, wrong)])
    assert (mc["b"], mc["c"]) == (n, 0) and mc["p_value"] < 0.05

    same = _noisy(y, k, 0.6, rng)
    ident = paired_bootstrap_macro_f1([PairedSet(y, same, same.copy())], k, replicates=500)
    assert ident["diff"] == 0.0 and ident["p_value"] == 1.0 and ident["low"] == ident["high"] == 0.0
    assert paired_mcnemar([PairedSet(y, same, same.copy())])["p_value"] == 1.0


def test_bootstrap_over_seeds_is_mean_of_per_seed_differences_and_is_seeded():
    rng = np.random.default_rng(2)
    k, n = 4, 80
    y = rng.integers(0, k, n)
    sets = [PairedSet(y, _noisy(y, k, 0.7, rng), _noisy(y, k, 0.6, rng)) for _ in range(3)]
    out = paired_bootstrap_macro_f1(sets, k, replicates=400, seed=1)
    assert out["diff"] == pytest.approx(np.mean([_f1(y, s.pred_a, k) - _f1(y, s.pred_b, k) for s in sets]))
    assert paired_bootstrap_macro_f1(sets, k, replicates=400, seed=1) == out
    assert paired_bootstrap_macro_f1(sets, k, replicates=400, seed=2) != out
    # seeds tested on different images are resampled independently, and still averaged
    other = PairedSet(y[:50], sets[0].pred_a[:50], sets[0].pred_b[:50])
    mixed = paired_bootstrap_macro_f1([sets[0], other], k, replicates=200)
    expected = np.mean([_f1(y, sets[0].pred_a, k) - _f1(y, sets[0].pred_b, k),
                        _f1(y[:50], other.pred_a, k) - _f1(y[:50], other.pred_b, k)])
    assert mixed["diff"] == pytest.approx(expected)


def test_seed_ttest_is_scipy_ttest_rel_on_per_seed_macro_f1():
    rng = np.random.default_rng(5)
    k, n = 3, 70
    y = rng.integers(0, k, n)
    sets = [PairedSet(y, _noisy(y, k, acc_a, rng), _noisy(y, k, 0.6, rng)) for acc_a in (0.8, 0.65, 0.5)]
    out = paired_seed_ttest(sets, k)
    f1_a = [_f1(y, s.pred_a, k) for s in sets]
    f1_b = [_f1(y, s.pred_b, k) for s in sets]
    assert out["diffs"] == pytest.approx([a - b for a, b in zip(f1_a, f1_b)])
    expected = stats.ttest_rel(f1_a, f1_b)
    assert out["p_value"] == pytest.approx(expected.pvalue)
    assert out["statistic"] == pytest.approx(expected.statistic)


def test_seed_ttest_edge_cases():
    rng = np.random.default_rng(6)
    k, n = 3, 40
    y = rng.integers(0, k, n)
    a, b = _noisy(y, k, 0.8, rng), _noisy(y, k, 0.5, rng)
    one = paired_seed_ttest([PairedSet(y, a, b)], k)  # one seed: no test
    assert one["p_value"] is None and len(one["diffs"]) == 1
    same = paired_seed_ttest([PairedSet(y, a, a.copy()), PairedSet(y, b, b.copy())], k)
    assert same["p_value"] == 1.0 and same["diffs"] == [0.0, 0.0]
    constant = paired_seed_ttest([PairedSet(y, a, b), PairedSet(y, a, b)], k)  # non-zero, zero variance
    assert constant["p_value"] is None and constant["diffs"][0] == constant["diffs"][1] != 0


def test_paired_set_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        PairedSet(np.zeros(3), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap_macro_f1([], 3)


# ---------------------------------------------------------------- Pareto front


def test_pareto_front_of_known_points():
    #            quality  cost
    points = [(0.90, 10.0),   # best quality: front
              (0.80, 1.0),    # fastest: front
              (0.85, 5.0),    # between: front
              (0.70, 2.0),    # dominated by (0.80, 1.0)
              (0.85, 6.0),    # dominated by (0.85, 5.0) (equal quality, slower)
              (0.95, None),   # no latency: never on the front
              (0.80, 1.0)]    # duplicate of a front point: not dominated, so also on the front
    q, c = zip(*points)
    assert pareto_front(q, c) == [True, True, True, False, False, False, True]


def test_pareto_front_single_point_and_mismatch():
    assert pareto_front([0.5], [3.0]) == [True]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="same length"):
        pareto_front([0.5, 0.6], [1.0])
