"""What the Markdown, HTML and terminal renderers share: escaping, number formats, the cells of a leaderboard
row, and the explanation of the statistics (written once, here)."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from harness.results.stats import CORRECTIONS, EXACT_MCNEMAR_MAX
from harness.results.summary import Summary

SHORT = {"macro_f1": "Macro-F1", "balanced_accuracy": "B-ACC", "mcc": "MCC", "accuracy": "Accuracy",
         "auroc": "AUROC", "ece": "ECE"}
SECONDARY_METRICS = ("macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc")  # mean ± CI after the headline


def esc(value: Any) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def md(value: Any) -> str:
    """A Markdown table cell: HTML-escaped (Markdown renders inline HTML), pipes and newlines neutralised."""
    return esc(value).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def prose(text: Any) -> str:
    """Sentences in Markdown (explanations, warnings): HTML-escaped (names inside them may come from plugins),
    quotes kept, newlines folded so a name cannot start a Markdown block."""
    return html.escape("" if text is None else str(text), quote=False).replace("\n", " ").replace("\r", " ")


def clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and line separators as ``\\u`` escapes."""
    text = json.dumps(clean(data), sort_keys=True, ensure_ascii=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                       ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "dataset"


def nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: Any, digits: int = 3) -> str:
    return "–" if nan(value) else f"{value:.{digits}f}"


def short(metric: str) -> str:
    return SHORT.get(metric, metric)


def mean_ci(row: dict, metric: str, digits: int = 3) -> str:
    mean, low, high = row.get(f"{metric}_mean"), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if nan(mean):
        return "–"
    if nan(low) or nan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def latency_cell(row: dict) -> str:
    """Mean ± CI of ms per image at batch 1, then where it comes from: `` (bench)``, `` (trial)`` or
    `` (bench+trial)`` (some seeds re-timed by ``harness bench``, some not)."""
    cell = mean_ci(row, "ms_per_image_b1", 2)
    return cell + (f" ({row['latency_source']})" if row.get("latency_source") and cell != "–" else "")


def latency_sources(source: str | None) -> str:
    """What the sources in a latency cell mean (``"bench+trial"`` -> both sentences), for a legend or a tooltip."""
    from harness.contract.result import LATENCY_SOURCES

    return "; ".join(f"{name}: {LATENCY_SOURCES[name]}" for name in (source or "").split("+") if name in LATENCY_SOURCES)


def latency_legend(board) -> str:
    """The sentence on the latency sources a board uses (empty when no row says where its latency comes from)."""
    if board.is_empty() or "latency_source" not in board.columns:
        return ""
    used = "+".join(sorted({part for v in board["latency_source"].to_list() if v for part in v.split("+")}))
    return f"ms/img b1: median ms per image at batch 1; its source in brackets ({latency_sources(used)})." if used else ""


