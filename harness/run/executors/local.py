"""The local executor: trials run in this process, one after another, with a progress line per trial
(and the method's per-epoch lines under it). Finished trials are skipped, so re-running resumes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.run.executors.base import RunSummary, progress_metrics
from harness.run.runner import RunSettings, cached_plugins, run_trial
from harness.run.trial import Trial
from harness.store import ResultStore


def run_local(trials: list[Trial], settings: RunSettings, *, out=None) -> RunSummary:
    out = out or sys.stdout
    manager, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    summary = RunSummary()
    total = len(trials)
    for index, trial in enumerate(trials, 1):
        store = ResultStore(Path(settings.runs_dir) / trial.experiment)
        if store.is_done(trial.key):
            summary.skipped.append(trial.key)
            print(f"[{index}/{total}] {trial.label()}: done already, skipped", file=out, flush=True)
            continue
        print(f"[{index}/{total}] {trial.label()} ({trial.profile})", file=out, flush=True)
        t0 = time.perf_counter()
        result = run_trial(trial, settings, registry=registry, manager=manager)
        elapsed = time.perf_counter() - t0
        if result.ok:
            summary.ok.append(trial.key)
            print(f"    ok in {elapsed:.1f}s  {progress_metrics(result, settings)}", file=out, flush=True)
        else:
            summary.failed.append(trial.key)
            summary.errors[trial.key] = result.error or ""
            print(f"    FAILED in {elapsed:.1f}s: {result.error}", file=out, flush=True)
    return summary
