"""The one Markdown renderer: the report's ``leaderboard.md`` and the runs folder's ``leaderboard.md`` are both
this (every cell escaped), and the terminal table of ``harness run`` / ``harness leaderboard``."""

from __future__ import annotations

from harness.report.format import (
    SECONDARY_METRICS,
    band_cell,
    dataset_rows,
    diff_cell,
    explanation,
    headline_cell,
    improving_cell,
    latency_cell,
    mcnemar_cell,
    md,
    mean_ci,
    p,
    p_cell,
    prose,
    seeds_cell,
    short,
    tied_sentence,
)
from harness.report.provenance import hardware_text
from harness.results.summary import Summary


def header(summary: Summary, board) -> tuple[list[str], list[str]]:
    head = short(summary.settings.headline)
    metrics = [m for m in SECONDARY_METRICS if m != summary.settings.headline and f"{m}_mean" in board.columns]
    columns = ["rank", "band", "method", "sampler", "seeds", head, f"Δ {head} vs top [95% CI]", "p (adjusted)",
               "p (seeds)", *(short(m) for m in metrics), "McNemar p per seed", "ms/img b1", "Pareto", "curves"]
    return columns, metrics


def cells(summary: Summary, row: dict, metrics: list[str]) -> list[str]:
    head = summary.settings.headline
    return [str(row["rank"]), band_cell(row), md(row["method"]), md(row["sampler"]), seeds_cell(row),
            headline_cell(row, head), diff_cell(row), p_cell(row), p(row.get("seed_p_value")),
            *(mean_ci(row, m) for m in metrics), mcnemar_cell(row), latency_cell(row),
            "◆" if row.get("pareto") else "", improving_cell(row)]


def to_markdown(summary: Summary, prov: dict, title: str, svg_files: dict[str, str] | None = None) -> str:
    board = summary.board
    svg_files = svg_files or {}
    lines = [f"# {md(title)}", ""]
    if board.is_empty():
        lines += ["_No finished trials._", ""]
        if prov.get("warnings"):
            lines += ["## Warnings", "", *(f"- {prose(w)}" for w in prov["warnings"]), ""]
        return "\n".join(lines)
    columns, metrics = header(summary, board)
    for dataset, rows in dataset_rows(board):
        top = rows[0]
        lines += [f"## {md(dataset)}", "",
                  f"Paired tests against the top method, **{md(top['method'])}** ({md(top['sampler'])}). "
                  + md(tied_sentence(rows)), ""]
        lines += ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] * len(columns)) + "|"]
        lines += ["| " + " | ".join(cells(summary, row, metrics)) + " |" for row in rows]
        lines.append("")
        if dataset in svg_files:
            lines += [f"![{md(short(summary.settings.headline))} against latency on {md(dataset)}]"
                      f"({svg_files[dataset]})", ""]
    if summary.cross is not None:
        lines += cross_markdown(summary.cross, svg_files.get("cd"))
    lines += ["## How to read this", "", *(prose(text) + "\n" for text in explanation(summary))]
    if prov.get("warnings"):
        lines += ["## Warnings", "", *(f"- {prose(w)}" for w in prov["warnings"]), ""]
    lines += ["## Reproduce", ""]
    lines.append("- Commit: " + ", ".join(f"`{md(c)}`" for c in prov["commits"]))
    lines.append("- Harness: " + ", ".join(md(v) for v in prov["harness_versions"]) + "; profile: "
                 + ", ".join(md(x) for x in prov["profiles"]) + f"; {prov['trials']} trials")
    lines += [f"- Data: {md(text)}" for text in prov.get("data", [])]
    lines += [f"- Hardware: {md(hardware_text(hw))}" for hw in prov["hardware"]]
    commands = [*prov["commands"], *([prov["report_command"]] if prov.get("report_command") else [])]
    if commands:
        lines += ["", "```", *(c.replace("```", "'''") for c in commands), "```"]
    else:
        lines += ["- Command: not recorded (runs made before `harness run` wrote experiment.json)"]
    return "\n".join(lines) + "\n"


def cross_markdown(cross: dict, cd_file: str | None) -> list[str]:
    lines = ["## Across datasets", ""]
    datasets = ", ".join(md(d) for d in cross["datasets"])
    if "reason" in cross:
        return [*lines, f"Datasets: {datasets}. No Friedman test: {prose(cross['reason'])}.", ""]
    lines += [f"Mean rank of {md(short(cross['metric']))} (1 = best) over {datasets}, for the rows run on every "
              f"dataset. Friedman's test: chi-square {cross['statistic']:.2f}, p = {p(cross['p_value'])}; Nemenyi "
              f"post-hoc critical difference {cross['critical_difference']:.2f} mean ranks (alpha 0.05).", "",
              "| mean rank | method |", "|---|---|"]
    for rank, name in sorted(zip(cross["mean_ranks"], cross["names"])):
        lines.append(f"| {rank:.2f} | {md(name)} |")
    lines.append("")
    if cross.get("left_out"):
        lines += ["Not on every dataset (left out): " + ", ".join(md(f"{m} ({s})") for m, s in cross["left_out"]), ""]
    if cd_file:
        lines += [f"![Critical-difference diagram]({cd_file})", ""]
    return lines


def to_text(summary: Summary) -> str:
    """A compact plain-text table for the terminal."""
    board = summary.board
    if board.is_empty():
        return "No finished trials.\n"
    head = summary.settings.headline
    cols = [("rank", 4), ("band", 4), ("method", 16), ("sampler", 11), ("seeds", 5)]
    metrics = [head, *(m for m in ("balanced_accuracy", "mcc", "accuracy", "auroc") if m != head
                       and f"{m}_mean" in board.columns)]
    out = []
    for dataset, rows in dataset_rows(board):
        out.append(f"== {dataset} ==")
        line = "".join(f"{name:<{w + 1}}" for name, w in cols)
        out.append(line + "".join(f"{short(m):>16}" for m in metrics) + f"{'p (adj.)':>12}{'ms/img b1':>17}")
        for row in rows:
            values = {"rank": row["rank"], "band": band_cell(row), "method": row["method"], "sampler": row["sampler"],
                      "seeds": row["seeds"]}
            line = "".join(f"{str(values[name])[:w]:<{w + 1}}" for name, w in cols)
            line += "".join(f"{mean_ci(row, m):>16}" for m in metrics)
            line += f"{p_cell(row):>12}{latency_cell(row):>17}"
            flag = improving_cell(row)
            out.append(line + (f"  {flag} still improving" if flag else ""))
        out.append(tied_sentence(rows))
        out.append("")
    return "\n".join(out)
