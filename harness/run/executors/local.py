"""The local executor: trials run in this process, one after another, with a progress line per trial
(and the method's per-epoch lines under it). Finished trials are skipped, so re-running resumes.

Each trial is first decided on (:mod:`harness.run.resume`: done, stale data, unreadable result, held by another
process ...) and the decision is said when it is not plain. Ctrl-C, or a runs folder that cannot be written,
stops the loop: the summary says how far it got (``stopped``, ``interrupted``, ``not_run``) and what finished
stays finished.
"""

from __future__ import annotations

import sys
import time

from harness.run.executors.base import RunSummary, progress_metrics
from harness.run.resume import BUSY, UNVERIFIED, ResumeCheck
from harness.run.runner import RunSettings, cached_plugins, run_trial
from harness.run.trial import Trial
from harness.store import StoreError, TrialSkipped


def run_local(trials: list[Trial], settings: RunSettings, *, out=None) -> RunSummary:
    out = out or sys.stdout
    manager, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    check = ResumeCheck(settings, registry)
    summary = RunSummary()
    total = len(trials)
    index = 0
    try:
        for index, trial in enumerate(trials, 1):  # noqa: B007 (index tells how far an interrupted loop got)
            decision = check.decide(trial)
            head = f"[{index}/{total}] {trial.label()}"
            if decision.state == BUSY:
                summary.busy[trial.key] = decision.reason
                print(f"{head}: {decision.reason}", file=out, flush=True)
                continue
            if not decision.runs:
                summary.skipped.append(trial.key)
                print(f"{head}: done already, skipped", file=out, flush=True)
                if decision.state == UNVERIFIED:
                    summary.unverified.append(trial.key)
                    print(f"    warning: {decision.reason}", file=out, flush=True)
                continue
            print(f"{head} ({trial.profile})", file=out, flush=True)
            if decision.reason:
                summary.rerun[trial.key] = decision.reason
                print(f"    runs again: {decision.reason}", file=out, flush=True)
            t0 = time.perf_counter()
            try:
                result = run_trial(trial, settings, registry=registry, manager=manager, decision=decision)
            except TrialSkipped as exc:
                summary.busy[trial.key] = str(exc)
                print(f"    skipped: {exc}", file=out, flush=True)
                continue
            elapsed = time.perf_counter() - t0
            if result.ok:
                summary.ok.append(trial.key)
                print(f"    ok in {elapsed:.1f}s  {progress_metrics(result, settings)}", file=out, flush=True)
            else:
                summary.failed.append(trial.key)
                summary.errors[trial.key] = result.error or ""
                print(f"    FAILED in {elapsed:.1f}s: {result.error}", file=out, flush=True)
    except KeyboardInterrupt:
        summary.interrupted = True
        summary.stopped = "interrupted (Ctrl-C)"
    except StoreError as exc:
        summary.stopped = str(exc)
    if summary.stopped:
        done = {*summary.ok, *summary.failed, *summary.skipped, *summary.busy}
        summary.not_run = [t.key for t in trials[max(index - 1, 0):] if t.key not in done]
    return summary
