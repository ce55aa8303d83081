"""The leaderboard: results grouped by dataset, method and sampler, with polars.

For each group: the number of seeds that finished, the mean and standard deviation of every metric and
of latency, and the rank by mean Macro-F1 within the dataset. Written next to the results as
``leaderboard.md`` and ``leaderboard.parquet``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path

from harness.contract.result import latency_of_record
from harness.store import atomic_write_bytes, atomic_write_parquet, iter_results

HEADLINE = ("macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc", "ece")
LATENCY = ("ms_per_image_b1", "ms_per_image_b64")
GROUP = ("dataset", "method", "sampler")


def collect(root: Path | str, only: Mapping[str, Collection[str]] | None = None):
    """One row per trial result under ``root`` (a polars DataFrame; empty if there are none); ``only`` as in
    :func:`harness.store.iter_results`."""
    import polars as pl

    rows = []
    for folder, result in iter_results(root, only):
        row = {
            "key": result.get("key", folder.name),
            "experiment": result.get("experiment", ""),
            "dataset": result.get("dataset"),
            "method": result.get("method"),
            "sampler": result.get("sampler"),
            "seed": result.get("seed"),
            "profile": result.get("profile"),
            "status": result.get("status"),
            "params": result.get("params"),
            "fit_seconds": result.get("fit_seconds"),
            "path": str(folder),
        }
        for name, value in (result.get("metrics") or {}).items():
            row[name] = value
        latency, row["latency_source"] = latency_of_record(result)  # harness bench's figures when there are any
        for name in LATENCY:
            row[name] = latency.get(name)
        rows.append(row)
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, infer_schema_length=None)


def build(root: Path | str, only: Mapping[str, Collection[str]] | None = None):
    """The leaderboard frame (ranked) from every ``ok`` result under ``root`` (``only``: a selection)."""
    import polars as pl

    frame = collect(root, only)
    if frame.is_empty():
        return frame
    failed = frame.filter(pl.col("status") != "ok").group_by(GROUP).agg(pl.len().alias("failed"))
    ok = frame.filter(pl.col("status") == "ok")
    if ok.is_empty():
        return ok
    metrics = [m for m in HEADLINE if m in ok.columns]
    metrics += sorted(c for c in ok.columns if c not in metrics and c not in LATENCY and c not in _META)
    aggs = [pl.col("seed").n_unique().alias("seeds"), pl.col("profile").first().alias("profile"),
            pl.col("latency_source").drop_nulls().unique().sort().str.join("+").alias("latency_source")]
    for name in [*metrics, *[c for c in LATENCY if c in ok.columns], "params", "fit_seconds"]:
        column = pl.col(name).cast(pl.Float64)
        aggs += [column.mean().alias(f"{name}_mean"), column.std().alias(f"{name}_std")]
    board = ok.group_by(GROUP).agg(aggs)
    board = board.join(failed, on=list(GROUP), how="left").with_columns(pl.col("failed").fill_null(0))
    board = board.with_columns(
        pl.col("macro_f1_mean").rank(method="min", descending=True).over("dataset").cast(pl.Int64).alias("rank")
    ).sort(["dataset", "rank", "method", "sampler"])
    first = ["dataset", "rank", "method", "sampler", "seeds", "failed", "profile"]
    return board.select([*first, *[c for c in board.columns if c not in first]])


_META = {"key", "experiment", "dataset", "method", "sampler", "seed", "profile", "status", "params",
         "fit_seconds", "path", "latency_source"}


def _fmt(mean, std, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(board) -> str:
    if board.is_empty():
        return "_No finished trials._\n"
    metrics = [m for m in HEADLINE if f"{m}_mean" in board.columns]
    lat = [m for m in LATENCY if f"{m}_mean" in board.columns]
    lines = []
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        header = ["rank", "method", "sampler", "seeds", *metrics, *(f"{m} (ms)" for m in lat)]
        lines += [f"### {dataset}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        for row in group.iter_rows(named=True):
            cells = [str(row["rank"]), row["method"], row["sampler"], str(row["seeds"])]
            if row.get("failed"):
                cells[3] += f" ({row['failed']} failed)"
            cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
            cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"], 2) for m in lat]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Mean ± standard deviation over seeds; ranked by mean Macro-F1 within each dataset. "
                 "Latency: median ms per image at batch 1 and 64" + _sources(board) + ".")
    return "\n".join(lines) + "\n"


def _sources(board) -> str:
    """Where the latency figures come from (``harness bench`` or the trials), for a table's legend."""
    from harness.contract.result import LATENCY_SOURCES

    if "latency_source" not in board.columns:
        return ""
    used = sorted({part for v in board["latency_source"].to_list() if v for part in v.split("+")})
    return "".join(f"; {name}: {LATENCY_SOURCES[name]}" for name in used if name in LATENCY_SOURCES)


def to_text(board) -> str:
    """A compact plain-text table for the terminal."""
    if board.is_empty():
        return "No finished trials.\n"
    cols = [("rank", 4), ("method", 16), ("sampler", 11), ("seeds", 5)]
    metrics = [m for m in ("macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc")
               if f"{m}_mean" in board.columns]
    short = {"macro_f1": "Macro-F1", "balanced_accuracy": "B-ACC", "mcc": "MCC", "accuracy": "ACC",
             "auroc": "AUROC"}
    out = []
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        out.append(f"== {dataset} ==")
        head = "".join(f"{name:<{w + 1}}" for name, w in cols)
        head += "".join(f"{short[m]:>16}" for m in metrics) + f"{'ms/img b1':>12}"
        out.append(head)
        for row in group.iter_rows(named=True):
            line = "".join(f"{str(row[name])[:w]:<{w + 1}}" for name, w in cols)
            line += "".join(f"{_fmt(row[f'{m}_mean'], row[f'{m}_std']):>16}" for m in metrics)
            lat = row.get("ms_per_image_b1_mean")
            line += f"{(f'{lat:.2f}' if lat is not None else '–'):>12}"
            line += f" ({row['latency_source']})" if row.get("latency_source") else ""
            out.append(line)
        out.append("")
    return "\n".join(out)


def write(root: Path | str):
    """Build the leaderboard for ``root`` and write ``leaderboard.md`` / ``leaderboard.parquet`` there."""
    root = Path(root)
    board = build(root)
    atomic_write_bytes(root / "leaderboard.md", ("# Leaderboard\n\n" + to_markdown(board)).encode())
    if not board.is_empty():
        atomic_write_parquet(root / "leaderboard.parquet", board)
    return board
