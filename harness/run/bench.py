"""``harness bench``: re-time stored trials, one at a time, with nothing else of the harness running.

A trial times its predictor right after fit (``harness/run/latency.py``), in the process that trained it and
while other trials of a Ray sweep may share the cores. ``bench`` loads each kept model back
(``trial_dir/model/``), the trial's test images, and times it again: torch at batch 1 and at a throughput batch,
and ONNX Runtime on the kept ``model.onnx`` (exported now when the trial kept none but the predictor exports),
with the CUDA provider on a GPU trial and the CPU provider otherwise. More repeats and a longer budget than the
in-trial measurement. Each bench is appended to ``trial_dir/bench.json`` and the latest is the result's
``bench`` field, which the leaderboard and the report use in place of the in-trial figures
(:func:`harness.contract.result.latency_of_record`), saying so.

Recorded with every figure: the torch and ONNX Runtime thread counts, the provider, the memory format timed,
``OMP_WAIT_POLICY``, the hardware, the harness version and commit, and the 1-minute load average before and
after (a load above the thread count means something outside the harness shared the cores: the figure is then
pessimistic, and the bench says so).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.contract.result import TrialResult
from harness.errors import HarnessError
from harness.run import models
from harness.run.latency import LatencySettings, measure
from harness.run.settings import RunSettings
from harness.store import RESULT_FILE, atomic_write_json, write_result

BENCH_FILE = "bench.json"  # trial_dir/bench.json: {"runs": [every bench record, oldest first]}


@dataclass(frozen=True)
class BenchSettings:
    """How ``harness bench`` times (the in-trial defaults are lighter: ``LatencySettings``)."""

    batch: int = 64
    warmup: int = 3
    repeats_b1: int = 50
    repeats_batch: int = 10
    budget_s: float = 3.0  # per batch size and runtime (at least 2 timed repeats)
    onnx: bool = True
    threads: int | None = None  # torch and ONNX Runtime threads (default: every core)
    device: str = "auto"  # auto: cuda when there is one (as a trial picks its device)

    def __post_init__(self):
        if self.batch < 1:
            raise HarnessError(f"--batch must be at least 1; found {self.batch}")
        if self.budget_s <= 0:
            raise HarnessError(f"--budget must be positive (seconds per batch size and runtime); found {self.budget_s}")
        if self.threads is not None and self.threads < 1:
            raise HarnessError(f"--threads must be at least 1; found {self.threads}")

    def latency(self) -> LatencySettings:
        return LatencySettings(batch=self.batch, warmup=self.warmup, max_repeats_b1=self.repeats_b1,
                               max_repeats_batch=self.repeats_batch, budget_s=self.budget_s, onnx=self.onnx)


def find_trials(paths: Iterable[Path | str]) -> list[Path]:
    """The trial folders under ``paths`` (each a trial folder or a runs folder at any depth) whose result is
    ``ok`` and that kept a model, sorted; a path with none is an error saying what it holds."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise HarnessError(f"{path} does not exist; give a trial folder (with result.json and model/) or a "
                               f"runs folder")
        folders = [path] if (path / RESULT_FILE).exists() else sorted(p.parent for p in path.rglob(RESULT_FILE))
        usable, skipped = [], []
        for folder in folders:
            try:
                result = TrialResult.read(folder / RESULT_FILE)
            except HarnessError as exc:
                skipped.append(f"{folder.name}: {exc}")
                continue
            if not result.ok:
                skipped.append(f"{folder.name}: status {result.status}")
            elif not (models.model_dir(folder) / models.MODULE_FILE).exists():
                skipped.append(f"{folder.name}: no kept model (run with --no-save-model?)")
            else:
                usable.append(folder)
        if not usable:
            detail = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "") if skipped else "no result.json"
            raise HarnessError(f"{path}: no finished trial with a kept model to bench ({detail})")
        found.extend(f for f in usable if f not in found)
    return found


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def bench_trial(folder: Path | str, bench: BenchSettings, settings: RunSettings) -> dict[str, Any]:
    """Re-time the kept model of the trial in ``folder`` on its test images; append the record to
    ``folder/bench.json``, set the result's ``bench`` field; returns the record."""
    import torch

    from harness.run.runner import cached_plugins, git_commit, hardware, load_data, pick_device

    folder = Path(folder)
    stored = models.stored_trial(folder)
    if not stored.result.ok:
        raise HarnessError(f"{folder}: the trial's status is {stored.result.status}; only ok trials have a model to bench")
    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    data = load_data(stored.trial, registry, settings)
    warnings = []
    if stored.result.data_fingerprint and data.fingerprint and data.fingerprint != stored.result.data_fingerprint:
        warnings.append(f"the test images loaded now (data fingerprint {data.fingerprint}) are not the ones the "
                        f"trial used ({stored.result.data_fingerprint}): check --data-dir")
    threads = bench.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = pick_device(bench.device)
    predictor = stored.predictor(device)
    load_before = load_average()
    t0 = time.perf_counter()
    onnx_file = models.onnx_path(folder)
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        record = measure(predictor, data.test.images, bench.latency(), workdir=Path(tmp),
                         onnx_file=onnx_file if onnx_file.exists() else None)
    load_after = load_average()
    busy = [x for x in (load_before, load_after) if x is not None and x > threads + 0.5]
    if busy:
        warnings.append(f"load average {max(busy):.1f} on {os.cpu_count()} cores while timing with {threads} "
                        f"thread(s): something else shared the cores, so these figures are pessimistic")
    record.update({
        "source": "bench",
        "benched_at": datetime.now(timezone.utc).isoformat(),
        "bench_seconds": round(time.perf_counter() - t0, 3),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "hardware": hardware(device),
        "harness_version": _version(),
        "git_commit": git_commit(),
        "settings": {"batch": bench.batch, "warmup": bench.warmup, "repeats_b1": bench.repeats_b1,
                     "repeats_batch": bench.repeats_batch, "budget_s": bench.budget_s},
        "warnings": warnings,
    })
    history = read_bench(folder)
    atomic_write_json(folder / BENCH_FILE, {"runs": [*history, record]})
    result = TrialResult.read(folder / RESULT_FILE)  # re-read: write back exactly what is there, plus bench
    result.bench = record
    write_result(folder, result)
    return record


