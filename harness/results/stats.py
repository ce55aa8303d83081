"""Statistics behind a leaderboard worth trusting: confidence intervals over seeds, paired tests on the
shared test images, per-class recall, confusion matrices and the quality-versus-latency Pareto front.

Conventions (stated because they change numbers):

- **Mean over seeds with a 95% CI**: Student's t interval, ``scipy.stats.t.interval(0.95, n - 1,
  loc=mean, scale=sem)`` with ``sem = std(ddof=1) / sqrt(n)``. One seed has no interval (NaN); seeds
  that agree exactly give a zero-width interval.
- **Paired comparisons** are made between each (method, sampler) and the top one of its dataset (rank 1
  by mean Macro-F1), on the seeds both finished, image by image. A seed is paired only when both trials
  predicted the same test images (same ``index`` and ``label`` columns); other seeds are left out and
  counted in ``unpaired_seeds``. A seed with several trials in one group (say, two experiments under the
  same root) is paired once, by its newest trial.
- **Paired bootstrap of the Macro-F1 difference**: the statistic is the mean over paired seeds of
  ``MacroF1(method) - MacroF1(top)`` (so it equals the difference of the leaderboard means over those
  seeds). Each replicate resamples test images with replacement and uses the *same* resampled images for
  both methods; when every paired seed has the same test set (the usual case: the test split does not
  depend on the trial seed) the same resample is used for every seed too, so the image is the unit that
  is resampled; otherwise each seed is resampled on its own. Macro-F1 is computed as in
  ``plugins/metrics/__init__.py`` (all K classes, F1 = 0 for a class with no true and no predicted images).
  The 95% CI is the percentile interval of the replicates; the two-sided p-value is the share of
  replicates of the centred distribution at least as far from zero as the observed difference,
  ``(1 + #{|d*_b - d| >= |d|}) / (B + 1)`` (Efron and Tibshirani 1993, ch. 16), so it is never 0 and is
  1 when the two methods agree on every image. The generator is seeded: a report is reproducible.
- **McNemar's test for accuracy**: the paired seeds' predictions are pooled (concatenated), and the
  discordant pairs counted: ``b`` = images the method gets right and the top gets wrong, ``c`` = the
  reverse. With ``b + c <= EXACT_MCNEMAR_MAX`` the exact test is used (``scipy.stats.binomtest(b, b + c,
  0.5)``, two-sided); above it, the chi-square statistic with continuity correction
  ``(|b - c| - 1)^2 / (b + c)`` on one degree of freedom. No discordant pairs gives p = 1.
  Pooling seeds that share test images treats repeated images as independent pairs; with one seed the
  test is exact McNemar.
- **Paired t-test over seeds of the Macro-F1 difference**: the bootstrap above and McNemar hold the trained
  models fixed and ask whether the gap survives a different draw of *test images*; they say nothing about
  a different draw of *training randomness* (initialisation, augmentation, batch order), which with small
  training sets is often the larger source of variation. This test asks that question: the per-seed
  differences ``MacroF1(method, s) - MacroF1(top, s)`` over the paired seeds go to
  ``scipy.stats.ttest_rel`` (two-sided, n - 1 degrees of freedom). It needs at least two paired seeds
  (otherwise no p-value); differences that are all equal give p = 1 when they are zero and no p-value
  otherwise (zero variance). With 3 seeds it has little power: a p above 0.05 is "not shown", not "equal".
- p-values are not corrected for multiple comparisons; a difference is marked significant when p < 0.05.
- **Per-class recall and the confusion matrix** are pooled over seeds: the confusion matrices of the
  seeds (rows = true class, columns = predicted, ``sklearn.metrics.confusion_matrix`` with all K labels)
  are summed, and recall is the diagonal over the row sums (NaN for a class with no test images).
- **Pareto front** of Macro-F1 (higher is better) against milliseconds per image at batch 1 (lower is
  better): a point is on the front when no other point is at least as good on both and strictly better
  on one. Points without a latency are not on the front.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05
CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20_240_808
EXACT_MCNEMAR_MAX = 1000
CI_METRICS = ("macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc", "ece", "ms_per_image_b1",
              "ms_per_image_b64")


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
# Paired tests


def macro_f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Macro-F1 from per-class counts of shape (..., K): the mean over K of 2TP / (2TP + FP + FN), 0 when
    the denominator is 0 (scikit-learn's ``zero_division=0`` over ``labels=range(K)``)."""
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(np.broadcast(tp, denom).shape, dtype=np.float64),
                   where=denom > 0)
    return f1.mean(axis=-1)


