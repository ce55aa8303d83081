"""The leaderboard: a runs folder's trials grouped by dataset, method and sampler (polars).

For each group: the number of seeds that finished (and how many trials failed, are unfinished or could not be read), the
mean, standard deviation and 95% Student's t interval over seeds of every metric and of latency, and the
rank by the mean headline metric (a setting, ``macro_f1`` by default) within the dataset.
"""

from __future__ import annotations

from typing import Any

from harness.results.stats import mean_ci
from harness.store import Runs

GROUP = ("dataset", "method", "sampler")
LATENCY = ("ms_per_image_b1", "ms_per_image_b64")
FIRST_METRICS = ("macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc", "ece")  # column order, then the rest


def metric_names(runs: Runs) -> list[str]:
    present = {c[len("metric."):] for c in runs.table.columns if c.startswith("metric.")}
    return [m for m in FIRST_METRICS if m in present] + sorted(present - set(FIRST_METRICS))


def build(runs: Runs, headline: str = "macro_f1"):
    """The ranked leaderboard frame: one row per (dataset, method, sampler) with at least one ``ok`` trial."""
    import polars as pl

    table = runs.table
    if table.is_empty() or table.filter(pl.col("status") == "ok").is_empty():
        return pl.DataFrame()
    ok = table.filter(pl.col("status") == "ok")
    metrics = metric_names(runs)
    if headline not in metrics:
        from harness.errors import HarnessError

        raise HarnessError(f"headline metric {headline!r} is not among the results' metrics "
                           f"({', '.join(metrics) or 'none'}); pick one of them")
    values = [*(f"metric.{m}" for m in metrics), *(f"latency.{m}" for m in LATENCY if f"latency.{m}" in ok.columns),
              "params", "fit_seconds"]
    # not ok: failed (raised, or a worker died), or unfinished (stopped by Ctrl-C, or running again right now)
    failed = table.filter(pl.col("status") != "ok").group_by(GROUP).agg(
        (pl.col("status") != "interrupted").sum().alias("failed"),
        (pl.col("status") == "interrupted").sum().alias("unfinished"))
    rows: list[dict[str, Any]] = []
    for key, group in ok.group_by(list(GROUP), maintain_order=True):
        row: dict[str, Any] = dict(zip(GROUP, key))
        row.update(seeds=group["seed"].n_unique(), trials=group.height, profile=group["profile"].drop_nulls().first(),
                   harness_versions=sorted({str(v) for v in group["harness_version"].to_list() if v is not None}))
        sources = sorted({v for v in group["latency_source"].to_list() if v}) if "latency_source" in group.columns else []
        row["latency_source"] = "+".join(sources) or None  # "bench", "trial" or "bench+trial" (harness bench or not)
        for column in values:
            name = column.split(".", 1)[-1]
            if column not in group.columns:
                continue
            x = group[column].cast(pl.Float64).to_list()
            present = [v for v in x if v is not None]
            mean, low, high = mean_ci(present)
            row[f"{name}_mean"], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = mean, low, high
            row[f"{name}_std"] = float(pl.Series(present, dtype=pl.Float64).std()) if len(present) > 1 else None
        rows.append(row)
    board = pl.DataFrame(rows, infer_schema_length=None)
    board = board.join(failed, on=list(GROUP), how="left").with_columns(pl.col("failed").fill_null(0),
                                                                        pl.col("unfinished").fill_null(0))
    unreadable = [dict(zip(GROUP, (u.trial.get("dataset"), u.trial.get("method"), u.trial.get("sampler") or "-")))
                  for u in runs.unreadable if u.trial.get("method")]
    if unreadable:
        counts = pl.DataFrame(unreadable).group_by(GROUP).agg(pl.len().alias("unreadable"))
        board = board.join(counts, on=list(GROUP), how="left")
    board = board.with_columns(pl.lit(0).alias("unreadable") if "unreadable" not in board.columns
                               else pl.col("unreadable").fill_null(0))
    board = board.with_columns(
        pl.col(f"{headline}_mean").rank(method="min", descending=True).over("dataset").cast(pl.Int64).alias("rank")
    ).sort(["dataset", "rank", "method", "sampler"])
    first = ["dataset", "rank", "method", "sampler", "seeds", "failed", "unfinished", "unreadable", "profile"]
    return board.select([*first, *[c for c in board.columns if c not in first]])
