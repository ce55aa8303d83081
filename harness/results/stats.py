"""Pure statistics behind a leaderboard worth trusting (no file is read here).

Conventions (stated because they change numbers; ``docs/reports.md`` explains them for readers):

- **Mean over seeds with a 95% CI**: Student's t interval, ``scipy.stats.t.interval(0.95, n - 1,
  loc=mean, scale=sem)`` with ``sem = std(ddof=1) / sqrt(n)``. One seed has no interval (NaN); seeds
  that agree exactly give a zero-width interval.
- **Metrics from a confusion matrix** (``confusion``, ``metric_from_confusion``), vectorised so that a
  bootstrap can recompute them for thousands of resamples; each equals scikit-learn's definition (the
  tests hold them to it): ``macro_f1`` over all K classes with F1 = 0 for a class with no true and no
  predicted image (``zero_division=0``); ``balanced_accuracy`` the mean recall over the classes present;
  ``mcc`` Gorodkin's multi-class R_K (0 when undefined); ``accuracy``.
- **The primary test: a two-level paired bootstrap** (``two_level_bootstrap``) of the difference
  ``d = mean over seeds s of [M(a, s) - M(b, s)]`` for a metric M, where a and b were trained with the
  same seeds and tested on the same images. Two sources of variation make d uncertain: the *test images*
  (another draw of test images moves both methods' scores) and the *training seeds* (another seed moves
  a method's score by as much as the gaps between methods, on small training sets).

  Level 2, the test images, is resampled: each of B replicates draws N images with replacement and
  uses the same drawn images for both methods and, when every seed was tested on the same images (the
  usual case: the test split does not depend on the seed), for every seed, since the images are shared;
  ``e_b = d*_b - d`` is the replicate's deviation. Level 1, the seeds, is resampled as well with
  ``seed_level="resample"`` (S seeds drawn with replacement in each replicate): that is the textbook
  hierarchical bootstrap, but with 3 to 5 seeds it is not calibrated (3 seeds have 10 distinct
  resamples, and a test built on them rejected 16% of true null hypotheses in our simulation, see
  ``harness.results.calibration``). The default ``seed_level="t"`` uses the small-sample law of the
  seed level instead: the mean of S per-seed differences with standard deviation ``s`` varies as
  ``s / sqrt(S) * T`` with T Student's t on S - 1 degrees of freedom. The null distribution of the
  deviation of d is then the convolution ``e + s / sqrt(S) * T`` (the image replicates plus the seed
  term), a generalised p-value in the sense of Tsui and Weerahandi (1989):

      p = (1 + B * P(|e + s/sqrt(S) T| >= |d|)) / (B + 1),
      P(...) = mean_b [ t_sf((|d| - e_b) / sigma) + t_cdf((-|d| - e_b) / sigma) ],  sigma = s / sqrt(S),

  (the ``1 + B ...`` over ``B + 1`` of Efron and Tibshirani (1993, ch. 16), so p is never 0 and is 1 when
  the two methods agree on every image of every seed). With all the variation in the seeds it is the
  paired t-test over seeds; with none it is the bootstrap over test images. The 95% interval is the 2.5%
  and 97.5% quantiles of ``d + e + sigma T``. One paired seed (no seed variation measured) leaves the
  image level alone: the test then answers "do these two trained models differ on this test set", not
  "is this method better", and reports say so. The generator is seeded: a report is reproducible.
- **Secondary tests**, shown beside the primary one and described as such: the paired t-test over seeds
  of the per-seed differences (``scipy.stats.ttest_rel``; needs 2+ seeds; blind to the test images, all
  seeds sharing them) and McNemar's test of accuracy *per seed* (``per_seed_mcnemar``: one exact test
  per seed on its discordant pairs; pooling seeds that share test images would count each image
  several times as if independent, which makes p too small).
- **Multiple comparisons** (``adjust_p``): Holm's step-down (default; family-wise error) or
  Benjamini-Hochberg (false discovery rate) across the comparisons of one table; stars come from the
  adjusted p of the primary test.
- **Rank bands** (``rank_bands``): the top row and every row not significantly different from it
  (adjusted p >= alpha) form band 1; the best row left starts band 2 with every remaining row not
  significantly different from it (its own family, adjusted the same way), and so on down.
- **Across datasets** (``friedman``): ranks within each dataset (1 = best, ties averaged), mean ranks,
  Friedman's test (``scipy.stats.friedmanchisquare``) and the Nemenyi post-hoc
  (``scikit_posthocs.posthoc_nemenyi_friedman``) with Demsar's (2006) critical difference
  ``q_alpha sqrt(k (k + 1) / (6 N))``.
- **Pareto front** of quality (higher is better) against cost (lower is better): a point is on the front
  when no other point is at least as good on both and strictly better on one; points without a cost
  are not on the front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20_240_808
EXACT_MCNEMAR_MAX = 1000
PAIRED_METRICS = ("macro_f1", "balanced_accuracy", "mcc", "accuracy")  # computable from a confusion matrix
CORRECTIONS = {"holm": "Holm's step-down", "bh": "Benjamini-Hochberg"}
SEED_LEVELS = ("t", "resample")


# --------------------------------------------------------------------------------------------------
# Confidence intervals over seeds


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the Student's t interval for the mean of ``values`` (NaNs dropped)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, math.nan, math.nan
    sem = float(stats.sem(x))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


# --------------------------------------------------------------------------------------------------
# Metrics from confusion matrices (vectorised over leading axes)


def confusion(labels: np.ndarray, pred: np.ndarray, num_classes: int, weights: np.ndarray | None = None
              ) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted), ``(K, K)``; with ``weights`` of shape (B, N) (how
    often each image is drawn in each of B resamples) a stack ``(B, K, K)``."""
    k = num_classes
    codes = np.asarray(labels, dtype=np.int64) * k + np.asarray(pred, dtype=np.int64)
    if weights is None:
        return np.bincount(codes, minlength=k * k).reshape(k, k).astype(np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(codes, kind="stable")  # images grouped by (true, predicted): one sum per group
    present, starts = np.unique(codes[order], return_index=True)
    out = np.zeros((weights.shape[0], k * k))
    out[:, present] = np.add.reduceat(weights[:, order], starts, axis=1)
    return out.reshape(-1, k, k)


def macro_f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Macro-F1 from per-class counts of shape (..., K): the mean over K of 2TP / (2TP + FP + FN), 0 when
    the denominator is 0 (scikit-learn's ``zero_division=0`` over ``labels=range(K)``)."""
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(np.broadcast(tp, denom).shape, dtype=np.float64),
                   where=denom > 0)
    return f1.mean(axis=-1)


def metric_from_confusion(name: str, cm: np.ndarray) -> np.ndarray:
    """``macro_f1``, ``balanced_accuracy``, ``mcc`` or ``accuracy`` of confusion matrices (..., K, K)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true, predicted = cm.sum(axis=-1), cm.sum(axis=-2)  # per class: images of it, predictions of it
    total = true.sum(axis=-1)
    if name == "macro_f1":
        return macro_f1_counts(tp, predicted - tp, true - tp)
    if name == "accuracy":
        return np.divide(tp.sum(-1), total, out=np.zeros_like(total), where=total > 0)
    if name == "balanced_accuracy":  # mean recall over the classes present in y_true
        present = true > 0
        recall = np.divide(tp, true, out=np.zeros_like(tp), where=present)
        count = present.sum(-1)
        return np.divide(recall.sum(-1), count, out=np.zeros_like(total), where=count > 0)
    if name == "mcc":  # Gorodkin's R_K, as sklearn.metrics.matthews_corrcoef
        correct = tp.sum(-1)
        cov_tp = correct * total - (true * predicted).sum(-1)
        cov_pp = total ** 2 - (predicted * predicted).sum(-1)
        cov_tt = total ** 2 - (true * true).sum(-1)
        denom = np.sqrt(cov_tt * cov_pp)
        return np.divide(cov_tp, denom, out=np.zeros_like(total), where=denom > 0)
    raise ValueError(f"no confusion-matrix form for metric {name!r}; expected one of {', '.join(PAIRED_METRICS)}")


# --------------------------------------------------------------------------------------------------
# The primary test: a two-level paired bootstrap


@dataclass(frozen=True)
class PairedSet:
    """One seed's paired predictions, image by image (aligned by the caller): the true labels and the two
    methods' predicted classes. ``ids`` names the images (to tell whether seeds share their test set)."""

    labels: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray
    ids: np.ndarray | None = None

    def __post_init__(self):
        if not (len(self.labels) == len(self.pred_a) == len(self.pred_b)):
            raise ValueError(f"paired predictions need equal lengths; found labels {len(self.labels)}, "
                             f"a {len(self.pred_a)}, b {len(self.pred_b)}")
        if len(self.labels) == 0:
            raise ValueError("paired predictions are empty")


def _resample_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates, n): how often each image is drawn in each bootstrap resample of size n."""
    draws = rng.integers(0, n, size=(replicates, n))
    offsets = (np.arange(replicates) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=replicates * n).reshape(replicates, n).astype(
        np.float64)


def shares_test_images(sets: Sequence[PairedSet]) -> bool:
    """Whether every seed was tested on the same images (by id when given, else by the label sequence)."""
    first = sets[0]
    for s in sets[1:]:
        if len(s.labels) != len(first.labels):
            return False
        if s.ids is not None and first.ids is not None:
            if not np.array_equal(s.ids, first.ids):
                return False
        elif not np.array_equal(s.labels, first.labels):
            return False
    return True


def image_replicates(sets: Sequence[PairedSet], num_classes: int, metrics: Sequence[str], *,
                     replicates: int, rng: np.random.Generator, chunk: int = 250) -> dict[str, np.ndarray]:
    """Per metric, the per-seed differences ``M(a) - M(b)`` under B image resamples: ``(B, S)``. Seeds that
    share their test images share each resample; otherwise each seed is resampled on its own."""
    shared = shares_test_images(sets)
    out = {m: np.empty((replicates, len(sets))) for m in metrics}
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        weights = _resample_counts(rng, len(sets[0].labels), size) if shared else None
        for j, s in enumerate(sets):
            w = weights if shared else _resample_counts(rng, len(s.labels), size)
            cm_a = confusion(s.labels, s.pred_a, num_classes, w)
            cm_b = confusion(s.labels, s.pred_b, num_classes, w)
            for m in metrics:
                out[m][start:start + size, j] = metric_from_confusion(m, cm_a) - metric_from_confusion(m, cm_b)
    return out


def per_seed_differences(sets: Sequence[PairedSet], num_classes: int, metric: str) -> np.ndarray:
    """``M(a, s) - M(b, s)`` for each paired seed s."""
    return np.array([float(metric_from_confusion(metric, confusion(s.labels, s.pred_a, num_classes))
                           - metric_from_confusion(metric, confusion(s.labels, s.pred_b, num_classes)))
                     for s in sets])


def seed_level_tail(e: np.ndarray, observed: float, sigma: float, df: int) -> float:
    """``P(|e + sigma T| >= |observed|)`` with e uniform over the image replicates and T ~ t(df); sigma = 0
    leaves the image replicates alone."""
    from scipy import stats

    c = abs(observed)
    if sigma <= 0 or df < 1:
        return float(np.mean(np.abs(e) >= c - 1e-12))
    t = stats.t(df)
    return float(np.mean(t.sf((c - e) / sigma) + t.cdf((-c - e) / sigma)))


def _convolution_quantiles(center: float, e: np.ndarray, sigma: float, df: int, qs: Sequence[float]
                           ) -> list[float]:
    """Quantiles of ``center + e + sigma T`` (e uniform over the replicates, T ~ t(df))."""
    from scipy import optimize, stats

    if sigma <= 0 or df < 1:
        return [float(v) for v in np.quantile(center + e, qs)]
    t = stats.t(df)
    out = []
    for q in qs:
        lo = center + e.min() + sigma * t.ppf(min(q, 1 - q) / 2)
        hi = center + e.max() + sigma * t.ppf(1 - min(q, 1 - q) / 2)
        out.append(float(optimize.brentq(lambda x, q=q: float(np.mean(t.cdf((x - center - e) / sigma))) - q,
                                         lo, hi, xtol=1e-7)))
    return out


def two_level_bootstrap(
    sets: Sequence[PairedSet], num_classes: int, metrics: Sequence[str] = ("macro_f1",), *,
    replicates: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE,
    seed_level: str = "t", interval: bool = True,
) -> dict[str, dict[str, Any]]:
    """The two-level paired bootstrap of ``mean_s [M(a, s) - M(b, s)]`` for each metric (see the module
    docstring). Per metric: ``diff`` (observed), ``low`` / ``high`` (the CI), ``p_value`` (two-sided),
    ``se_images`` (the image level's standard deviation), ``sd_seeds`` (the per-seed differences'
    standard deviation, NaN for one seed), ``seeds``, ``replicates``, ``seed_level``, ``shared_images``.
    ``interval=False`` skips the CI (NaN), for when only the p-value is needed."""
    if not sets:
        raise ValueError("the two-level bootstrap needs at least one paired seed")
    if seed_level not in SEED_LEVELS:
        raise ValueError(f"seed_level must be one of {SEED_LEVELS}; found {seed_level!r}")
    rng = np.random.default_rng(seed)
    n_seeds = len(sets)
    per_image = image_replicates(sets, num_classes, metrics, replicates=replicates, rng=rng)
    seed_draws = rng.integers(0, n_seeds, size=(replicates, n_seeds)) if seed_level == "resample" else None
    tail = (1.0 - confidence) / 2.0
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        d_s = per_seed_differences(sets, num_classes, m)
        d = float(d_s.mean())
        reps = per_image[m]  # (B, S)
        if seed_level == "resample":
            star = np.take_along_axis(reps, seed_draws, axis=1).mean(axis=1)
            e, sigma = star - d, 0.0
        else:
            e = reps.mean(axis=1) - d
            sigma = float(d_s.std(ddof=1) / math.sqrt(n_seeds)) if n_seeds > 1 else 0.0
        p_raw = seed_level_tail(e, d, sigma, n_seeds - 1)
        low, high = (_convolution_quantiles(d, e, sigma, n_seeds - 1, [tail, 1.0 - tail]) if interval
                     else (math.nan, math.nan))
        out[m] = {"diff": d, "low": low, "high": high, "p_value": float((1 + replicates * p_raw) / (replicates + 1)),
                  "se_images": float(reps.mean(axis=1).std(ddof=1)),
                  "sd_seeds": float(d_s.std(ddof=1)) if n_seeds > 1 else math.nan,
                  "seed_diffs": d_s.tolist(), "seeds": n_seeds, "replicates": replicates, "seed_level": seed_level,
                  "shared_images": shares_test_images(sets)}
    return out


# --------------------------------------------------------------------------------------------------
# Secondary tests


def paired_seed_ttest(sets: Sequence[PairedSet], num_classes: int, metric: str = "macro_f1") -> dict[str, Any]:
    """Paired t-test over seeds of ``M(a) - M(b)`` (secondary; see the module docstring).

    Returns the per-seed ``diffs``, ``statistic`` and ``p_value`` (None when it cannot be computed: fewer than
    two seeds, or non-zero differences that are all equal)."""
    from scipy import stats

    diffs = per_seed_differences(sets, num_classes, metric).tolist()
    out: dict[str, Any] = {"diffs": diffs, "statistic": None, "p_value": None}
    if len(diffs) < 2:
        return out
    if np.ptp(diffs) <= 1e-12:  # zero variance: t is undefined unless every difference is zero
        if abs(diffs[0]) <= 1e-12:
            out.update(statistic=0.0, p_value=1.0)
        return out
    result = stats.ttest_1samp(diffs, 0.0)  # = ttest_rel of the per-seed scores
    out.update(statistic=float(result.statistic), p_value=float(result.pvalue))
    return out


def mcnemar(b: int, c: int, *, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test from the discordant counts ``b`` (a right, b wrong) and ``c`` (the reverse).

    ``exact=None`` picks the exact binomial test up to ``EXACT_MCNEMAR_MAX`` discordant pairs and the
    continuity-corrected chi-square above it."""
    from scipy import stats

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"McNemar needs non-negative discordant counts; found b={b}, c={c}")
    n = b + c
    if exact is None:
        exact = n <= EXACT_MCNEMAR_MAX
    if n == 0:
        return {"b": b, "c": c, "p_value": 1.0, "test": "exact" if exact else "chi2-cc", "statistic": 0.0}
    if exact:
        p = stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue
        return {"b": b, "c": c, "p_value": float(min(1.0, p)), "test": "exact", "statistic": float(min(b, c))}
    statistic = (abs(b - c) - 1.0) ** 2 / n
    return {"b": b, "c": c, "p_value": float(stats.chi2.sf(statistic, 1)), "test": "chi2-cc",
            "statistic": float(statistic)}


