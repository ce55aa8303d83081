"""The local executor: trials run in this process, one after another, with a head line per trial, the method's
per-epoch lines under it and, after it, the sweep's progress (trials done / failed / left, elapsed time, an
estimate of the time left: :mod:`harness.run.progress`). Finished trials are skipped, so re-running resumes.

Each trial is first decided on (:mod:`harness.run.resume`: done, stale data, unreadable result, held by another
process ...) and the decision is said when it is not plain. Ctrl-C, or a runs folder that cannot be written,
stops the loop: the summary says how far it got (``stopped``, ``interrupted``, ``not_run``) and what finished
stays finished.
"""

from __future__ import annotations

import sys
import time

from harness.run.executors.base import RunSummary, progress_metrics
from harness.run.progress import SweepProgress, epochs_of
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
    progress = SweepProgress(total, out=out, shown=settings.shown_metrics)
    say = progress.say
    index = 0
    try:
        for index, trial in enumerate(trials, 1):  # noqa: B007 (index tells how far an interrupted loop got)
            decision = check.decide(trial)
            head = f"[{index}/{total}] {trial.label()}"
            if decision.state == BUSY:
                summary.busy[trial.key] = decision.reason
                progress.skipped()
                say(f"{head}: {decision.reason}")
                continue
            if not decision.runs:
                summary.skipped.append(trial.key)
                progress.skipped()
                say(f"{head}: done already, skipped")
                if decision.state == UNVERIFIED:
                    summary.unverified.append(trial.key)
                    say(f"    warning: {decision.reason}")
                continue
            say(f"{head} ({trial.profile})")
            if decision.reason:
                summary.rerun[trial.key] = decision.reason
                say(f"    runs again: {decision.reason}")
            t0 = time.perf_counter()
            try:
                result = run_trial(trial, settings, registry=registry, manager=manager, decision=decision,
                                   reporter=progress.epoch_reporter(epochs_of(trial.config)))
            except TrialSkipped as exc:
                summary.busy[trial.key] = str(exc)
                progress.skipped()
                say(f"    skipped: {exc}")
                continue
            elapsed = time.perf_counter() - t0
            if result.ok:
                summary.ok.append(trial.key)
                say(f"    ok in {elapsed:.1f}s  {progress_metrics(result, settings)}")
                progress.finished(True, elapsed)
            else:
                summary.failed.append(trial.key)
                summary.errors[trial.key] = result.error or ""
                say(f"    FAILED in {elapsed:.1f}s: {result.error}")
                progress.finished(False, elapsed)
    except KeyboardInterrupt:
        progress.end_trial()
        summary.interrupted = True
        summary.stopped = "interrupted (Ctrl-C)"
    except StoreError as exc:
        progress.end_trial()
        summary.stopped = str(exc)
    if summary.stopped:
        done = {*summary.ok, *summary.failed, *summary.skipped, *summary.busy}
        summary.not_run = [t.key for t in trials[max(index - 1, 0):] if t.key not in done]
    return summary
