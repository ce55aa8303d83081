"""The self-contained ``index.html``: sortable tables, inline SVG plots (Pareto, learning curves, the
critical-difference diagram), and per method the paired tests in words, per-class recall, the confusion
matrix, each seed's trial, the method's notes, the config and its artefacts (images embedded as ``data:``
URIs). A Content Security Policy allows only inline styles, ``data:`` images and the one inline script (by
its hash). Every string from a plugin, a config or a result record is escaped."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from harness.report.format import (
    SECONDARY_METRICS,
    band_cell,
    clean,
    dataset_rows,
    diff_cell,
    esc,
    explanation,
    headline_cell,
    improving_cell,
    json_for_script,
    latency_cell,
    latency_sources,
    mcnemar_cell,
    mean_ci,
    nan,
    num,
    p,
    p_cell,
    seeds_cell,
    short,
    tied_sentence,
)
from harness.report.provenance import hardware_text, redact
from harness.report.svg import cd_svg, curves_svg, pareto_svg
from harness.results.summary import GroupDetail, Summary

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}
MAX_IMAGES_PER_METHOD = 6
MAX_IMAGE_BYTES = 2_000_000
MAX_PAGE_IMAGE_BYTES = 450_000  # images embedded in one page, in total (base64 adds a third)
MAX_PAGE_BYTES = 990_000  # a page stays under 1 MB: the images get what the rest of the page leaves

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
.curves { display: flex; flex-wrap: wrap; gap: 1rem; }
.improving { color: #b45309; font-weight: 600; }
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


def csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _td(text: str, sort_value: Any = None, cls: str = "", title: str = "") -> str:
    attrs = ""
    if sort_value is not None and not (isinstance(sort_value, float) and sort_value != sort_value):
        attrs += f' data-v="{esc(sort_value)}"'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{esc(title)}"'
    return f"<td{attrs}>{text}</td>"


def _board_html(summary: Summary, rows: list[dict], ids: dict, table_id: str) -> str:
    head = short(summary.settings.headline)
    metrics = [m for m in SECONDARY_METRICS if m != summary.settings.headline and f"{m}_mean" in summary.board.columns]
    heads = [("rank", "num"), ("band", "num"), ("method", "text"), ("sampler", "text"), ("seeds", "num"),
             (head, "num"), (f"Δ {head} vs top [95% CI]", "num"), ("p (adjusted)", "num"), ("p (seeds)", "num"),
             *((short(m), "num") for m in metrics), ("McNemar p per seed", "text"), ("ms/img b1", "num"),
             ("params", "num"), ("Pareto", "text"), ("curves", "text")]
    out = [f'<div class="scroll"><table class="board" id="{table_id}"><thead><tr>'
           + "".join(f'<th data-type="{t}" scope="col">{esc(h)}</th>' for h, t in heads) + "</tr></thead><tbody>"]
    metric = summary.settings.headline
    for row in rows:
        key = (row["dataset"], row["method"], row["sampler"])
        ci = (f"95% CI [{num(row.get(f'{metric}_ci_low'))}, {num(row.get(f'{metric}_ci_high'))}]"
              if row.get(f"{metric}_ci_low") is not None else "one seed: no interval")
        if row.get("absent_classes"):
            ci += "; no test images of class(es) " + ", ".join(row["absent_classes"]) + " (each counts as F1 = 0)"
        sig = row.get("significant")
        raw = "" if row.get("p_value") is None else f"unadjusted p = {p(row['p_value'])}"
        cells = [
            _td(esc(row["rank"]), row["rank"]),
            _td(esc(band_cell(row)), row.get("band")),
            _td(f'<a href="#{ids[key]}">{esc(row["method"])}</a>', str(row["method"])),
            _td(esc(row["sampler"])),
            _td(esc(seeds_cell(row)), row["seeds"]),
            _td(esc(headline_cell(row, metric)), row.get(f"{metric}_mean"), title=ci),
            _td(esc(diff_cell(row)), 0.0 if row.get("is_top") else row.get("diff")),
            _td(esc(p_cell(row).removesuffix(" *")) + (' <span class="sig" title="significant after correction">*'
                                                        "</span>" if sig else ""),
                row.get("p_adjusted"), "sig-cell" if sig else "", title=raw),
            _td(esc(p(row.get("seed_p_value"))), row.get("seed_p_value"),
                title=_seed_diffs_title(row.get("seed_diffs"))),
            *(_td(esc(mean_ci(row, m)), row.get(f"{m}_mean")) for m in metrics),
            _td(esc(mcnemar_cell(row))),
            _td(esc(latency_cell(row)), row.get("ms_per_image_b1_mean"),
                title=latency_sources(row.get("latency_source"))),
            _td(esc(_params(row.get("params_mean"))), row.get("params_mean")),
            _td('<span class="front">◆ front</span>' if row.get("pareto") else "", "1" if row.get("pareto") else "0"),
            _td(f'<span class="improving">{esc(improving_cell(row))}</span>' if improving_cell(row) else ""),
        ]
        cls = ' class="top"' if row.get("is_top") else ""
        out.append(f'<tr{cls} data-method="{esc(row["method"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _seed_diffs_title(diffs: list[float] | None) -> str:
    if not diffs:
        return ""
    return "difference from the top, per paired seed: " + ", ".join(f"{d:+.3f}" for d in diffs)


def _trial_latency(record) -> str:
    """One trial's ms per image at batch 1 (``harness bench``'s when it was benched) and its source."""
    from harness.contract.result import latency_of_record

    latency, source = latency_of_record(record)
    value = latency.get("ms_per_image_b1")
    return num(value, 2) + (f" ({esc(source)})" if source and not nan(value) else "")


def _params(value: Any) -> str:
    if value is None or value != value:
        return "–"
    value = float(value)
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"


def _comparison_text(summary: Summary, cmp: dict) -> str:
    s = summary.settings
    head = short(s.headline)
    if cmp.get("is_top"):
        return "<p>Top method on this dataset: the others are compared with it.</p>"
    if "tests" not in cmp:
        why = " ".join(cmp.get("refused", [])) or "no seed shares its test images with the top method"
        return f"<p>No paired test: {esc(why)}</p>"
    tests = cmp["tests"]
    parts = []
    if "diff" in cmp:
        verdict = "significant" if cmp.get("significant") else "not significant"
        parts.append(
            f"Against the top method, on {len(cmp['paired_seeds'])} paired seed(s) ({cmp['n_images']:,} image pairs, "
            f"paired by {esc(cmp['pairing'])}): {esc(head)} difference {cmp['diff']:+.4f}, 95% CI "
            f"[{cmp['low']:+.4f}, {cmp['high']:+.4f}], p = {esc(p(tests[s.headline]['p_value']))}, adjusted "
            f"({esc(s.correction)}) p = {esc(p(cmp.get('p_adjusted')))}: {verdict} at {s.alpha} (two-level paired "
            f"bootstrap, {tests[s.headline]['replicates']} image resamples).")
        if len(cmp["paired_seeds"]) == 1:
            parts.append("One paired seed: this covers the test images only, not another training seed.")
    else:
        parts.append(esc(cmp.get("no_test", "")))
    others = [f"{esc(short(m))} {t['diff']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}]" for m, t in tests.items()
              if m != s.headline]
    if others:
        parts.append("Other differences [95% CI]: " + "; ".join(others) + ".")
    diffs = cmp.get("seed_diffs") or []
    if diffs:
        seed_p = cmp.get("seed_p")
        parts.append(f"Per-seed differences {esc(', '.join(f'{d:+.4f}' for d in diffs))}; paired t-test over seeds "
                     + ("not computable (" + ("one paired seed" if len(diffs) < 2 else "the differences do not vary")
                        + ")" if seed_p is None else f"p = {esc(p(seed_p))}") + " (secondary).")
    mc = cmp.get("mcnemar") or []
    if mc:
        parts.append("McNemar per seed (secondary): " + "; ".join(
            f"seed {seed}: {t['b']} right only here, {t['c']} right only in the top, p = {esc(p(t['p_value']))}"
            for seed, t in zip(cmp["paired_seeds"], mc)) + ".")
    if cmp.get("band") is not None:
        leader = cmp.get("band_leader")
        parts.append(f"Band {cmp['band']}" + (f" (led by {esc(leader[0])} · {esc(leader[1])})" if leader else "") + ".")
    if cmp.get("unpaired_seeds"):
        parts.append(f"Seeds without a pair: {esc(cmp['unpaired_seeds'])}.")
    for message in cmp.get("refused", []):
        parts.append(f'<span class="warn">{esc(redact(message))}</span>')
    return "<p>" + " ".join(parts) + "</p>"


def _artefacts_html(detail: GroupDetail, budget: list[int]) -> str:
    """The trials' artefacts: images embedded (at most ``MAX_IMAGES_PER_METHOD``, each at most
    ``MAX_IMAGE_BYTES``, while ``budget[0]``, the page's embedded-image bytes left, allows), the rest listed."""
    images, others = [], []
    for trial in detail.trials:
        folder = trial.folder / "artefacts"
        if not folder.is_dir():
            continue
        for file in sorted(f for f in folder.rglob("*") if f.is_file()):
            label = f"seed {trial.seed}: {file.relative_to(folder)}"
            mime = IMAGE_TYPES.get(file.suffix.lower())
            size = file.stat().st_size
            if mime and size <= min(MAX_IMAGE_BYTES, budget[0]) and len(images) < MAX_IMAGES_PER_METHOD:
                budget[0] -= size
                data = base64.b64encode(file.read_bytes()).decode()
                images.append(f'<figure><img alt="{esc(label)}" src="data:{mime};base64,{data}">'
                              f"<figcaption>{esc(label)}</figcaption></figure>")
            else:
                others.append(f"<li>{esc(label)} ({size:,} bytes, not embedded: in the trial's artefacts/)</li>")
    if not images and not others:
        return '<p class="muted">No artefacts.</p>'
    return (('<div class="artefacts">' + "".join(images) + "</div>") if images else "") + (
        ("<ul>" + "".join(others) + "</ul>") if others else "")