def per_seed_mcnemar(sets: Sequence[PairedSet], *, exact: bool | None = None) -> list[dict[str, Any]]:
    """McNemar's test of accuracy for each paired seed on its own (never pooled over seeds), with the
    seed's accuracy difference a - b."""
    out = []
    for s in sets:
        right_a, right_b = np.asarray(s.pred_a) == s.labels, np.asarray(s.pred_b) == s.labels
        test = mcnemar(int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b)), exact=exact)
        test["accuracy_diff"] = float(right_a.mean() - right_b.mean())
        out.append(test)
    return out


# --------------------------------------------------------------------------------------------------
# Multiple comparisons and rank bands


def adjust_p(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """p-values adjusted for the comparisons of one family: ``holm`` (Holm 1979, step-down, family-wise
    error) or ``bh`` (Benjamini and Hochberg 1995, false discovery rate). None stays None (no test) and
    does not count as a comparison."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}; found {method!r}")
    index = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    p = np.asarray([p_values[i] for i in index], dtype=np.float64)
    m = len(p)
    out: list[float | None] = [None] * len(p_values)
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":  # p_(i) * (m - i + 1), made monotone from the smallest up
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:  # p_(i) * m / i, made monotone from the largest down
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    adjusted = np.minimum(adjusted, 1.0)
    result = np.empty(m)
    result[order] = adjusted
    for i, value in zip(index, result):
        out[i] = float(value)
    return out


def rank_bands(n_rows: int, p_value: Callable[[int, int], float | None], *, method: str = "holm",
               alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Bands of statistically tied rows. Rows ``0 .. n_rows - 1`` are in rank order; ``p_value(leader, row)``
    is the primary test's p of ``row`` against ``leader`` (None: no test). Band 1 is row 0 and every row
    whose adjusted p against it is >= alpha; the best row left leads band 2, with its own family of
    comparisons, and so on. A row with no test against its band's leader cannot be placed: its band is
    None. Returns, per row, ``band``, ``leader`` and ``p_adjusted`` (against that leader)."""
    out: list[dict[str, Any]] = [{"band": None, "leader": None, "p_adjusted": None} for _ in range(n_rows)]
    left = list(range(n_rows))
    band = 0
    while left:
        leader, rest = left[0], left[1:]
        band += 1
        raw = [p_value(leader, r) for r in rest]
        adjusted = adjust_p(raw, method)
        out[leader] = {"band": band, "leader": leader, "p_adjusted": None}
        nxt = []
        for r, p in zip(rest, adjusted):
            if p is None:
                out[r] = {"band": None, "leader": leader, "p_adjusted": None}
            elif p >= alpha:
                out[r] = {"band": band, "leader": leader, "p_adjusted": p}
            else:
                nxt.append(r)
        left = nxt
    return out


# --------------------------------------------------------------------------------------------------
# Across datasets


def friedman(scores: np.ndarray, names: Sequence[str], *, alpha: float = ALPHA) -> dict[str, Any]:
    """Ranks of k methods over N datasets (``scores``: (N, k), higher is better), Friedman's test and the
    Nemenyi post-hoc (scikit-posthocs), with Demsar's critical difference of mean ranks. Needs N >= 2 and
    k >= 3 (Friedman's test is undefined below that)."""
    import pandas as pd
    import scikit_posthocs as sp
    from scipy import stats

    scores = np.asarray(scores, dtype=np.float64)
    n, k = scores.shape
    if n < 2 or k < 3:
        raise ValueError(f"Friedman's test needs at least 2 datasets and 3 methods; found {n} and {k}")
    if np.isnan(scores).any():
        raise ValueError("Friedman's test needs every method scored on every dataset")
    ranks = stats.rankdata(-scores, axis=1)  # 1 = best, ties averaged
    test = stats.friedmanchisquare(*scores.T)
    nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(scores, columns=list(names)))
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return {"names": list(names), "blocks": n, "mean_ranks": ranks.mean(axis=0).tolist(), "ranks": ranks.tolist(),
            "statistic": float(test.statistic), "p_value": float(test.pvalue),
            "nemenyi": nemenyi.loc[list(names), list(names)].to_numpy().tolist(),
            "critical_difference": float(q_alpha * math.sqrt(k * (k + 1) / (6.0 * n)))}


# --------------------------------------------------------------------------------------------------
# Pareto front


def pareto_front(quality: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """For each point, whether it is on the front of higher ``quality`` and lower ``cost``."""
    q = np.asarray([math.nan if v is None else v for v in quality], dtype=np.float64)
    c = np.asarray([math.nan if v is None else v for v in cost], dtype=np.float64)
    if q.shape != c.shape:
        raise ValueError(f"quality and cost need the same length; found {len(q)} and {len(c)}")
    valid = ~(np.isnan(q) | np.isnan(c))
    out = []
    for i in range(len(q)):
        if not valid[i]:
            out.append(False)
            continue
        dominated = valid & (q >= q[i]) & (c <= c[i]) & ((q > q[i]) | (c < c[i]))
        out.append(not bool(dominated.any()))
    return out
