"""Where a leaderboard came from: commits, harness versions, hardware, data and the commands that reproduce
it, with private paths taken out. A published page carries no absolute path of the machine it was made on:
``--data-dir``, ``--runs-dir``, ``--out`` and ``--config`` values and the runs folder of ``harness report`` become
placeholders (``$DATA_DIR``, ``$RUNS_DIR``, ...) so the commands stay reproducible, and any other absolute path
(an image-folder root in a dataset's options, a path inside a warning) keeps only its last component."""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone
from typing import Any

from harness.contract.result import DEFAULT_DATASET, DEFAULT_SAMPLER, NO_SAMPLER
from harness.results.summary import Summary

PLACEHOLDERS = {"--data-dir": "$DATA_DIR", "--runs-dir": "$RUNS_DIR", "--out": "$OUT_DIR", "--config": "$CONFIG",
                "--ray-storage": "$RAY_STORAGE"}
_SEGMENT = r"[^\s'\",;:()\[\]<>/\\]+"
_ABSOLUTE = re.compile(  # /a/b..., ~/a..., C:\a...: at least two levels below / (so "</b>" or "1/2" are no paths)
    rf"(?<![\w.$<])(?:/{_SEGMENT}(?:/{_SEGMENT})*/|~/(?:{_SEGMENT}/)*|[A-Za-z]:\\(?:{_SEGMENT}\\)*)({_SEGMENT})/?")


def redact(text: str) -> str:
    """Absolute paths (``/home/me/data/derm``, ``~/x``, ``C:\\x``) shortened to ``<…>/last-component``."""
    return _ABSOLUTE.sub(lambda m: f"<…>/{m.group(1)}", str(text))


def redact_command(command: str) -> str:
    """A command line with private paths as placeholders: the values of path options, and the positional
    RUNS_DIR of ``harness report`` / ``harness leaderboard``; other absolute paths redacted."""
    try:
        words = shlex.split(command)
    except ValueError:
        return redact(command)
    out, i = [], 0
    while i < len(words):
        word = words[i]
        flag, eq, value = word.partition("=")
        if word in PLACEHOLDERS and i + 1 < len(words):
            out += [word, PLACEHOLDERS[word]]
            i += 2
            continue
        if eq and flag in PLACEHOLDERS:
            out.append(f"{flag}={PLACEHOLDERS[flag]}")
        elif i > 0 and words[i - 1] in ("report", "leaderboard") and not word.startswith("-"):
            out.append("$RUNS_DIR" if _is_path(word) else word)
        else:
            out.append(redact(word))
        i += 1
    return " ".join(w if w.startswith("$") or w.startswith("--") and "=$" in w else shlex.quote(w) for w in out)


SELECTORS = {"--methods": 0, "--datasets": 1, "--samplers": 2}


def could_have_run(command: str, shown: set[tuple[str, str, str]]) -> bool:
    """Whether a recorded ``harness run`` command's ``--methods`` / ``--datasets`` / ``--samplers`` select any
    shown (method, dataset, sampler): a report of part of an experiment lists the commands that made its rows,
    not every command run in that folder. A recorded command leaves out options at their defaults, so a missing
    ``--datasets`` / ``--samplers`` means ``synthetic`` / ``uniform`` (a missing ``--methods``, every method);
    a row of a method that takes no sampler (``-``) matches any ``--samplers``. A command it cannot read (not
    ``harness run``, a ``--config`` file that may set these, not a command line) is kept."""
    try:
        words = shlex.split(command)
    except ValueError:
        return True
    if "run" not in words or any(w == "--config" or w.startswith("--config=") for w in words):
        return True
    chosen: dict[int, set[str]] = {1: {DEFAULT_DATASET}, 2: {DEFAULT_SAMPLER}}
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if flag in SELECTORS:
            value = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            chosen[SELECTORS[flag]] = {v.strip() for v in value.split(",") if v.strip()}

    def selects(row: tuple[str, str, str], k: int, names: set[str]) -> bool:
        return row[k] in names or (k == 2 and row[k] in (NO_SAMPLER, "", None))

    return any(all(selects(row, k, names) for k, names in chosen.items()) for row in shown)


def _is_path(word: str) -> bool:
    return word.startswith(("/", "~")) or bool(re.match(r"[A-Za-z]:\\", word))


def provenance(summary: Summary, report_command: str | None = None) -> dict[str, Any]:
    results = summary.results
    hardware: list[dict] = []
    for r in results:
        if r.hardware and r.hardware not in hardware:
            hardware.append(r.hardware)
    shown = {(r.method, r.dataset, r.sampler) for r in results}
    names = {r.experiment for r in results}
    commands: list[str] = []
    for exp in summary.runs.experiments:
        if exp.get("name") and exp["name"] not in names:  # another experiment in the same folder
            continue
        for command in exp.get("commands") or [exp.get("command")]:
            if command and could_have_run(command, shown) and (shown_command := redact_command(command)) not in commands:
                commands.append(shown_command)
    data = sorted({data_text(r) for r in results})
    started = sorted(r.started for r in results if r.started)
    finished = sorted(r.finished for r in results if r.finished)
    return {
        "commits": sorted({str(r.git_commit or "unknown") for r in results}),
        "harness_versions": sorted({str(r.harness_version) for r in results if r.harness_version}),
        "profiles": sorted({str(r.profile) for r in results if r.profile}),
        "hardware": hardware,
        "data": data,
        "warnings": [redact(w) for w in summary.warnings],
        "commands": commands,
        "report_command": redact_command(report_command) if report_command else None,
        "trials": len(results),
        "started": started[0] if started else None,
        "finished": finished[-1] if finished else None,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def data_text(result) -> str:
    """What a trial trained and was tested on, with absolute paths in its options redacted."""
    options_map = result.get("dataset_options") or {}
    options = ", ".join(f"{k}={redact(v) if isinstance(v, str) else v}" for k, v in sorted(options_map.items())
                        if v is not None)
    counts = f"{result.get('n_train', '?')} training / {result.get('n_test', '?')} test images"
    split = options_map.get("split")
    protocol = f"; {redact(result.get('protocol'))}" if result.get("protocol") not in (None, "", split) else ""
    return f"{result.get('dataset', '?')} ({options}): {counts}{protocol}"


def hardware_text(hw: dict) -> str:
    parts = [hw.get("processor") or hw.get("machine"), f"{hw['cpu_count']} CPUs" if hw.get("cpu_count") else None,
             hw.get("gpu"), f"device {hw['device']}" if hw.get("device") else None,
             f"torch {hw['torch']}" if hw.get("torch") else None,
             f"Python {hw['python']}" if hw.get("python") else None, hw.get("platform")]
    return ", ".join(str(p) for p in parts if p)