def read_bench(folder: Path | str) -> list[dict[str, Any]]:
    """Every bench record of a trial folder, oldest first (empty when it was never benched)."""
    path = Path(folder) / BENCH_FILE
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text()).get("runs", [])
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise HarnessError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to start its history "
                           f"again") from None
    return [r for r in runs if isinstance(r, dict)]


def bench_all(folders: list[Path], bench: BenchSettings, settings: RunSettings,
              on_done: Callable[[Path, dict[str, Any] | None, str | None], None] | None = None) -> dict[Path, str]:
    """Bench ``folders`` one after another; returns the errors by folder (a trial that cannot be benched does not
    stop the others). ``on_done(folder, record, error)`` is called after each."""
    errors: dict[Path, str] = {}
    for folder in folders:
        try:
            record, error = bench_trial(folder, bench, settings), None
        except Exception as exc:  # a missing plugin or data: said, and the next trial is benched
            record, error = None, f"{type(exc).__name__}: {exc}"
            errors[folder] = error
        if on_done is not None:
            on_done(folder, record, error)
    return errors


def _version() -> str:
    from harness import __version__

    return __version__


def row(folder: Path, record: dict[str, Any]) -> str:
    """One line of the bench table: trial, torch b1 / bN, ONNX Runtime b1 / bN (ms per image), threads."""
    result = TrialResult.read(Path(folder) / RESULT_FILE)
    batch = record.get("batch", 64)

    def ms(key: str) -> str:
        value = record.get(key)
        return f"{value:9.3f}" if isinstance(value, (int, float)) else f"{'-':>9}"

    onnx = record.get("onnx_provider", "").replace("ExecutionProvider", "") or ("error" if record.get("onnx_error")
                                                                               else "-")
    label = f"{result.method} / {result.dataset} / seed {result.seed}"
    return (f"{label:<40} {ms('ms_per_image_b1')} {ms(f'ms_per_image_b{batch}')} {ms('onnx_ms_per_image_b1')} "
            f"{ms(f'onnx_ms_per_image_b{batch}')}  {record.get('threads')} thr, {record.get('torch_memory_format')}, "
            f"ort {onnx}")


def header(batch: int) -> str:
    return (f"{'trial':<40} {'torch b1':>9} {f'torch b{batch}':>9} {'ort b1':>9} {f'ort b{batch}':>9}  "
            f"(ms per image)")