def _curves_html(summary: Summary, detail: GroupDetail) -> str:
    with_curve = [(t.seed, t.curve) for t in detail.trials if t.curve]
    if not with_curve:
        return '<p class="muted">No learning curve recorded.</p>'
    key = f"val_{summary.settings.headline}"
    flags = {f["seed"]: f for f in detail.improving}
    mark = next((f["from_epoch"] for f in detail.improving), None)
    plots = [curves_svg(with_curve, key, f"{key} per epoch", mark)]
    losses = sorted({k for _, c in with_curve for r in c for k in r if k.endswith("loss")})
    if losses:
        plots.append(curves_svg(with_curve, losses[0], f"{losses[0]} per epoch (training)"))
    words = []
    for seed, flag in sorted(flags.items()):
        state = "still improving" if flag["improving"] else "levelled off"
        words.append(f"seed {seed}: best {esc(key)} {flag['before']:.3f} before epoch {flag['from_epoch']:g}, "
                     f"{flag['last']:.3f} after ({flag['rise']:+.3f}): {state}")
    text = ("<p>" + "; ".join(words) + ".</p>") if words else ""
    return f'<div class="curves">{"".join(plots)}</div>{text}'


def _detail_html(summary: Summary, detail: GroupDetail, row: dict, anchor: str, budget: list[int]) -> str:
    metric = summary.settings.headline
    parts = [f'<details id="{anchor}"><summary>{esc(detail.method)} · {esc(detail.sampler)} '
             f'<span class="muted">rank {esc(row["rank"])}, band {esc(band_cell(row))}, {esc(short(metric))} '
             f"{esc(mean_ci(row, metric))}</span></summary>", _comparison_text(summary, detail.comparison)]
    if detail.absent_classes:
        parts.append(f'<p class="warn">No test images of class(es) {esc(", ".join(detail.absent_classes))}: '
                     "Macro-F1 counts each as F1 = 0.</p>")
    grid = []
    if detail.recall is not None:
        support = detail.confusion.sum(axis=1)
        rows = "".join(f"<tr><td>{esc(c)}</td><td>{num(r)}</td><td>{int(s):,}</td></tr>"
                       for c, r, s in zip(_class_names(detail), detail.recall, support))
        grid.append("<div><h4>Per-class recall (pooled over seeds)</h4><table><thead><tr><th>class</th>"
                    f"<th>recall</th><th>images</th></tr></thead><tbody>{rows}</tbody></table></div>")
        grid.append(_confusion_html(detail))
    trials = "".join(
        f"<tr><td>{t.seed}</td><td>{num(t.record.metric(metric))}</td>"
        f"<td>{num(t.record.metric('accuracy'))}</td>"
        f"<td>{_trial_latency(t.record)}</td>"
        f"<td>{num(t.record.fit_seconds, 1)}</td><td><code>{esc(t.record.key)}</code></td></tr>"
        for t in detail.trials)
    grid.append(f"<div><h4>Trials</h4><table><thead><tr><th>seed</th><th>{esc(short(metric))}</th><th>accuracy</th>"
                f"<th>ms/img b1</th><th>fit s</th><th>key</th></tr></thead><tbody>{trials}</tbody></table></div>")
    parts.append('<div class="grid">' + "".join(grid) + "</div>")
    parts.append("<h4>Learning curves</h4>" + _curves_html(summary, detail))
    notes = [(t.seed, t.record.notes) for t in detail.trials if t.record.notes]
    if notes:
        keys = sorted({k for _, n in notes for k in n})
        head = "".join(f"<th>{esc(k)}</th>" for k in keys)
        body = "".join("<tr><td>" + esc(seed) + "</td>" + "".join(
            f"<td>{esc(_note_value(n.get(k)))}</td>" for k in keys) + "</tr>" for seed, n in notes)
        parts.append(f'<h4>Notes (what the method recorded)</h4><div class="scroll"><table><thead><tr><th>seed</th>'
                     f"{head}</tr></thead><tbody>{body}</tbody></table></div>")
    config = (detail.trials[0].record.config if detail.trials else None) or {}
    if config:
        items = "".join(f"<tr><td>{esc(k)}</td><td>{esc(redact(json.dumps(clean(v))))}</td></tr>"
                        for k, v in sorted(config.items()))
        parts.append(f"<h4>Config</h4><table><tbody>{items}</tbody></table>")
    parts.append("<h4>Artefacts</h4>" + _artefacts_html(detail, budget))
    parts.append("</details>")
    return "\n".join(parts)


