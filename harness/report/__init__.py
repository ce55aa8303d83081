"""``harness report``: publish a runs folder as ``leaderboard.md`` (for a README), ``index.html`` (one
self-contained page for people) and ``results.parquet`` (for programs); and the runs folder's own
``leaderboard.md`` / ``leaderboard.parquet`` (``harness leaderboard``, the end of ``harness run``).

The runs folder is read once (:func:`harness.store.load_runs`) and summarised once
(:func:`harness.results.summary.summarise`); the modules here only render: :mod:`.format` (escaping, cells,
the explanation of the statistics), :mod:`.markdown` (the one Markdown renderer and the terminal table),
:mod:`.html`, :mod:`.svg` (plots) and :mod:`.provenance` (commits, hardware, data, commands without private
paths). The statistics are defined in :mod:`harness.results.stats`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from harness.report.format import dataset_rows, json_for_script, slug
from harness.report.html import to_html
from harness.report.markdown import to_markdown, to_text
from harness.report.provenance import provenance, redact, redact_command
from harness.report.svg import cd_svg, pareto_svg
from harness.results.summary import Settings, Summary, summarise
from harness.store import atomic_write_bytes, atomic_write_parquet, load_runs

__all__ = ["Settings", "Summary", "json_for_script", "load_summary", "provenance", "redact", "redact_command",
           "to_markdown", "to_text", "write_leaderboard", "write_report"]


def load_summary(runs_dir: Path | str, settings: Settings | None = None,
                 only: Mapping[str, Collection[str]] | None = None) -> Summary:
    """Read ``runs_dir`` once and summarise it (``only``: a selection of methods / datasets / samplers)."""
    return summarise(load_runs(runs_dir, only), settings)


def _publishable(paths: list[Path]) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for path in paths:  # atomic writes create 0600 files; a published file is world-readable
        path.chmod(0o666 & ~mask)


def write_leaderboard(summary: Summary, root: Path | str) -> dict[str, Path]:
    """The runs folder's ``leaderboard.md`` (the report's Markdown, no plots) and ``leaderboard.parquet``."""
    root = Path(root)
    prov = provenance(summary)
    written = {"leaderboard.md": root / "leaderboard.md"}
    atomic_write_bytes(written["leaderboard.md"], to_markdown(summary, prov, f"Leaderboard: {root.name}").encode())
    if not summary.board.is_empty():
        written["leaderboard.parquet"] = root / "leaderboard.parquet"
        atomic_write_parquet(written["leaderboard.parquet"], summary.board)
    _publishable(list(written.values()))
    return written


def write_report(runs_dir: Path | str, out_dir: Path | str, *, title: str | None = None,
                 report_command: str | None = None, settings: Settings | None = None,
                 only: Mapping[str, Collection[str]] | None = None, summary: Summary | None = None
                 ) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``index.html``, ``results.parquet`` and the SVG plots the Markdown links (one
    Pareto plot per dataset, the critical-difference diagram for 2+ datasets) into ``out_dir``; returns their
    paths. ``summary``: an already computed summary of ``runs_dir`` (``harness run`` reads the folder once)."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    summary = summary or load_summary(runs_dir, settings, only)
    prov = provenance(summary, report_command)
    title = title or f"Leaderboard: {runs_dir.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    svg_files: dict[str, str] = {}
    if not summary.board.is_empty():
        for dataset, rows in dataset_rows(summary.board):
            name = f"pareto-{slug(dataset)}.svg"
            atomic_write_bytes(out_dir / name, pareto_svg(rows, str(dataset), summary.settings.headline,
                                                          standalone=True).encode())
            svg_files[dataset] = name
            written[name] = out_dir / name
    if summary.cross is not None and "reason" not in summary.cross:
        atomic_write_bytes(out_dir / "critical-difference.svg", cd_svg(summary.cross).encode())
        svg_files["cd"] = "critical-difference.svg"
        written["critical-difference.svg"] = out_dir / "critical-difference.svg"
    atomic_write_bytes(out_dir / "leaderboard.md", to_markdown(summary, prov, title, svg_files).encode())
    atomic_write_bytes(out_dir / "index.html", to_html(summary, prov, title).encode())
    written["leaderboard.md"] = out_dir / "leaderboard.md"
    written["index.html"] = out_dir / "index.html"
    if not summary.board.is_empty():
        atomic_write_parquet(out_dir / "results.parquet", summary.board)
        written["results.parquet"] = out_dir / "results.parquet"
    _publishable(list(written.values()))
    return written