def p(value: Any) -> str:
    if nan(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def headline_cell(row: dict, metric: str) -> str:
    """Mean ± CI of the headline metric, with ``†`` when a class is absent from the test split (it counts as 0)."""
    return mean_ci(row, metric) + (" †" if row.get("absent_classes") else "")


def diff_cell(row: dict) -> str:
    if row.get("is_top"):
        return "top"
    if nan(row.get("diff")):
        return f"no paired test of {short(row['headline'])}" if row.get("paired_seeds") else "not paired"
    return f"{row['diff']:+.3f} [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"


def p_cell(row: dict) -> str:
    """The primary test's adjusted p, starred when significant (``¹``: one paired seed, test images only)."""
    if row.get("is_top") or nan(row.get("p_adjusted")):
        return "–"
    one = "¹" if row.get("paired_seeds") == 1 else ""
    return p(row["p_adjusted"]) + one + (" *" if row.get("significant") else "")


def band_cell(row: dict) -> str:
    return "–" if row.get("band") is None else str(row["band"])


def seeds_cell(row: dict) -> str:
    text = str(row["seeds"])
    extra = [f"{row['failed']} failed" for _ in [0] if row.get("failed")]
    extra += [f"{row['unfinished']} unfinished" for _ in [0] if row.get("unfinished")]
    extra += [f"{row['unreadable']} unreadable" for _ in [0] if row.get("unreadable")]
    return text + (f" ({', '.join(extra)})" if extra else "")


def mcnemar_cell(row: dict) -> str:
    """Per-seed McNemar p-values (secondary): listed for up to 5 seeds, else how many are below 0.05."""
    values = row.get("mcnemar_p_values") or []
    if not values:
        return "–"
    if len(values) <= 5:
        return " / ".join(p(v) for v in values)
    return f"{sum(v < 0.05 for v in values)}/{len(values)} < 0.05"


def improving_cell(row: dict) -> str:
    """``↗ k/n``: k of the n trials with a learning curve were still improving at the end of their budget."""
    if row.get("still_improving"):
        return f"↗ {row['still_improving']}/{row['curves']}"
    return ""


def dataset_rows(board) -> Iterable[tuple[str, list[dict]]]:
    for (dataset,), group in board.group_by(["dataset"], maintain_order=True):
        yield dataset, list(group.iter_rows(named=True))


def tied_sentence(rows: list[dict]) -> str:
    """"These N are statistically tied with the top: ..." for band 1 (plain text)."""
    band1 = [r for r in rows if r.get("band") == 1]
    if len(band1) <= 1:
        return (f"No other row is statistically tied with the top ({_name(rows[0])})." if len(rows) > 1 else "")
    names = ", ".join(_name(r) for r in band1)
    return f"These {len(band1)} are statistically tied (band 1): {names}."


def _name(row: dict) -> str:
    return f"{row['method']} ({row['sampler']})" if row.get("sampler") not in (None, "-") else str(row["method"])


def explanation(summary: Summary) -> list[str]:
    """How to read the tables: one paragraph per item, plain text (the renderers escape it)."""
    s = summary.settings
    head = short(s.headline)
    correction = CORRECTIONS[s.correction]
    seed_level = ("by its small-sample law (the per-seed differences' spread over sqrt(S), times Student's t "
                  "on S - 1 degrees of freedom)" if s.seed_level == "t" else "by resampling the seeds")
    return [
        f"Mean ± half-width of the 95% Student's t confidence interval over seeds (a single seed shows the value "
        f"alone). Ranked by mean {head} within each dataset.",
        f"Δ {head} vs top [95% CI] and p: the primary test, a two-level paired bootstrap of the mean over seeds of "
        f"the {head} difference. The test images are resampled ({s.replicates} resamples, the same images for both "
        f"methods and every seed) and the training seeds are accounted for {seed_level}, so a gap is called real "
        "only when it holds across both another draw of test images and another training seed. "
        f"p is adjusted for the table's comparisons with {correction} ({s.correction}); "
        f"* = adjusted p < {s.alpha}, the only stars on the page. ¹ = one paired seed: the test covers the test "
        "images only (these two trained models differ on this test set), not the seeds.",
        f"Band: rows not significantly different from the top share band 1 (statistically tied with it); the best "
        f"row left starts band 2 with the rows not significantly different from it, and so on down (each band's "
        f"comparisons adjusted with {correction} among themselves).",
        "Secondary tests, shown for reference and never starred: p (seeds) is the paired t-test of the per-seed "
        f"{head} differences (2+ seeds; blind to the test images, which every seed shares); McNemar per seed is "
        f"the exact test of accuracy on each seed's discordant images (chi-square with continuity correction above "
        f"{EXACT_MCNEMAR_MAX}), one p per seed and never pooled over seeds (pooling would count each test image "
        "once per seed as if independent).",
        f"↗ k/n: k of the n trials with a learning curve were still improving: their best validation {head} in "
        f"the last fifth of the budget (of its last stage, for a method trained in stages) beat the best before it "
        f"by more than {s.improving_margin}. Such a row says "
        "more about the budget than about the method. † = a class has no test images; Macro-F1 counts it as 0 "
        "(see Warnings). ◆ = on the Pareto front of the headline metric against ms per image at batch 1.",
        *([legend] if (legend := latency_legend(summary.board)) else []),
    ]
