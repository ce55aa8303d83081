"""``harness report``: publish a runs folder as ``leaderboard.md`` (for a README), ``index.html`` (one
self-contained page for people) and ``results.parquet`` (for programs).

The page fetches nothing: styles, the sortable-table script and the plots (SVG drawn here, no plotting
library) are inline, and a trial's artefact images are embedded as ``data:`` URIs. A Content Security
Policy allows only that (inline styles, ``data:`` images and the one inline script, by its hash). Every
string that comes from a plugin, a config or a result record is HTML-escaped, in text, in attributes and
in the JSON embedded in the page. The statistics are explained in :mod:`harness.results.stats`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.results.stats import ALPHA, EXACT_MCNEMAR_MAX, N_BOOTSTRAP, GroupDetail, Summary, summarise
from harness.store import atomic_write_bytes, atomic_write_parquet

EXPERIMENT_FILE = "experiment.json"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}
MAX_IMAGES_PER_METHOD = 6
MAX_IMAGE_BYTES = 2_000_000
SHORT = {"macro_f1": "Macro-F1", "balanced_accuracy": "B-ACC", "mcc": "MCC", "accuracy": "Accuracy",
         "auroc": "AUROC", "ece": "ECE"}


def esc(value: Any) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and line separators as ``\\u`` escapes."""
    text = json.dumps(_clean(data), sort_keys=True, ensure_ascii=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                       ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _md(value: Any) -> str:
    """A Markdown table cell: HTML-escaped (Markdown renders inline HTML), pipes and newlines neutralised."""
    return esc(value).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "dataset"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any, digits: int = 3) -> str:
    return "–" if _nan(value) else f"{value:.{digits}f}"


