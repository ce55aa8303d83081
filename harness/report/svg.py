"""The report's plots as SVG: the quality-versus-latency Pareto plot and the learning curves are drawn here
(no plotting dependency; every label escaped); the critical-difference diagram of a cross-dataset report
is scikit-posthocs' own (matplotlib, rendered to SVG text in memory)."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

from harness.report.format import esc, nan, short

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


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


def _row_name(r: dict) -> str:
    return f"{r['method']} ({r['sampler']})" if r.get("sampler") not in (None, "-") else str(r["method"])


def place_labels(anchors: Sequence[tuple[float, float]], widths: Sequence[float], height: float = 12.0,
                 bounds: tuple[float, float] = (0.0, 1e9)) -> list[tuple[float, float]]:
    """Positions (x, baseline y) for labels right of each anchor point that do not overlap each other: each
    label is tried at its point's height, then nudged up or down in steps of ``height`` until it is free."""
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(anchors)
    order = sorted(range(len(anchors)), key=lambda i: (anchors[i][1], anchors[i][0]))
    for i in order:
        x, y = anchors[i][0] + 7, anchors[i][1] + 4
        for step in range(0, 200):
            dy = (step + 1) // 2 * height * (1 if step % 2 else -1)
            top = y + dy - height + 2
            if top < bounds[0] or top + height > bounds[1]:
                continue
            box = (x, top, x + widths[i], top + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                placed.append(box)
                out[i] = (x, y + dy)
                break
        else:
            out[i] = (x, y)
    return out


def pareto_svg(rows: Sequence[dict], title: str, metric: str = "macro_f1", standalone: bool = False) -> str:
    """The headline metric against ms per image (batch 1): every (method, sampler) as a numbered point (numbers
    placed so they never overlap), the front joined as a staircase, and a legend naming each number."""
    points = [r for r in rows if not nan(r.get("ms_per_image_b1_mean")) and not nan(r.get(f"{metric}_mean"))]
    left, right, top, bottom = 64, 250, 34, 50
    width = 860
    height = max(380, top + 22 + 15 * len(points) + 10)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    head = short(metric)
    out = [f'<svg{ns} class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(f"{head} against latency: " + title)}" font-family="system-ui, sans-serif" '
           'font-size="12">', f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="600">{esc(title[:40])}: {esc(head)} against latency'
           '</text>']
    if not points:
        out += [f'<text x="{left}" y="{height / 2}" fill="#555">No latency recorded.</text>', "</svg>"]
        return "\n".join(out)
    xs = [float(r["ms_per_image_b1_mean"]) for r in points]
    ys = [float(r[f"{metric}_mean"]) for r in points]
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    if log:
        x_lo, x_hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
        ticks_x = _log_ticks(10 ** x_lo, 10 ** x_hi)
    else:
        pad = (max(xs) - min(xs)) * 0.08 or max(abs(max(xs)) * 0.1, 0.01)
        x_lo, x_hi = max(0.0, min(xs) - pad), max(xs) + pad
        ticks_x = _nice_ticks(x_lo, x_hi)
    pad_y = max((max(ys) - min(ys)) * 0.1, 0.01)  # never stretch a tiny difference over the whole axis
    y_lo, y_hi = min(ys) - pad_y, max(ys) + pad_y
    plot_w, plot_h = width - left - right, 380 - top - bottom

    def px(x: float) -> float:
        v = math.log10(x) if log else x
        return left + (v - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for t in ticks_x:
        v = math.log10(t) if log else t
        if v < x_lo or v > x_hi:
            continue
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#333">{t:g}</text>')
    for t in _nice_ticks(y_lo, y_hi):
        if y_lo <= t <= y_hi:
            out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#333">{t:g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{380 - 10}" text-anchor="middle">ms per image, batch 1'
               f'{" (log scale)" if log else ""}; lower is better</text>')
    out.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               f'{esc(head)} (mean over seeds)</text>')
    front = sorted((r for r in points if r.get("pareto")), key=lambda r: r["ms_per_image_b1_mean"])
    if len(front) > 1:
        steps = []  # a staircase: everything below and to the right of it is dominated
        for i, r in enumerate(front):
            x, y = px(r["ms_per_image_b1_mean"]), py(r[f"{metric}_mean"])
            if i:
                steps.append(f"{x:.1f},{py(front[i - 1][f'{metric}_mean']):.1f}")
            steps.append(f"{x:.1f},{y:.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="#2563eb" stroke-width="1.5" '
                   'stroke-dasharray="4 3"/>')
    anchors = [(px(r["ms_per_image_b1_mean"]), py(r[f"{metric}_mean"])) for r in points]
    labels = place_labels(anchors, [7.0 * len(str(i + 1)) + 2 for i in range(len(points))], bounds=(top, top + plot_h))
    for i, (r, (x, y), (lx, ly)) in enumerate(zip(points, anchors, labels), start=1):
        on = bool(r.get("pareto"))
        name = _row_name(r)
        out.append(f'<g><title>{i}. {esc(name)}: {esc(head)} {r[f"{metric}_mean"]:.3f}, '
                   f'{r["ms_per_image_b1_mean"]:.2f} ms/image{esc(", on the Pareto front" if on else "")}</title>'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{"#2563eb" if on else "#bbb"}" stroke="#333" '
                   f'stroke-width="0.7"/>'
                   + (f'<line x1="{x + 4:.1f}" y1="{y:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}" stroke="#999" '
                      'stroke-width="0.5"/>' if abs(ly - y - 4) > 6 else "")
                   + f'<text x="{lx:.1f}" y="{ly:.1f}" fill="#222" font-weight="600">{i}</text></g>')
    legend_x = left + plot_w + 16
    out.append(f'<g transform="translate({legend_x} {top})"><circle cx="5" cy="0" r="5" fill="#2563eb"/>'
               '<text x="14" y="4">on the Pareto front</text><circle cx="5" cy="16" r="5" fill="#bbb"/>'
               '<text x="14" y="20">dominated</text>')
    for i, r in enumerate(points, start=1):
        out.append(f'<text x="0" y="{40 + 15 * (i - 1)}"><tspan font-weight="600">{i}</tspan> '
                   f'{esc(_row_name(r)[:32])}</text>')
    out.append("</g></svg>")
    return "\n".join(out)


