"""From a runs folder read once (``harness.store.Runs``) to everything a leaderboard shows: the ranked board,
the paired comparisons against each dataset's top (the primary two-level bootstrap, corrected for the
table's comparisons, and the secondary tests), rank bands, learning-curve flags, per-class recall,
warnings, and for several datasets the Friedman / Nemenyi analysis. The statistics themselves are in
:mod:`harness.results.stats`; this module pairs trials (by image id) and applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract.curves import IMPROVING_MARGIN, still_improving
from harness.errors import HarnessError
from harness.results import leaderboard
from harness.results.stats import (
    ALPHA,
    BOOTSTRAP_SEED,
    CORRECTIONS,
    N_BOOTSTRAP,
    PAIRED_METRICS,
    PairedSet,
    adjust_p,
    confusion,
    friedman,
    pareto_front,
    per_seed_mcnemar,
    rank_bands,
    two_level_bootstrap,
)
from harness.store import Runs, read_curve, read_predictions

DIFF_METRICS = ("macro_f1", "balanced_accuracy", "mcc")  # differences with CIs shown for each comparison


@dataclass(frozen=True)
class Settings:
    """How a leaderboard is computed: the headline metric (ranks, the primary test, the still-improving flag),
    the bootstrap, the multiple-comparison correction and the significance level."""

    headline: str = "macro_f1"
    replicates: int = N_BOOTSTRAP
    seed: int = BOOTSTRAP_SEED
    correction: str = "holm"
    alpha: float = ALPHA
    seed_level: str = "t"
    improving_margin: float = IMPROVING_MARGIN

    def __post_init__(self):
        if self.correction not in CORRECTIONS:
            raise HarnessError(f"correction {self.correction!r} is not known; use one of {', '.join(CORRECTIONS)}")
        if self.replicates < 100:
            raise HarnessError(f"the bootstrap needs at least 100 resamples; found {self.replicates}")


@dataclass
class TrialData:
    """One ``ok`` trial: its record and test predictions (labels, predicted classes, image ids if stored)."""

    seed: int
    folder: Path
    record: dict
    labels: np.ndarray
    pred: np.ndarray
    ids: np.ndarray | None
    num_classes: int
    classes: list[str]
    curve: list[dict] | None = None


@dataclass
class GroupDetail:
    """Everything the report shows about one (dataset, method, sampler)."""

    dataset: str
    method: str
    sampler: str
    trials: list[TrialData] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    confusion: np.ndarray | None = None
    recall: np.ndarray | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    absent_classes: list[str] = field(default_factory=list)
    improving: list[dict[str, Any]] = field(default_factory=list)  # per trial with a readable curve

    @property
    def key(self) -> tuple[str, str, str]:
        return self.dataset, self.method, self.sampler

    @property
    def name(self) -> str:
        return f"{self.method} · {self.sampler} on {self.dataset}"


@dataclass
class Summary:
    board: Any  # polars DataFrame: one row per (dataset, method, sampler)
    details: dict[tuple[str, str, str], GroupDetail]
    runs: Runs
    settings: Settings
    warnings: list[str] = field(default_factory=list)
    cross: dict[str, Any] | None = None  # across datasets: Friedman / Nemenyi, or why not

    @property
    def results(self) -> list[dict]:
        return [self.runs.records[i] for i in self.runs.ok()]


# --------------------------------------------------------------------------------------------------
# Trials and pairing


def load_trial(folder: Path, record: dict) -> TrialData | None:
    frame = read_predictions(folder)
    if frame is None:
        return None
    frame = frame.sort("index")
    probs = [c for c in frame.columns if c.startswith("prob_") and c[5:].isdigit()]
    labels = frame["label"].to_numpy().astype(np.int64)
    pred = frame["pred"].to_numpy().astype(np.int64)
    k = int(record.get("num_classes") or len(probs) or (max(labels.max(), pred.max()) + 1))
    classes = [str(c) for c in (record.get("classes") or range(k))]
    ids = frame["image_id"].cast(str).to_numpy() if "image_id" in frame.columns else None
    return TrialData(seed=int(record.get("seed") or 0), folder=folder, record=record, labels=labels, pred=pred,
                     ids=ids, num_classes=k, classes=classes)


def pair(a: TrialData, b: TrialData) -> tuple[PairedSet, str]:
    """Align two trials' predictions image by image: by image id when both stored ids, else (runs written
    before image ids) by position and label. Raises HarnessError when their test sets differ."""
    where = f"seed {a.seed}: {a.record.get('key', a.folder.name)} and {b.record.get('key', b.folder.name)}"
    if a.ids is not None and b.ids is not None:
        ids_a, ids_b = set(a.ids.tolist()), set(b.ids.tolist())
        if len(ids_a) != len(a.ids) or len(ids_b) != len(b.ids):
            raise HarnessError(f"{where}: an image id appears twice in a predictions file; cannot pair by id")
        if ids_a != ids_b:
            raise HarnessError(f"{where} were tested on different images ({len(ids_a - ids_b)} of {len(ids_a)} "
                               f"image ids of the first are not in the second, {len(ids_b - ids_a)} the other way): "
                               "they are not paired. Run both on the same test split to compare them.")
        order = {image: i for i, image in enumerate(b.ids.tolist())}
        index = np.array([order[image] for image in a.ids.tolist()])
        if not np.array_equal(a.labels, b.labels[index]):
            raise HarnessError(f"{where}: the same image ids carry different labels; they are not paired")
        return PairedSet(a.labels, a.pred, b.pred[index], ids=a.ids), "image id"
    if len(a.labels) != len(b.labels) or not np.array_equal(a.labels, b.labels):
        raise HarnessError(f"{where} were tested on different images ({len(a.labels)} and {len(b.labels)} test "
                           "images, or labels that differ position by position): they are not paired.")
    return PairedSet(a.labels, a.pred, b.pred), "position and label"


def _one_per_seed(trials: list[TrialData]) -> dict[int, TrialData]:
    """Seed -> its newest trial (by the result's ``finished`` time), in seed order."""
    newest: dict[int, TrialData] = {}
    for t in sorted(trials, key=lambda t: (t.seed, str(t.record.get("finished") or ""))):
        newest[t.seed] = t
    return newest


def compare(method: GroupDetail, reference: GroupDetail, settings: Settings, full: bool = True) -> dict[str, Any]:
    """The paired tests of ``method`` against ``reference`` over their shared seeds (one trial per seed, the
    newest): the primary two-level bootstrap for the headline metric and the differences of Macro-F1, B-ACC
    and MCC with their CIs, the t-test over seeds and McNemar per seed (secondary). ``full=False``: the
    primary test's p alone (what a rank band needs)."""
    by_seed = _one_per_seed(reference.trials)
    sets, seeds, unpaired, refused, how = [], [], [], [], set()
    for t in _one_per_seed(method.trials).values():
        other = by_seed.get(t.seed)
        if other is None:
            unpaired.append(t.seed)
            continue
        try:
            paired, note = pair(t, other)
        except HarnessError as exc:
            refused.append(str(exc))
            unpaired.append(t.seed)
            continue
        sets.append(paired)
        seeds.append(t.seed)
        how.add(note)
    out: dict[str, Any] = {"paired_seeds": seeds, "unpaired_seeds": unpaired, "refused": refused,
                           "pairing": " / ".join(sorted(how)), "n_images": int(sum(len(s.labels) for s in sets))}
    if not sets:
        return out
    k = max(method.trials[0].num_classes, reference.trials[0].num_classes)
    if settings.headline not in PAIRED_METRICS:
        out["no_test"] = (f"no paired test for {settings.headline} (the two-level bootstrap works on "
                          f"{', '.join(PAIRED_METRICS)})")
    metrics = [*dict.fromkeys([*(m for m in [settings.headline] if m in PAIRED_METRICS),
                               *(DIFF_METRICS if full else ())])]
    tests = two_level_bootstrap(sets, k, metrics, replicates=settings.replicates, seed=settings.seed,
                                confidence=1 - settings.alpha, seed_level=settings.seed_level, interval=full)
    out["tests"] = tests
    if settings.headline in tests:
        primary = tests[settings.headline]
        out.update(diff=primary["diff"], low=primary["low"], high=primary["high"], p=primary["p_value"],
                   seed_diffs=primary["seed_diffs"])
        seed_t = _seed_ttest(np.asarray(primary["seed_diffs"]))
        out.update(seed_p=seed_t)
    if full:
        out["mcnemar"] = per_seed_mcnemar(sets)
    return out


def _seed_ttest(diffs: np.ndarray) -> float | None:
    """The paired t-test over seeds from the per-seed differences (None: fewer than 2 seeds, or non-zero
    differences that are all equal)."""
    from scipy import stats

    if len(diffs) < 2:
        return None
    if np.ptp(diffs) <= 1e-12:
        return 1.0 if abs(diffs[0]) <= 1e-12 else None
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


# --------------------------------------------------------------------------------------------------
# Warnings that follow one rule everywhere (leaderboard, report, run)


def pooling_warnings(results: list[dict]) -> list[str]:
    """Rows that pool trials they should not: the same seed run more than once, or results of different harness
    versions. (Trials with different settings are never pooled: ``store.variant_labels`` makes them rows.)"""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((str(r.get("dataset")), str(r.get("method")), str(r.get("sampler") or "-")), []).append(r)
    out = []
    for (dataset, method, sampler), members in sorted(groups.items()):
        where = f"{method} · {sampler} on {dataset}"
        versions = sorted({str(r.get("harness_version")) for r in members if r.get("harness_version")})
        if len(versions) > 1:
            out.append(f"{where} pools results of harness versions {', '.join(versions)}: a change between them "
                       "may move its numbers. Re-run the older trials with the current version, or report them apart.")
        seeds = [r.get("seed") for r in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if repeated:
            out.append(f"{where} has seed(s) {', '.join(map(str, repeated))} more than once with the same "
                       "settings (the same trial in several experiments?): the mean counts each, the paired "
                       "tests use the newest.")
    return out


# --------------------------------------------------------------------------------------------------
# The summary


def _details(runs: Runs, settings: Settings) -> tuple[dict[tuple[str, str, str], GroupDetail], list[str]]:
    details: dict[tuple[str, str, str], GroupDetail] = {}
    notes: list[str] = []
    key_metric = f"val_{settings.headline}"
    for i in runs.ok():
        record, folder = runs.records[i], runs.folders[i]
        key = (record["dataset"], record["method"], record.get("sampler") or "-")
        detail = details.setdefault(key, GroupDetail(*key))
        try:
            trial = load_trial(folder, record)
        except Exception as exc:  # a damaged predictions file: named, and the trial left out of the tests
            notes.append(f"{detail.name}, seed {record.get('seed')}: {folder.name}/predictions.parquet cannot be "
                         f"read ({type(exc).__name__}: {exc}); the trial counts in the means but not in the "
                         "paired tests")
            continue
        if trial is None:
            notes.append(f"{detail.name}, seed {record.get('seed')}: no predictions.parquet in {folder.name}; "
                         "the trial counts in the means but not in the paired tests")
            continue
        trial.curve, problem = read_curve(folder, record) if record.get("curve") else (None, None)
        if problem:
            notes.append(f"{detail.name}: learning curve not readable ({problem})")
        detail.trials.append(trial)
        if trial.curve:
            flag = still_improving(trial.curve, key_metric, settings.improving_margin)
            if flag is not None:
                detail.improving.append({"seed": trial.seed, **flag})
    for detail in details.values():
        detail.trials.sort(key=lambda t: t.seed)
        if not detail.trials:
            continue
        k = max(t.num_classes for t in detail.trials)
        detail.classes = max((t.classes for t in detail.trials), key=len)
        total = np.zeros((k, k), dtype=np.int64)
        for t in detail.trials:
            total += confusion(t.labels, t.pred, k).astype(np.int64)
        rows = total.sum(axis=1)
        detail.confusion = total
        detail.recall = np.divide(np.diag(total).astype(np.float64), rows, out=np.full(k, np.nan), where=rows > 0)
        names = list(detail.classes) + [str(c) for c in range(len(detail.classes), k)]
        detail.absent_classes = sorted({names[c] for t in detail.trials for c in range(k) if not np.any(t.labels == c)},
                                       key=names.index)
    return details, notes


def summarise(runs: Runs, settings: Settings | None = None) -> Summary:
    """The leaderboard of ``runs`` with CIs, the paired tests against each dataset's top, rank bands,
    per-class recall, confusion matrices, the Pareto flag, learning-curve flags and the warnings."""
    import polars as pl

    settings = settings or Settings()
    board = leaderboard.build(runs, settings.headline)
    warnings = [u.describe() for u in runs.unreadable]
    if board.is_empty():
        return Summary(board, {}, runs, settings, warnings)
    warnings += runs.notices + pooling_warnings([runs.records[i] for i in runs.ok()])
    details, notes = _details(runs, settings)
    warnings += notes
    for i in runs.ok():
        record = runs.records[i]
        for text in record.get("warnings") or []:
            warnings.append(f"{record['method']} · {record.get('sampler') or '-'} on {record['dataset']}, seed "
                            f"{record.get('seed')}: {text}")
    cache: dict[tuple, dict[str, Any]] = {}

    def cmp(a: tuple, b: tuple, full: bool = False) -> dict[str, Any]:
        if (a, b) not in cache or (full and "mcnemar" not in cache[a, b] and cache[a, b].get("tests")):
            da, db = details.get(a), details.get(b)
            cache[a, b] = compare(da, db, settings, full) if da and db and da.trials and db.trials else {}
        return cache[a, b]

    extra_rows = []
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        rows = list(group.iter_rows(named=True))
        keys = [(dataset, r["method"], r["sampler"]) for r in rows]
        top = keys[0]
        against_top = [{"is_top": True}] + [cmp(k, top, full=True) for k in keys[1:]]
        adjusted = adjust_p([c.get("p") for c in against_top[1:]], settings.correction)
        if len(keys) - 1 >= settings.alpha * (settings.replicates + 1):  # p >= 1 / (B + 1): too few resamples
            warnings.append(f"{dataset}: {len(keys) - 1} comparisons need more than {settings.replicates} resamples "
                            f"to reach an adjusted p below {settings.alpha} (the smallest p is 1 / (B + 1)); "
                            "raise --bootstrap")
        bands = rank_bands(len(keys), lambda i, j, keys=keys: cmp(keys[j], keys[i]).get("p"),
                           method=settings.correction, alpha=settings.alpha)
        front = pareto_front([r[f"{settings.headline}_mean"] for r in rows], [r.get("ms_per_image_b1_mean") for r in rows])
        for i, (row, key, c) in enumerate(zip(rows, keys, against_top)):
            p_adj = adjusted[i - 1] if i else None
            c = {**c, "p_adjusted": p_adj, "significant": None if p_adj is None else p_adj < settings.alpha,
                 "band": bands[i]["band"], "band_leader": keys[bands[i]["leader"]][1:] if bands[i]["leader"]
                 is not None else None, "band_p_adjusted": bands[i]["p_adjusted"]}
            detail = details.get(key)
            if detail is not None:
                detail.comparison = c
            for message in c.get("refused", []):
                warnings.append(f"{detail.name if detail else key}: {message}")
            if detail is not None and detail.absent_classes:
                warnings.append(f"{detail.name}: class(es) {', '.join(detail.absent_classes)} have no test images; "
                                "Macro-F1 counts each as F1 = 0 (scikit-learn's zero_division=0 over all classes), "
                                f"so it is at most {(len(detail.classes) - len(detail.absent_classes)) / max(len(detail.classes), 1):.3f}")
            extra_rows.append(_columns(dataset, row, key, top, c, detail, front[i], settings))
    frame = pl.DataFrame(extra_rows, schema_overrides=_schema(), infer_schema_length=None)
    board = board.join(frame, on=list(leaderboard.GROUP), how="left", maintain_order="left")
    summary = Summary(board, details, runs, settings, warnings)
    summary.cross = cross_dataset(board, settings)
    return summary


def _columns(dataset, row, key, top, c, detail, on_front, settings) -> dict[str, Any]:
    tests = c.get("tests") or {}
    improving = detail.improving if detail is not None else []
    out: dict[str, Any] = {
        "dataset": dataset, "method": row["method"], "sampler": row["sampler"],
        "top_method": top[1], "top_sampler": top[2], "is_top": key == top, "pareto": on_front,
        "headline": settings.headline, "diff": c.get("diff"), "diff_ci_low": c.get("low"), "diff_ci_high": c.get("high"),
        "p_value": c.get("p"), "p_adjusted": c.get("p_adjusted"), "significant": c.get("significant"),
        "correction": settings.correction, "band": c.get("band"),
        "seed_diffs": c.get("seed_diffs"), "seed_p_value": c.get("seed_p"),
        "mcnemar_p_values": [t["p_value"] for t in c.get("mcnemar", [])] or None,
        "accuracy_diffs": [t["accuracy_diff"] for t in c.get("mcnemar", [])] or None,
        "paired_seeds": None if key == top else len(c.get("paired_seeds", [])),
        "pairing": c.get("pairing") or None,
        "still_improving": sum(1 for f in improving if f["improving"]),
        "curves": len(improving),
        "absent_classes": (detail.absent_classes or None) if detail is not None else None,
        "per_class_recall": None if detail is None or detail.recall is None else detail.recall.tolist(),
        "confusion_matrix": None if detail is None or detail.confusion is None else detail.confusion.tolist(),
    }
    for m in DIFF_METRICS:
        t = tests.get(m) or {}
        out[f"{m}_diff"], out[f"{m}_diff_ci_low"] = t.get("diff"), t.get("low")
        out[f"{m}_diff_ci_high"], out[f"{m}_p_value"] = t.get("high"), t.get("p_value")
    return out


def cross_dataset(board, settings: Settings) -> dict[str, Any] | None:
    """Mean ranks, Friedman and Nemenyi over the (method, sampler) rows present on every dataset (2+ datasets)."""
    datasets = list(dict.fromkeys(board["dataset"].to_list()))
    if len(datasets) < 2:
        return None
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for row in board.iter_rows(named=True):
        scores.setdefault((row["method"], row["sampler"]), {})[row["dataset"]] = row[f"{settings.headline}_mean"]
    common = [k for k, v in scores.items() if all(d in v and v[d] is not None for d in datasets)]
    left_out = [k for k in scores if k not in common]
    out: dict[str, Any] = {"datasets": datasets, "rows": common, "left_out": left_out, "metric": settings.headline}
    if len(common) < 3:
        out["reason"] = (f"{len(common)} (method, sampler) row(s) ran on every dataset; Friedman's test needs at "
                         "least 3")
        return out
    names = [f"{m} · {s}" if s not in ("-", "uniform") else m for m, s in common]
    if len(set(names)) < len(names):
        names = [f"{m} · {s}" for m, s in common]
    matrix = np.array([[scores[k][d] for k in common] for d in datasets])
    out.update(friedman(matrix, names, alpha=settings.alpha))
    return out


def _schema():
    import polars as pl

    return {"band": pl.Int64, "diff": pl.Float64, "diff_ci_low": pl.Float64, "diff_ci_high": pl.Float64,
            "p_value": pl.Float64, "p_adjusted": pl.Float64, "significant": pl.Boolean,
            "seed_diffs": pl.List(pl.Float64), "seed_p_value": pl.Float64, "mcnemar_p_values": pl.List(pl.Float64),
            "accuracy_diffs": pl.List(pl.Float64), "paired_seeds": pl.Int64, "pairing": pl.String,
            "still_improving": pl.Int64, "curves": pl.Int64, "absent_classes": pl.List(pl.String),
            "per_class_recall": pl.List(pl.Float64), "confusion_matrix": pl.List(pl.List(pl.Int64)),
            **{f"{m}_{s}": pl.Float64 for m in DIFF_METRICS for s in ("diff", "diff_ci_low", "diff_ci_high",
                                                                       "p_value")}}