def _note_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return redact(json.dumps(clean(value)))
    return "–" if value is None else redact(str(value))


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


def _cross_html(summary: Summary) -> str:
    cross = summary.cross
    datasets = ", ".join(esc(d) for d in cross["datasets"])
    if "reason" in cross:
        return f'<section id="cross"><h2>Across datasets</h2><p>Datasets: {datasets}. No Friedman test: ' \
               f"{esc(cross['reason'])}.</p></section>"
    rows = "".join(f"<tr><td>{rank:.2f}</td><td>{esc(name)}</td></tr>"
                   for rank, name in sorted(zip(cross["mean_ranks"], cross["names"])))
    left = ("<p>Not on every dataset (left out): " + esc(", ".join(f"{m} ({s})" for m, s in cross["left_out"]))
            + "</p>") if cross.get("left_out") else ""
    return (f'<section id="cross"><h2>Across datasets</h2><p>Mean rank of {esc(short(cross["metric"]))} (1 = best) '
            f"over {datasets}, for the rows run on every dataset. Friedman's test: chi-square "
            f"{cross['statistic']:.2f}, p = {esc(p(cross['p_value']))}; Nemenyi post-hoc (scikit-posthocs), critical "
            f"difference {cross['critical_difference']:.2f} mean ranks: rows joined by a bar are not significantly "
            f"different.</p><figure>{cd_svg(cross)}</figure><table><thead><tr><th>mean rank</th><th>method</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>{left}</section>")