def curves_svg(trials: Sequence[tuple[Any, list[dict]]], key: str, title: str, mark: float | None = None) -> str:
    """Learning curves of one method: ``key`` (e.g. ``val_macro_f1``) against epoch, one line per seed
    (``trials``: (seed, curve) pairs); ``mark`` shades the last fifth of the budget."""
    from harness.contract.curves import points

    series = [(seed, points(curve, key)) for seed, curve in trials]
    series = [(seed, pts) for seed, pts in series if pts]
    width, height, left, right, top, bottom = 420, 220, 52, 90, 26, 36
    out = [f'<svg class="plot curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}" font-family="system-ui, sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{left}" y="16" font-size="12" font-weight="600">{esc(title[:60])}</text>']
    if not series:
        out += [f'<text x="{left}" y="{height / 2}" fill="#555">No {esc(key)} reported.</text>', "</svg>"]
        return "\n".join(out)
    xs = [e for _, pts in series for e, _ in pts]
    ys = [v for _, pts in series for _, v in pts]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = max((max(ys) - min(ys)) * 0.08, 0.01)
    y_lo, y_hi = min(ys) - pad, max(ys) + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    if mark is not None and x_lo < mark < x_hi:
        out.append(f'<rect x="{px(mark):.1f}" y="{top}" width="{px(x_hi) - px(mark):.1f}" height="{plot_h}" '
                   'fill="#fef3c7"><title>last fifth of the budget</title></rect>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for t in _nice_ticks(y_lo, y_hi, 4):
        if y_lo <= t <= y_hi:
            out.append(f'<text x="{left - 5}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#333">{t:g}</text>')
    for t in _nice_ticks(x_lo, x_hi, 5):
        if x_lo <= t <= x_hi:
            out.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#333">{t:g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">epoch</text>')
    for i, (seed, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{px(e):.1f},{py(v):.1f}" for e, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        out.extend(f'<circle cx="{px(e):.1f}" cy="{py(v):.1f}" r="2" fill="{color}"/>' for e, v in pts[-1:])
        out.append(f'<text x="{left + plot_w + 8}" y="{top + 12 + 14 * i}" fill="{color}">seed {esc(seed)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def cd_svg(cross: dict[str, Any]) -> str:
    """scikit-posthocs' critical-difference diagram of the mean ranks, with the Nemenyi post-hoc's p-values
    (rows joined by a bar are not significantly different) and Demsar's critical difference, as SVG text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd
    import scikit_posthocs as sp

    names = cross["names"]
    ranks = pd.Series(cross["mean_ranks"], index=names)
    sig = pd.DataFrame(cross["nemenyi"], index=names, columns=names)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.22 * len(names)))
        try:
            sp.critical_difference_diagram(ranks, sig, ax=ax, cd=cross["critical_difference"])
            ax.set_title(f"Mean rank of {short(cross['metric'])} over {len(cross['datasets'])} datasets "
                         f"(1 = best); CD = {cross['critical_difference']:.2f}", fontsize=9)
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
        finally:
            plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    return text.replace("<svg ", '<svg class="plot cd" role="img" aria-label="critical-difference diagram" ', 1)