def _indicators(labels: np.ndarray, pred: np.ndarray, num_classes: int):
    classes = np.arange(num_classes)
    is_true = labels[:, None] == classes[None, :]
    is_pred = pred[:, None] == classes[None, :]
    tp = (is_true & is_pred).astype(np.float64)
    fp = (~is_true & is_pred).astype(np.float64)
    fn = (is_true & ~is_pred).astype(np.float64)
    return tp, fp, fn


def _macro_f1(labels, pred, num_classes: int) -> float:
    return float(macro_f1_counts(*(x.sum(0) for x in _indicators(np.asarray(labels), np.asarray(pred),
                                                                   num_classes))))


def _resample_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates, n): how often each image is drawn in each bootstrap resample of size n."""
    draws = rng.integers(0, n, size=(replicates, n))
    offsets = (np.arange(replicates) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=replicates * n).reshape(replicates, n).astype(
        np.float64)


@dataclass(frozen=True)
class PairedSet:
    """One seed's paired predictions: true labels and the two methods' predicted classes, image by image."""

    labels: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray

    def __post_init__(self):
        if not (len(self.labels) == len(self.pred_a) == len(self.pred_b)):
            raise ValueError(f"paired predictions need equal lengths; found labels {len(self.labels)}, "
                             f"a {len(self.pred_a)}, b {len(self.pred_b)}")
        if len(self.labels) == 0:
            raise ValueError("paired predictions are empty")


def paired_bootstrap_macro_f1(
    sets: Sequence[PairedSet], num_classes: int, *, replicates: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE, chunk: int = 250,
) -> dict[str, float]:
    """Paired bootstrap of mean-over-seeds ``MacroF1(a) - MacroF1(b)`` (see the module docstring).

    Returns ``diff`` (observed), ``low`` / ``high`` (percentile CI), ``p_value`` (two-sided) and
    ``replicates``."""
    if not sets:
        raise ValueError("paired bootstrap needs at least one paired seed")
    rng = np.random.default_rng(seed)
    parts = []
    for s in sets:
        ta, fa, na = _indicators(np.asarray(s.labels), np.asarray(s.pred_a), num_classes)
        tb, fb, nb = _indicators(np.asarray(s.labels), np.asarray(s.pred_b), num_classes)
        parts.append((ta, fa, na, tb, fb, nb))
    observed = float(np.mean([macro_f1_counts(p[0].sum(0), p[1].sum(0), p[2].sum(0))
                              - macro_f1_counts(p[3].sum(0), p[4].sum(0), p[5].sum(0)) for p in parts]))
    shared = all(len(s.labels) == len(sets[0].labels) and np.array_equal(s.labels, sets[0].labels) for s in sets)
    diffs = np.empty(replicates, dtype=np.float64)
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        total = np.zeros(size)
        weights = _resample_counts(rng, len(sets[0].labels), size) if shared else None
        for s, (ta, fa, na, tb, fb, nb) in zip(sets, parts):
            w = weights if shared else _resample_counts(rng, len(s.labels), size)
            total += macro_f1_counts(w @ ta, w @ fa, w @ na) - macro_f1_counts(w @ tb, w @ fb, w @ nb)
        diffs[start:start + size] = total / len(sets)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    extreme = np.count_nonzero(np.abs(diffs - observed) >= abs(observed) - 1e-12)
    return {"diff": observed, "low": float(low), "high": float(high),
            "p_value": float((1 + extreme) / (replicates + 1)), "replicates": replicates}


def paired_seed_ttest(sets: Sequence[PairedSet], num_classes: int) -> dict[str, Any]:
    """Paired t-test over seeds of ``MacroF1(a) - MacroF1(b)`` (see the module docstring).

    Returns the per-seed ``diffs``, ``statistic`` and ``p_value`` (None when it cannot be computed: fewer than
    two seeds, or non-zero differences that are all equal)."""
    from scipy import stats

    f1_a = [_macro_f1(s.labels, s.pred_a, num_classes) for s in sets]
    f1_b = [_macro_f1(s.labels, s.pred_b, num_classes) for s in sets]
    diffs = [a - b for a, b in zip(f1_a, f1_b)]
    out: dict[str, Any] = {"diffs": diffs, "statistic": None, "p_value": None}
    if len(diffs) < 2:
        return out
    if np.ptp(diffs) <= 1e-12:  # zero variance: t is undefined unless every difference is zero
        if abs(diffs[0]) <= 1e-12:
            out.update(statistic=0.0, p_value=1.0)
        return out
    result = stats.ttest_rel(f1_a, f1_b)
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


def paired_mcnemar(sets: Sequence[PairedSet], *, exact: bool | None = None) -> dict[str, Any]:
    """McNemar on the pooled (concatenated) paired seeds; also the observed accuracy difference a - b."""
    if not sets:
        raise ValueError("McNemar needs at least one paired seed")
    labels = np.concatenate([s.labels for s in sets])
    right_a = np.concatenate([s.pred_a for s in sets]) == labels
    right_b = np.concatenate([s.pred_b for s in sets]) == labels
    out = mcnemar(int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b)), exact=exact)
    out["accuracy_diff"] = float(right_a.mean() - right_b.mean())
    return out


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


# --------------------------------------------------------------------------------------------------
# From a runs folder to a summary


@dataclass
class TrialPredictions:
    seed: int
    path: Path
    labels: np.ndarray
    pred: np.ndarray
    index: np.ndarray
    num_classes: int
    classes: list[str]
    result: dict


@dataclass
class GroupDetail:
    """Everything the report shows about one (dataset, method, sampler)."""

    dataset: str
    method: str
    sampler: str
    trials: list[TrialPredictions] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    confusion: np.ndarray | None = None
    recall: np.ndarray | None = None
    comparison: dict[str, Any] = field(default_factory=dict)


def load_predictions(path: Path, result: dict) -> TrialPredictions | None:
    """A trial's ``predictions.parquet`` (sorted by image index), or None when it is missing."""
    import polars as pl

    file = Path(path) / "predictions.parquet"
    if not file.exists():
        return None
    frame = pl.read_parquet(file).sort("index")
    probs = [c for c in frame.columns if c.startswith("prob_") and c[5:].isdigit()]
    labels = frame["label"].to_numpy().astype(np.int64)
    pred = frame["pred"].to_numpy().astype(np.int64)
    k = int(result.get("num_classes") or len(probs) or (max(labels.max(), pred.max()) + 1))
    classes = [str(c) for c in (result.get("classes") or range(k))]
    return TrialPredictions(seed=int(result.get("seed", 0)), path=Path(path), labels=labels, pred=pred,
                            index=frame["index"].to_numpy(), num_classes=k, classes=classes, result=result)