def to_html(summary: Summary, prov: dict, title: str) -> str:
    """The page. Its embedded images share what the rest of the page leaves of ``MAX_PAGE_BYTES`` (at most
    ``MAX_PAGE_IMAGE_BYTES``): a board with many rows embeds fewer images and lists the others."""
    bare = len(_page(summary, prov, title, 0).encode())
    markup = 300 * MAX_IMAGES_PER_METHOD * len(summary.details)  # an embedded image's figure and caption
    room = max(0, (MAX_PAGE_BYTES - bare - markup) * 3 // 4)  # base64 makes 4 characters of 3 bytes
    return _page(summary, prov, title, min(MAX_PAGE_IMAGE_BYTES, room))


def _page(summary: Summary, prov: dict, title: str, image_bytes: int) -> str:
    board = summary.board
    metric = summary.settings.headline
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{esc(csp())}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{esc(title)}</h1><p class=\"muted\">Generated {esc(prov['generated'])} from "
             f"{prov['trials']} finished trial(s).</p></header>"]
    if prov.get("warnings"):
        parts.append('<section id="warnings"><h2>Warnings</h2><ul>'
                     + "".join(f'<li class="warn">{esc(w)}</li>' for w in prov["warnings"]) + "</ul></section>")
    if board.is_empty():
        parts += ["<p>No finished trials.</p>"]
    ids: dict[tuple, str] = {}
    budget = [image_bytes]  # shared by every method's artefacts, in the order of the tables
    if not board.is_empty():
        for i, row in enumerate(board.iter_rows(named=True)):
            ids[(row["dataset"], row["method"], row["sampler"])] = f"m{i}"
        nav = "".join(f'<li><a href="#d{i}">{esc(d)}</a></li>' for i, (d, _) in enumerate(dataset_rows(board)))
        parts.append(f"<nav><ul>{nav}</ul></nav>")
    for i, (dataset, rows) in enumerate(dataset_rows(board) if not board.is_empty() else []):
        top = rows[0]
        parts += [f'<section class="dataset" id="d{i}"><h2>{esc(dataset)}</h2>',
                  f"<p>Paired tests against the top method, <strong>{esc(top['method'])}</strong> "
                  f"({esc(top['sampler'])}). {esc(tied_sentence(rows))} Click a column to sort.</p>",
                  _board_html(summary, rows, ids, f"board-{i}"),
                  f"<figure>{pareto_svg(rows, str(dataset), metric)}<figcaption>Numbered points, named in the legend; "
                  "blue: on the Pareto front (no other method is both at least as good and at least as fast)."
                  "</figcaption></figure>", "<h3>Methods</h3>"]
        for row in rows:
            key = (row["dataset"], row["method"], row["sampler"])
            detail = summary.details.get(key)
            if detail is not None:
                parts.append(_detail_html(summary, detail, row, ids[key], budget))
        parts.append("</section>")
    if summary.cross is not None:
        parts.append(_cross_html(summary))
    parts.append('<section id="about"><h2>How to read this</h2>'
                 + "".join(f'<p class="note">{esc(text)}</p>' for text in explanation(summary)))
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
    items += [f"<li>Hardware: {esc(hardware_text(hw))}</li>" for hw in prov["hardware"]]
    commands = [*prov["commands"], *([prov["report_command"]] if prov.get("report_command") else [])]
    out = "<h3>Reproduce</h3><ul>" + "".join(items) + "</ul>"
    if commands:
        out += "<pre>" + "\n".join(esc(c) for c in commands) + "</pre>"
    else:
        out += '<p class="muted">Command not recorded.</p>'
    return out