def _mean_ci(row: dict, metric: str, digits: int = 3) -> str:
    mean, low, high = row.get(f"{metric}_mean"), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if _nan(mean):
        return "–"
    if _nan(low) or _nan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _p(value: Any) -> str:
    if _nan(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _mark(significant: Any) -> str:
    return " *" if significant else ""


def _diff(row: dict) -> str:
    if row.get("is_top"):
        return "top"
    if _nan(row.get("f1_diff")):
        return "not paired"
    return f"{row['f1_diff']:+.3f} [{row['f1_diff_ci_low']:+.3f}, {row['f1_diff_ci_high']:+.3f}]"


# --------------------------------------------------------------------------------------------------
# Provenance


def find_experiments(root: Path) -> list[dict]:
    """The ``experiment.json`` records (written by ``harness run``) under ``root``."""
    out = []
    for path in sorted(Path(root).rglob(EXPERIMENT_FILE)):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def provenance(summary: Summary, root: Path, report_command: str | None = None) -> dict[str, Any]:
    results = summary.results
    hardware: list[dict] = []
    for r in results:
        hw = r.get("hardware")
        if hw and hw not in hardware:
            hardware.append(hw)
    commands: list[str] = []
    for exp in find_experiments(root):
        for command in exp.get("commands") or [exp.get("command")]:
            if command and command not in commands:
                commands.append(command)
    data: list[str] = []  # what each dataset's trials trained and were tested on
    for r in results:
        text = _data_text(r)
        if text not in data:
            data.append(text)
    started = sorted(r["started"] for r in results if r.get("started"))
    finished = sorted(r["finished"] for r in results if r.get("finished"))
    return {
        "commits": sorted({str(r.get("git_commit", "unknown")) for r in results}),
        "harness_versions": sorted({str(r.get("harness_version", "")) for r in results}),
        "profiles": sorted({str(r.get("profile", "")) for r in results}),
        "hardware": hardware,
        "data": sorted(data),
        "warnings": mixed_settings(results),
        "commands": commands,
        "report_command": report_command,
        "trials": len(results),
        "started": started[0] if started else None,
        "finished": finished[-1] if finished else None,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _settings(result: dict) -> dict[str, Any]:
    """What a trial was run with, flat: profile, the method's config and the dataset's options."""
    out: dict[str, Any] = {"profile": result.get("profile")}
    out.update(result.get("config") or {})
    out.update({f"dataset.{k}": v for k, v in (result.get("dataset_options") or {}).items() if v is not None})
    return out


def mixed_settings(results: list[dict]) -> list[str]:
    """Warnings for rows that pool trials they should not: trials of one (dataset, method, sampler) run with
    different settings (say, a rerun with ``--set resnet.lr=...`` into the same experiment), whose mean mixes
    them, or the same seed run more than once (the mean counts it twice; the paired tests use the newest)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((str(r.get("dataset")), str(r.get("method")), str(r.get("sampler"))), []).append(r)
    out = []
    for (dataset, method, sampler), members in sorted(groups.items()):
        by_settings: dict[str, tuple[dict, list[dict]]] = {}  # settings as JSON -> (settings, trials)
        for r in members:
            settings = _settings(r)
            by_settings.setdefault(json.dumps(settings, sort_keys=True, default=str), (settings, []))[1].append(r)
        where = f"{method} · {sampler} on {dataset}"
        if len(by_settings) > 1:
            flat = [d for d, _ in by_settings.values()]
            differ = sorted({k for d in flat for k in d if any(d.get(k) != e.get(k) for e in flat)})
            parts = []
            for d, group in by_settings.values():
                seeds = ",".join(str(r.get("seed")) for r in sorted(group, key=lambda r: r.get("seed") or 0))
                parts.append(", ".join(f"{k}={d.get(k, '(unset)')}" for k in differ) + f" (seeds {seeds})")
            out.append(f"{where} pools trials run with different settings: {'; '.join(parts)}. Its row mixes "
                       "them: run each setting into its own experiment (--experiment NAME) and report them "
                       "apart.")
            continue
        seeds = [r.get("seed") for r in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if repeated:
            out.append(f"{where} has seed(s) {', '.join(map(str, repeated))} more than once with the same "
                       "settings (the same trial in several experiments?): the mean counts each, the paired "
                       "tests use the newest.")
    return out


def _data_text(result: dict) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted((result.get("dataset_options") or {}).items())
                        if v is not None)
    counts = f"{result.get('n_train', '?')} training / {result.get('n_test', '?')} test images"
    split = (result.get("dataset_options") or {}).get("split")
    protocol = f"; {result['protocol']}" if result.get("protocol") not in (None, "", split) else ""
    return f"{result.get('dataset', '?')} ({options}): {counts}{protocol}"


def _hardware_text(hw: dict) -> str:
    parts = [hw.get("processor") or hw.get("machine"), f"{hw['cpu_count']} CPUs" if hw.get("cpu_count") else None,
             hw.get("gpu"), f"device {hw['device']}" if hw.get("device") else None,
             f"torch {hw['torch']}" if hw.get("torch") else None,
             f"Python {hw['python']}" if hw.get("python") else None, hw.get("platform")]
    return ", ".join(str(p) for p in parts if p)


# --------------------------------------------------------------------------------------------------
# Markdown


def _datasets(board) -> Iterable[tuple[str, list[dict]]]:
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        yield dataset, list(group.iter_rows(named=True))


def _latency_source(row: Mapping[str, Any]) -> str:
    """`` (bench)`` / `` (trial)`` / `` (bench+trial)`` after a latency cell: where its figures come from."""
    return f" ({row['latency_source']})" if row.get("latency_source") else ""


def _latency_legend_of(source: str | None) -> str:
    from harness.contract.result import LATENCY_SOURCES

    return "; ".join(f"{name}: {LATENCY_SOURCES[name]}" for name in (source or "").split("+") if name in LATENCY_SOURCES)


def _latency_legend(board) -> str:
    """The legend's sentence on latency sources (empty when no row says where its latency comes from)."""
    if "latency_source" not in board.columns:
        return ""
    sources = "+".join(sorted({p for v in board["latency_source"].to_list() if v for p in v.split("+")}))
    return f" Latency source in brackets: {_latency_legend_of(sources)}." if sources else ""


def to_markdown(summary: Summary, prov: dict, title: str, svg_files: dict[str, str],
                replicates: int = N_BOOTSTRAP) -> str:
    board = summary.board
    lines = [f"# {_md(title)}", ""]
    if board.is_empty():
        return "\n".join([*lines, "_No finished trials._", ""])
    metrics = [m for m in ("balanced_accuracy", "mcc", "accuracy", "auroc") if f"{m}_mean" in board.columns]
    for dataset, rows in _datasets(board):
        top = rows[0]
        lines += [f"## {_md(dataset)}", "",
                  f"Paired tests against the top method, **{_md(top['method'])}** ({_md(top['sampler'])}).", ""]
        header = ["rank", "method", "sampler", "seeds", "Macro-F1", "Δ Macro-F1 vs top [95% CI]", "p (bootstrap)",
                  "p (seeds)", *(SHORT[m] for m in metrics), "p (McNemar)", "ms/img b1", "Pareto"]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        for row in rows:
            seeds = str(row["seeds"]) + (f" ({row['failed']} failed)" if row.get("failed") else "")
            cells = [str(row["rank"]), _md(row["method"]), _md(row["sampler"]), seeds, _mean_ci(row, "macro_f1"),
                     _diff(row), _p(row.get("f1_p_value")) + _mark(row.get("f1_significant")),
                     _p(row.get("f1_seed_p_value")) + _mark(row.get("f1_seed_significant")),
                     *(_mean_ci(row, m) for m in metrics),
                     _p(row.get("mcnemar_p_value")) + _mark(row.get("accuracy_significant")),
                     _mean_ci(row, "ms_per_image_b1", 2) + _latency_source(row), "◆" if row.get("pareto") else ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if dataset in svg_files:
            lines += [f"![Macro-F1 against latency on {_md(dataset)}]({svg_files[dataset]})", ""]
    lines += [
        "Mean ± half-width of the 95% Student's t confidence interval over seeds (a single seed shows the "
        "value alone). Ranked by mean Macro-F1 within each dataset. Δ: paired bootstrap of the Macro-F1 "
        f"difference on the shared test images ({replicates} resamples, percentile CI): the uncertainty of the "
        "test set for the trained models. p (seeds): paired t-test of the per-seed Macro-F1 differences "
        "(needs 2+ paired seeds): whether the gap holds across training seeds. McNemar: paired test of "
        f"accuracy against the top method (exact binomial on the discordant pairs, chi-square with continuity "
        f"correction above {EXACT_MCNEMAR_MAX} of them). * = significant at {ALPHA} (two-sided, uncorrected). "
        "◆ = on the Pareto front of Macro-F1 against ms per image at batch 1." + _latency_legend(board), "",
    ]
    if prov.get("warnings"):
        lines += ["## Warnings", "", *(f"- {_md(w)}" for w in prov["warnings"]), ""]
    lines += ["## Reproduce", ""]
    lines.append("- Commit: " + ", ".join(f"`{_md(c)}`" for c in prov["commits"]))
    lines.append("- Harness: " + ", ".join(_md(v) for v in prov["harness_versions"]) + "; profile: "
                 + ", ".join(_md(p) for p in prov["profiles"]) + f"; {prov['trials']} trials")
    for text in prov.get("data", []):
        lines.append(f"- Data: {_md(text)}")
    for hw in prov["hardware"]:
        lines.append(f"- Hardware: {_md(_hardware_text(hw))}")
    commands = [*prov["commands"], *([prov["report_command"]] if prov.get("report_command") else [])]
    if commands:
        lines += ["", "```", *(c.replace("```", "'''") for c in commands), "```"]
    else:
        lines += ["- Command: not recorded (runs made before `harness run` wrote experiment.json)"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# SVG plot


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(lo / step) * step
    ticks, value = [], start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            value = m * 10.0 ** exponent
            if lo <= value <= hi:
                ticks.append(value)
    return ticks


def pareto_svg(rows: Sequence[dict], title: str, standalone: bool = False) -> str:
    """Macro-F1 against ms per image (batch 1): every (method, sampler), the front joined by a line."""
    width, height, left, right, top, bottom = 640, 380, 64, 150, 34, 50
    points = [r for r in rows if not _nan(r.get("ms_per_image_b1_mean")) and not _nan(r.get("macro_f1_mean"))]
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [f'<svg{ns} class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc("Macro-F1 against latency: " + title)}" font-family="system-ui, sans-serif" '
           'font-size="12">', f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="600">{esc(title[:40])}: Macro-F1 against latency'
           '</text>']
    if not points:
        out += [f'<text x="{left}" y="{height / 2}" fill="#555">No latency recorded.</text>', "</svg>"]
        return "\n".join(out)
    xs = [float(r["ms_per_image_b1_mean"]) for r in points]
    ys = [float(r["macro_f1_mean"]) for r in points]
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    if log:
        x_lo, x_hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
        ticks_x = [t for t in _log_ticks(10 ** x_lo, 10 ** x_hi)]
    else:
        pad = (max(xs) - min(xs)) * 0.08 or max(abs(max(xs)) * 0.1, 0.01)
        x_lo, x_hi = max(0.0, min(xs) - pad), max(xs) + pad
        ticks_x = _nice_ticks(x_lo, x_hi)
    pad_y = max((max(ys) - min(ys)) * 0.1, 0.01)  # never stretch a tiny difference over the whole axis
    y_lo, y_hi = max(0.0, min(ys) - pad_y), min(1.0, max(ys) + pad_y)
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 0.05, y_hi + 0.05
    ticks_y = _nice_ticks(y_lo, y_hi)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        v = math.log10(x) if log else x
        return left + (v - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for t in ticks_x:
        if (math.log10(t) if log else t) < x_lo or (math.log10(t) if log else t) > x_hi:
            continue
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#333">{t:g}</text>')
    for t in ticks_y:
        if t < y_lo or t > y_hi:
            continue
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">{t:g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">ms per image, batch 1'
               f'{" (log scale)" if log else ""}; lower is better</text>')
    out.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               'Macro-F1 (mean over seeds)</text>')
    front = sorted((r for r in points if r.get("pareto")), key=lambda r: r["ms_per_image_b1_mean"])
    if len(front) > 1:
        steps = []  # a staircase: everything below and to the right of it is dominated
        for i, r in enumerate(front):
            x, y = px(r["ms_per_image_b1_mean"]), py(r["macro_f1_mean"])
            if i:
                steps.append(f"{x:.1f},{py(front[i - 1]['macro_f1_mean']):.1f}")
            steps.append(f"{x:.1f},{y:.1f}")
        path = " ".join(steps)
        out.append(f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="1.5" '
                   'stroke-dasharray="4 3"/>')
    for r in points:
        x, y = px(r["ms_per_image_b1_mean"]), py(r["macro_f1_mean"])
        name = f"{r['method']} ({r['sampler']})" if r.get("sampler") not in (None, "-") else str(r["method"])
        on = bool(r.get("pareto"))
        out.append(f'<g><title>{esc(name)}: Macro-F1 {r["macro_f1_mean"]:.3f}, '
                   f'{r["ms_per_image_b1_mean"]:.2f} ms/image{esc(", on the Pareto front" if on else "")}</title>'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{"#2563eb" if on else "#bbb"}" stroke="#333" '
                   f'stroke-width="0.7"/><text x="{x + 7:.1f}" y="{y + 4:.1f}" fill="#222">{esc(name[:28])}</text>'
                   '</g>')
    out.append(f'<g transform="translate({width - 190} 16)"><circle r="5" fill="#2563eb"/>'
               '<text x="9" y="4">Pareto front</text><circle cx="100" r="5" fill="#bbb"/>'
               '<text x="109" y="4">dominated</text></g>')
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# HTML

CSS = """
:root { color-scheme: light; --accent: #2563eb; --muted: #666; --line: #ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 1.5rem 3rem; color: #1a1a1a; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 2px solid var(--line); }
.muted, figcaption, .note { color: var(--muted); }
table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .55rem; text-align: right; white-space: nowrap; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
table.board th { cursor: pointer; user-select: none; background: #f6f7f9; position: sticky; top: 0; }
table.board th[aria-sort="ascending"]::after { content: " ▲"; }
table.board th[aria-sort="descending"]::after { content: " ▼"; }
tr.top td { font-weight: 600; }
.sig, .warn { color: #b91c1c; font-weight: 600; } .front { color: var(--accent); }
details { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .8rem; margin: .5rem 0; }
summary { cursor: pointer; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.artefacts { display: flex; flex-wrap: wrap; gap: .8rem; }
.artefacts figure { margin: 0; max-width: 320px; } .artefacts img { max-width: 100%; image-rendering: pixelated;
  border: 1px solid var(--line); }
table.cm td { min-width: 2.6rem; text-align: center; } table.cm th { text-align: center; }
code, pre { background: #f4f4f5; border-radius: 4px; padding: .1rem .3rem; }
pre { padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
.scroll { overflow-x: auto; }
"""

SORT_JS = """(function () {
  function value(cell, numeric) {
    var raw = cell.getAttribute("data-v");
    if (raw === null) { raw = cell.textContent; }
    if (numeric) { var x = parseFloat(raw); return isNaN(x) ? null : x; }
    return raw.toLowerCase();
  }
  function sortBy(table, th, index) {
    var numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[index], numeric), y = value(b.cells[index], numeric);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  var tables = document.querySelectorAll("table.board");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, index); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, th, index); }
      });
    });
  });
})();"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _td(text: str, sort_value: Any = None, cls: str = "", title: str = "") -> str:
    attrs = ""
    if sort_value is not None and not _nan(sort_value):
        attrs += f' data-v="{esc(sort_value)}"'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{esc(title)}"'
    return f"<td{attrs}>{text}</td>"


def _board_html(rows: list[dict], ids: dict, table_id: str, metrics: list[str]) -> str:
    heads = [("rank", "num"), ("method", "text"), ("sampler", "text"), ("seeds", "num"), ("Macro-F1", "num"),
             ("Δ Macro-F1 vs top [95% CI]", "num"), ("p (bootstrap)", "num"), ("p (seeds)", "num"),
             *((SHORT[m], "num") for m in metrics), ("p (McNemar)", "num"), ("ms/img b1", "num"),
             ("params", "num"), ("Pareto", "text")]
    out = [f'<div class="scroll"><table class="board" id="{table_id}"><thead><tr>'
           + "".join(f'<th data-type="{t}" scope="col">{esc(h)}</th>' for h, t in heads) + "</tr></thead><tbody>"]
    for row in rows:
        key = (row["dataset"], row["method"], row["sampler"])
        ci = (f"95% CI [{_num(row.get('macro_f1_ci_low'))}, {_num(row.get('macro_f1_ci_high'))}]"
              if not _nan(row.get("macro_f1_ci_low")) else "one seed: no interval")
        f1_sig = row.get("f1_significant")
        acc_sig = row.get("accuracy_significant")
        seed_sig = row.get("f1_seed_significant")
        cells = [
            _td(esc(row["rank"]), row["rank"]),
            _td(f'<a href="#{ids[key]}">{esc(row["method"])}</a>', str(row["method"])),
            _td(esc(row["sampler"])),
            _td(esc(row["seeds"]) + (f" ({esc(row['failed'])} failed)" if row.get("failed") else ""), row["seeds"]),
            _td(esc(_mean_ci(row, "macro_f1")), row.get("macro_f1_mean"), title=ci),
            _td(esc(_diff(row)), 0.0 if row.get("is_top") else row.get("f1_diff")),
            _td(esc(_p(row.get("f1_p_value"))) + (' <span class="sig" title="significant at 0.05">*</span>'
                                                  if f1_sig else ""),
                row.get("f1_p_value"), "sig-cell" if f1_sig else ""),
            _td(esc(_p(row.get("f1_seed_p_value"))) + (' <span class="sig" title="significant at 0.05">*</span>'
                                                       if seed_sig else ""),
                row.get("f1_seed_p_value"), "sig-cell" if seed_sig else "",
                title=_seed_diffs_title(row.get("f1_seed_diffs"))),
            *(_td(esc(_mean_ci(row, m)), row.get(f"{m}_mean")) for m in metrics),
            _td(esc(_p(row.get("mcnemar_p_value"))) + (' <span class="sig" title="significant at 0.05">*</span>'
                                                       if acc_sig else ""),
                row.get("mcnemar_p_value"), title=row.get("mcnemar_test") or ""),
            _td(esc(_mean_ci(row, "ms_per_image_b1", 2) + _latency_source(row)), row.get("ms_per_image_b1_mean"),
                title=_latency_legend_of(row.get("latency_source"))),
            _td(esc(_params(row.get("params_mean"))), row.get("params_mean")),
            _td('<span class="front">◆ front</span>' if row.get("pareto") else "", "1" if row.get("pareto") else "0"),
        ]
        cls = ' class="top"' if row.get("is_top") else ""
        out.append(f'<tr{cls} data-method="{esc(row["method"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _seed_test_text(cmp: dict) -> str:
    diffs = cmp.get("seed_diffs") or []
    if not diffs:
        return ""
    per_seed = ", ".join(f"{d:+.4f}" for d in diffs)
    if cmp.get("f1_seed_p") is None:
        why = "one paired seed" if len(diffs) < 2 else "the differences do not vary"
        return f"Per-seed differences {esc(per_seed)}: no t-test over seeds ({why}). "
    verdict = "significant" if cmp["f1_seed_significant"] else "not significant"
    return (f"Per-seed differences {esc(per_seed)}: paired t-test over seeds p = {esc(_p(cmp['f1_seed_p']))} — "
            f"{verdict}. ")


def _seed_diffs_title(diffs: list[float] | None) -> str:
    if not diffs:
        return ""
    return "Macro-F1 minus the top's, per paired seed: " + ", ".join(f"{d:+.3f}" for d in diffs)


def _params(value: Any) -> str:
    if _nan(value):
        return "–"
    value = float(value)
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"


def _artefacts_html(detail: GroupDetail) -> str:
    images, others = [], []
    for trial in detail.trials:
        folder = trial.path / "artefacts"
        if not folder.is_dir():
            continue
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            label = f"seed {trial.seed}: {file.relative_to(folder)}"
            mime = IMAGE_TYPES.get(file.suffix.lower())
            size = file.stat().st_size
            if mime and size <= MAX_IMAGE_BYTES and len(images) < MAX_IMAGES_PER_METHOD:
                data = base64.b64encode(file.read_bytes()).decode()
                images.append(f'<figure><img alt="{esc(label)}" src="data:{mime};base64,{data}">'
                              f"<figcaption>{esc(label)}</figcaption></figure>")
            else:
                others.append(f"<li>{esc(label)} ({size:,} bytes, not embedded)</li>")
    if not images and not others:
        return '<p class="muted">No artefacts.</p>'
    out = ""
    if images:
        out += '<div class="artefacts">' + "".join(images) + "</div>"
    if others:
        out += "<ul>" + "".join(others) + "</ul>"
    return out


def _detail_html(detail: GroupDetail, row: dict, anchor: str) -> str:
    name = f"{detail.method} · {detail.sampler}"
    parts = [f'<details id="{anchor}"><summary>{esc(name)} <span class="muted">rank {esc(row["rank"])}, '
             f"Macro-F1 {esc(_mean_ci(row, 'macro_f1'))}</span></summary>"]
    cmp = detail.comparison
    if cmp.get("is_top"):
        parts.append("<p>Top method on this dataset: the others are compared with it.</p>")
    elif "f1_diff" in cmp:
        parts.append(
            f"<p>Against the top method, on {len(cmp['paired_seeds'])} paired seed(s) ({cmp['n_images']:,} image "
            f"pairs): Macro-F1 difference {cmp['f1_diff']:+.4f}, 95% CI [{cmp['f1_diff_low']:+.4f}, "
            f"{cmp['f1_diff_high']:+.4f}], p = {esc(_p(cmp['f1_p']))} (paired bootstrap, {cmp['replicates']} "
            f"resamples) — {'significant' if cmp['f1_significant'] else 'not significant'} at {ALPHA}. "
            + _seed_test_text(cmp) +
            f"Accuracy difference {cmp['acc_diff']:+.4f}; McNemar ({esc(cmp['mcnemar_test'])}): "
            f"{cmp['mcnemar_b']} images right only here, {cmp['mcnemar_c']} right only in the top method, "
            f"p = {esc(_p(cmp['mcnemar_p']))} — {'significant' if cmp['acc_significant'] else 'not significant'}."
            + (f" Seeds without a pair: {esc(cmp['unpaired_seeds'])}." if cmp.get("unpaired_seeds") else "")
            + "</p>")
    else:
        parts.append("<p>No seed shares its test images with the top method: no paired test.</p>")
    grid = []
    if detail.recall is not None:
        support = detail.confusion.sum(axis=1)
        rows = "".join(f"<tr><td>{esc(c)}</td><td>{_num(r)}</td><td>{int(s):,}</td></tr>"
                       for c, r, s in zip(_class_names(detail), detail.recall, support))
        grid.append("<div><h4>Per-class recall (pooled over seeds)</h4><table><thead><tr><th>class</th>"
                    f"<th>recall</th><th>images</th></tr></thead><tbody>{rows}</tbody></table></div>")
        grid.append(_confusion_html(detail))
    trials = "".join(
        f"<tr><td>{t.seed}</td><td>{_num((t.result.get('metrics') or {}).get('macro_f1'))}</td>"
        f"<td>{_num((t.result.get('metrics') or {}).get('accuracy'))}</td>"
        f"<td>{_num((t.result.get('latency') or {}).get('ms_per_image_b1'), 2)}</td>"
        f"<td>{_num(t.result.get('fit_seconds'), 1)}</td><td><code>{esc(t.result.get('key', t.path.name))}</code></td>"
        "</tr>" for t in detail.trials)
    grid.append("<div><h4>Trials</h4><table><thead><tr><th>seed</th><th>Macro-F1</th><th>accuracy</th>"
                f"<th>ms/img b1</th><th>fit s</th><th>key</th></tr></thead><tbody>{trials}</tbody></table></div>")
    parts.append('<div class="grid">' + "".join(grid) + "</div>")
    config = (detail.trials[0].result.get("config") if detail.trials else None) or {}
    if config:
        items = "".join(f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(_clean(v)))}</td></tr>"
                        for k, v in sorted(config.items()))
        parts.append(f"<h4>Config</h4><table><tbody>{items}</tbody></table>")
    parts.append("<h4>Artefacts</h4>" + _artefacts_html(detail))
    parts.append("</details>")
    return "\n".join(parts)


def _class_names(detail: GroupDetail) -> list[str]:
    k = len(detail.recall)
    names = list(detail.classes)[:k]
    return names + [str(i) for i in range(len(names), k)]


def _confusion_html(detail: GroupDetail) -> str:
    cm = detail.confusion
    names = _class_names(detail)
    rows_sum = cm.sum(axis=1)
    head = "".join(f'<th scope="col" title="{esc(n)}">{i}</th>' for i, n in enumerate(names))
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            share = cm[i, j] / rows_sum[i] if rows_sum[i] else 0.0
            cells.append(f'<td style="background: rgba(37, 99, 235, {share * 0.85:.3f}); color: '
                         f'{"#fff" if share > 0.55 else "#111"}">{int(cm[i, j])}</td>')
        label = f"{i} {name[:18]}" if name != str(i) else name
        body.append(f'<tr><th scope="row" title="{esc(name)}">{esc(label)}</th>{"".join(cells)}</tr>')
    return ("<div><h4>Confusion matrix (rows: true, columns: predicted; pooled over seeds)</h4>"
            f'<table class="cm"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def to_html(summary: Summary, prov: dict, title: str, replicates: int = N_BOOTSTRAP) -> str:
    board = summary.board
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp())}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{esc(title)}</h1><p class=\"muted\">Generated {esc(prov['generated'])} from "
             f"{prov['trials']} finished trial(s).</p></header>"]
    if prov.get("warnings"):
        parts.append('<section id="warnings"><h2>Warnings</h2><ul>'
                     + "".join(f'<li class="warn">{esc(w)}</li>' for w in prov["warnings"]) + "</ul></section>")
    if board.is_empty():
        parts += ["<p>No finished trials.</p>"]
    metrics = [m for m in ("balanced_accuracy", "mcc", "accuracy", "auroc") if f"{m}_mean" in board.columns]
    ids: dict[tuple, str] = {}
    if not board.is_empty():
        for i, row in enumerate(board.iter_rows(named=True)):
            ids[(row["dataset"], row["method"], row["sampler"])] = f"m{i}"
        nav = "".join(f'<li><a href="#d{i}">{esc(d)}</a></li>' for i, (d, _) in enumerate(_datasets(board)))
        parts.append(f"<nav><ul>{nav}</ul></nav>")
    for i, (dataset, rows) in enumerate(_datasets(board) if not board.is_empty() else []):
        top = rows[0]
        parts += [f'<section class="dataset" id="d{i}"><h2>{esc(dataset)}</h2>',
                  f"<p>Paired tests against the top method, <strong>{esc(top['method'])}</strong> "
                  f"({esc(top['sampler'])}). Click a column to sort.</p>",
                  _board_html(rows, ids, f"board-{i}", metrics),
                  f"<figure>{pareto_svg(rows, str(dataset))}<figcaption>◆ / blue: on the Pareto front (no other "
                  "method is both at least as accurate and at least as fast).</figcaption></figure>",
                  "<h3>Methods</h3>"]
        for row in rows:
            key = (row["dataset"], row["method"], row["sampler"])
            detail = summary.details.get(key)
            if detail is not None:
                parts.append(_detail_html(detail, row, ids[key]))
        parts.append("</section>")
    parts.append('<section id="about"><h2>How to read this</h2><p class="note">Mean ± half-width of the 95% '
                 "Student's t confidence interval over seeds (hover a Macro-F1 cell for the interval). Δ Macro-F1: "
                 "paired bootstrap over the shared test images (the same resampled images for both methods and "
                 f"every seed; {replicates} resamples; percentile CI; two-sided p): the test-set uncertainty for "
                 "the trained models. p (seeds): paired t-test of the per-seed Macro-F1 differences (2+ paired "
                 "seeds; hover for the differences): whether the gap holds across training seeds, which vary "
                 "initialisation, augmentation and batch order. p (McNemar): paired test of "
                 f"accuracy on the pooled seeds (exact binomial on the discordant pairs; chi-square with continuity "
                 f"correction above {EXACT_MCNEMAR_MAX} of them). * = significant at {ALPHA}, "
                 "not corrected for multiple comparisons. Latency: median ms per image at batch 1, measured by the "
                 "harness.</p>")
    parts.append(_provenance_html(prov))
    parts.append("</section>")
    data = {"provenance": prov,
            "rows": [{k: v for k, v in r.items() if k not in ("confusion_matrix",)}
                     for r in (board.iter_rows(named=True) if not board.is_empty() else [])]}
    parts.append(f'<script type="application/json" id="report-data">{json_for_script(data)}</script>')
    parts.append(f"<script>{SORT_JS}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _provenance_html(prov: dict) -> str:
    items = [f"<li>Commit: {', '.join(f'<code>{esc(c)}</code>' for c in prov['commits'])}</li>",
             f"<li>Harness {esc(', '.join(prov['harness_versions']))}; profile {esc(', '.join(prov['profiles']))}; "
             f"trials from {esc(prov['started'])} to {esc(prov['finished'])}</li>"]
    items += [f"<li>Data: {esc(text)}</li>" for text in prov.get("data", [])]
    items += [f"<li>Hardware: {esc(_hardware_text(hw))}</li>" for hw in prov["hardware"]]
    commands = [*prov["commands"], *([prov["report_command"]] if prov.get("report_command") else [])]
    out = "<h3>Reproduce</h3><ul>" + "".join(items) + "</ul>"
    if commands:
        out += "<pre>" + "\n".join(esc(c) for c in commands) + "</pre>"
    else:
        out += '<p class="muted">Command not recorded.</p>'
    return out


def write_report(runs_dir: Path | str, out_dir: Path | str, *, title: str | None = None,
                 report_command: str | None = None, replicates: int = N_BOOTSTRAP,
                 only: Mapping[str, Collection[str]] | None = None) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``index.html``, ``results.parquet`` (and one SVG plot per dataset, which
    the Markdown links) into ``out_dir``; returns their paths."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    summary = summarise(runs_dir, replicates=replicates, only=only)
    prov = provenance(summary, runs_dir, report_command)
    title = title or f"Leaderboard: {runs_dir.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    svg_files: dict[str, str] = {}
    if not summary.board.is_empty():
        for dataset, rows in _datasets(summary.board):
            name = f"pareto-{_slug(dataset)}.svg"
            atomic_write_bytes(out_dir / name, pareto_svg(rows, str(dataset), standalone=True).encode())
            svg_files[dataset] = name
            written[name] = out_dir / name
    atomic_write_bytes(out_dir / "leaderboard.md", to_markdown(summary, prov, title, svg_files, replicates).encode())
    atomic_write_bytes(out_dir / "index.html", to_html(summary, prov, title, replicates).encode())
    written["leaderboard.md"] = out_dir / "leaderboard.md"
    written["index.html"] = out_dir / "index.html"
    if not summary.board.is_empty():
        atomic_write_parquet(out_dir / "results.parquet", summary.board)
        written["results.parquet"] = out_dir / "results.parquet"
    mask = os.umask(0)
    os.umask(mask)
    for path in written.values():  # atomic writes create 0600 files; a published report is world-readable
        path.chmod(0o666 & ~mask)
    return written