def _confusion(trials: list[TrialPredictions], k: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import confusion_matrix

    total = np.zeros((k, k), dtype=np.int64)
    for t in trials:
        total += confusion_matrix(t.labels, t.pred, labels=np.arange(k))
    rows = total.sum(axis=1)
    recall = np.divide(np.diag(total).astype(np.float64), rows, out=np.full(k, np.nan), where=rows > 0)
    return total, recall


def _one_per_seed(trials: list[TrialPredictions]) -> dict[int, TrialPredictions]:
    """Seed -> its newest trial (by the result's ``finished`` time), in seed order."""
    newest: dict[int, TrialPredictions] = {}
    for t in sorted(trials, key=lambda t: (t.seed, str(t.result.get("finished") or ""))):
        newest[t.seed] = t
    return newest


def compare(method: GroupDetail, top: GroupDetail, *, replicates: int = N_BOOTSTRAP,
            seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Paired tests of ``method`` against ``top`` over their shared, identically-tested seeds. A seed with
    several trials in a group (other configs or experiments under the same root) is paired once, by its
    newest trial, so no seed counts twice."""
    by_seed = _one_per_seed(top.trials)
    sets, seeds, unpaired = [], [], []
    for t in _one_per_seed(method.trials).values():
        other = by_seed.get(t.seed)
        if other is None:
            unpaired.append(t.seed)
        elif np.array_equal(t.index, other.index) and np.array_equal(t.labels, other.labels):
            sets.append(PairedSet(t.labels, t.pred, other.pred))
            seeds.append(t.seed)
        else:
            unpaired.append(t.seed)
    out: dict[str, Any] = {"paired_seeds": seeds, "unpaired_seeds": unpaired,
                           "n_images": int(sum(len(s.labels) for s in sets))}
    if not sets:
        return out
    k = max(method.trials[0].num_classes, top.trials[0].num_classes)
    boot = paired_bootstrap_macro_f1(sets, k, replicates=replicates, seed=seed)
    mc = paired_mcnemar(sets)
    seeds_test = paired_seed_ttest(sets, k)
    out.update(
        seed_diffs=seeds_test["diffs"], f1_seed_p=seeds_test["p_value"],
        f1_seed_significant=None if seeds_test["p_value"] is None else seeds_test["p_value"] < ALPHA,
        f1_diff=boot["diff"], f1_diff_low=boot["low"], f1_diff_high=boot["high"], f1_p=boot["p_value"],
        f1_significant=boot["p_value"] < ALPHA, replicates=boot["replicates"],
        acc_diff=mc["accuracy_diff"], mcnemar_b=mc["b"], mcnemar_c=mc["c"], mcnemar_p=mc["p_value"],
        mcnemar_test=mc["test"], acc_significant=mc["p_value"] < ALPHA,
    )
    return out


@dataclass
class Summary:
    board: Any  # polars DataFrame: one row per (dataset, method, sampler)
    details: dict[tuple[str, str, str], GroupDetail]
    results: list[dict]  # every ok result record (for hardware / commit / provenance)


def summarise(root: Path | str, *, replicates: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
              only: Mapping[str, Collection[str]] | None = None) -> Summary:
    """The leaderboard of ``root`` with CIs, paired tests against the top, per-class recall, confusion
    matrices and the Pareto flag; ``only`` restricts it to some methods / datasets / samplers (the paired
    tests are then against the top of the selection)."""
    import polars as pl

    from harness.results import leaderboard
    from harness.store import iter_results

    board = leaderboard.build(root, only)
    if board.is_empty():
        return Summary(board, {}, [])
    results = [(folder, r) for folder, r in iter_results(root, only) if r.get("status") == "ok"]
    per_trial = leaderboard.collect(root, only).filter(pl.col("status") == "ok")

    details: dict[tuple[str, str, str], GroupDetail] = {}
    for folder, result in results:
        key = (result.get("dataset"), result.get("method"), result.get("sampler"))
        detail = details.setdefault(key, GroupDetail(*key))
        loaded = load_predictions(folder, result)
        if loaded is not None:
            detail.trials.append(loaded)
    for detail in details.values():
        detail.trials.sort(key=lambda t: t.seed)
        if detail.trials:
            k = max(t.num_classes for t in detail.trials)
            detail.classes = max((t.classes for t in detail.trials), key=len)
            detail.confusion, detail.recall = _confusion(detail.trials, k)

    extra_rows = []
    for row in board.iter_rows(named=True):
        key = (row["dataset"], row["method"], row["sampler"])
        group = per_trial.filter((pl.col("dataset") == key[0]) & (pl.col("method") == key[1])
                                 & (pl.col("sampler") == key[2]))
        extra: dict[str, Any] = {"dataset": key[0], "method": key[1], "sampler": key[2]}
        for metric in CI_METRICS:
            if metric in group.columns:
                _, low, high = mean_ci(group[metric].cast(pl.Float64).to_list())
                extra[f"{metric}_ci_low"], extra[f"{metric}_ci_high"] = low, high
        extra_rows.append(extra)
    board = board.join(pl.DataFrame(extra_rows, infer_schema_length=None), on=["dataset", "method", "sampler"],
                       how="left", maintain_order="left")

    comparison_rows = []
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        rows = list(group.iter_rows(named=True))
        top_key = (dataset, rows[0]["method"], rows[0]["sampler"])
        top = details.get(top_key)
        lat = [r.get("ms_per_image_b1_mean") for r in rows]
        front = pareto_front([r["macro_f1_mean"] for r in rows], lat)
        for row, on_front in zip(rows, front):
            key = (dataset, row["method"], row["sampler"])
            detail = details.get(key)
            cmp: dict[str, Any] = {}
            if key == top_key:
                cmp = {"is_top": True}
            elif detail is not None and top is not None and detail.trials and top.trials:
                cmp = compare(detail, top, replicates=replicates, seed=seed)
            if detail is not None:
                detail.comparison = cmp
            comparison_rows.append({
                "dataset": dataset, "method": row["method"], "sampler": row["sampler"],
                "top_method": top_key[1], "top_sampler": top_key[2], "is_top": key == top_key,
                "pareto": on_front,
                "f1_diff": cmp.get("f1_diff"), "f1_diff_ci_low": cmp.get("f1_diff_low"),
                "f1_diff_ci_high": cmp.get("f1_diff_high"), "f1_p_value": cmp.get("f1_p"),
                "f1_significant": cmp.get("f1_significant"),
                "f1_seed_diffs": cmp.get("seed_diffs"),
                "f1_seed_p_value": cmp.get("f1_seed_p"), "f1_seed_significant": cmp.get("f1_seed_significant"),
                "accuracy_diff": cmp.get("acc_diff"), "mcnemar_b": cmp.get("mcnemar_b"),
                "mcnemar_c": cmp.get("mcnemar_c"), "mcnemar_p_value": cmp.get("mcnemar_p"),
                "mcnemar_test": cmp.get("mcnemar_test"), "accuracy_significant": cmp.get("acc_significant"),
                "paired_seeds": len(cmp.get("paired_seeds", [])) if not cmp.get("is_top") else None,
                "per_class_recall": None if detail is None or detail.recall is None else detail.recall.tolist(),
                "confusion_matrix": None if detail is None or detail.confusion is None
                else detail.confusion.tolist(),
            })
    schema = {"f1_diff": pl.Float64, "f1_diff_ci_low": pl.Float64, "f1_diff_ci_high": pl.Float64,
              "f1_p_value": pl.Float64, "f1_significant": pl.Boolean, "f1_seed_diffs": pl.List(pl.Float64),
              "f1_seed_p_value": pl.Float64, "f1_seed_significant": pl.Boolean, "accuracy_diff": pl.Float64,
              "mcnemar_b": pl.Int64, "mcnemar_c": pl.Int64, "mcnemar_p_value": pl.Float64,
              "mcnemar_test": pl.String, "accuracy_significant": pl.Boolean, "paired_seeds": pl.Int64,
              "per_class_recall": pl.List(pl.Float64), "confusion_matrix": pl.List(pl.List(pl.Int64))}
    cmp_frame = pl.DataFrame(comparison_rows, schema_overrides=schema, infer_schema_length=None)
    board = board.join(cmp_frame, on=["dataset", "method", "sampler"], how="left", maintain_order="left")
    return Summary(board, details, [r for _, r in results])
