"""Resuming: which trials of a command are done, which run, and why. Used by both executors and ``--dry-run``.

A stored ``ok`` result is reused only when it is tied to the data the trial would load now: its
``data_fingerprint`` (a hash of the prepared arrays, :attr:`harness.contract.specs.DataSplits.fingerprint`)
must equal the fingerprint of the data this command sees. The data of each distinct (dataset, options, data
seed) is loaded once per command to learn its fingerprint (the prepared arrays are memory-mapped from the
dataset cache, so this hashes nothing), and only for trials that have an ``ok`` result.

What a trial's folder may hold, and what happens (:class:`Decision`):

=============  =================================================================  ===========================
state          stored result                                                      the trial
=============  =================================================================  ===========================
``todo``       none                                                               runs
``retry``      ``failed`` or ``interrupted``                                      runs (the record is replaced)
``done``       ``ok``, same fingerprint as the data now                           skipped
``stale``      ``ok``, another fingerprint (another ``--data-dir``, fixed         runs; the old result is
               labels), or no fingerprint and other split sizes or classes        moved to ``superseded/``
``unverified`` ``ok`` without a fingerprint (written before fingerprints), same   skipped, with a warning on
               sizes and classes; or the data cannot be loaded or fingerprinted   every command
               now
``incomplete`` ``ok`` but without a required headline metric (written before a    runs; the old result is
               trial without every headline metric stopped being ``ok``)          moved to ``superseded/``
``unreadable`` a ``result.json`` that is not JSON or not a trial result           runs; the file is moved to
                                                                                  ``superseded/``
``busy``       another process holds the trial's lock                             skipped here, said so
=============  =================================================================  ===========================

A result kept as ``unverified`` is never trusted silently: every command that meets it says which trial,
why it cannot be checked, and how to re-run it (move its folder out of the runs folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from harness.contract.result import TrialResult
from harness.registry import Registry
from harness.run.settings import RunSettings
from harness.run.trial import Trial, load_data
from harness.store import ResultStore

TODO, RETRY, DONE, STALE, INCOMPLETE, UNVERIFIED, UNREADABLE, BUSY = (
    "todo", "retry", "done", "stale", "incomplete", "unverified", "unreadable", "busy")
RUNS = (TODO, RETRY, STALE, INCOMPLETE, UNREADABLE)  # the states in which the trial runs
REPLACES_OK = (STALE, INCOMPLETE)  # the states in which an ok result is moved aside for the trial to run again


@dataclass(frozen=True)
class Decision:
    """What to do with one trial, and why (``reason`` is empty for plain ``todo`` and ``done``)."""

    key: str
    state: str
    reason: str = ""
    stored_fingerprint: str | None = None  # of the ok result found (stale / done / unverified)
    current_fingerprint: str | None = None  # of the data this command sees (None: not loaded or none given)

    @property
    def runs(self) -> bool:
        return self.state in RUNS


@dataclass(frozen=True)
class DataFacts:
    """What the data a trial would load now is: its fingerprint and split sizes (or why it cannot be loaded)."""

    fingerprint: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    classes: tuple[str, ...] = ()
    error: str | None = None


class ResumeCheck:
    """Decides, trial by trial, what a command does (:meth:`decide`); loads each distinct (dataset, options,
    data seed) at most once, and only for trials with an ``ok`` result."""

    def __init__(self, settings: RunSettings, registry: Registry,
                 load: Callable[[Trial], object] | None = None):
        self.settings = settings
        self.registry = registry
        self._load = load or self._load_data
        self._facts: dict[str, DataFacts] = {}
        self.loads = 0  # how many data loads the checks cost (tests hold it to one per distinct data)

    def store(self, trial: Trial) -> ResultStore:
        return ResultStore.of(self.settings.runs_dir, trial.experiment)

    def _load_data(self, trial: Trial):
        return load_data(trial, self.registry, self.settings)

    def facts(self, trial: Trial) -> DataFacts:
        """The data ``trial`` would load now (cached per dataset, options and data seed)."""
        key = json.dumps([trial.dataset, trial.options, trial.seed], sort_keys=True, default=str)
        if key not in self._facts:
            self.loads += 1
            try:
                data = self._load(trial)
            except Exception as exc:  # the trial itself would fail on it (and say so when it runs)
                self._facts[key] = DataFacts(error=f"{type(exc).__name__}: {exc}")
            else:
                self._facts[key] = DataFacts(fingerprint=data.fingerprint, n_train=len(data.train),
                                             n_test=len(data.test), classes=tuple(data.classes))
        return self._facts[key]

    def decide(self, trial: Trial) -> Decision:
        store = self.store(trial)
        holder = store.holder(trial.key)
        if holder is not None:
            return Decision(trial.key, BUSY, f"in progress in another process ({holder}); not run here")
        result, unreadable = store.read(trial.key)
        if unreadable is not None:
            return Decision(trial.key, UNREADABLE, f"its result cannot be read ({unreadable}); it runs again and "
                                                   f"the unreadable file is kept in "
                                                   f"{store.trial_dir(trial.key) / 'superseded'}")
        if result is None:
            return Decision(trial.key, TODO)
        if not result.ok:
            return Decision(trial.key, RETRY)
        missing = [m for m in self.settings.required_metrics if result.metrics.get(m) is None]
        if missing:
            return Decision(trial.key, INCOMPLETE, f"its result says ok but has no {', '.join(missing)} (a trial "
                                                   f"without every headline metric is not ok); it runs again and the "
                                                   f"old result is kept in "
                                                   f"{store.trial_dir(trial.key) / 'superseded'}",
                            result.data_fingerprint)
        return self._check_data(trial, result)

    def _check_data(self, trial: Trial, result: TrialResult) -> Decision:
        old = result.data_fingerprint
        now = self.facts(trial)
        folder = self.store(trial).trial_dir(trial.key)
        rerun = f"to re-run it, move {folder} out of the runs folder"
        if now.error is not None:
            return Decision(trial.key, UNVERIFIED, f"kept without a data check: the data cannot be loaded now "
                                                   f"({now.error})", old)
        if now.fingerprint is None:
            return Decision(trial.key, UNVERIFIED, f"kept without a data check: dataset {trial.dataset!r} gives no "
                                                   f"data fingerprint; {rerun}", old)
        if old is not None and old == now.fingerprint:
            return Decision(trial.key, DONE, "", old, now.fingerprint)
        if old is not None:
            return Decision(trial.key, STALE, f"the data changed since its result (data fingerprint {old} then, "
                                              f"{now.fingerprint} now); it runs again and the old result is kept "
                                              f"in {folder / 'superseded'}", old, now.fingerprint)
        then = (result.n_train, result.n_test, tuple(result.classes))
        seen = (now.n_train, now.n_test, now.classes)
        if all(v not in (None, ()) for v in then) and then != seen:
            return Decision(trial.key, STALE, f"its result has no data fingerprint and its data differs from the "
                                              f"data now ({_sizes(*then)} then, {_sizes(*seen)} now); it runs again "
                                              f"and the old result is kept in {folder / 'superseded'}",
                            None, now.fingerprint)
        return Decision(trial.key, UNVERIFIED, f"kept without a data check: its result was written without a data "
                                               f"fingerprint (before fingerprints were recorded), so a change of "
                                               f"data since cannot be seen (the data now: {now.fingerprint}); "
                                               f"{rerun}", None, now.fingerprint)


def _sizes(n_train, n_test, classes) -> str:
    return f"{n_train} train / {n_test} test images, {len(classes)} classes"


def for_trials(trials: list[Trial], settings: RunSettings, registry: Registry) -> list[tuple[Trial, Decision]]:
    """Every trial with its decision (what ``--dry-run`` prints)."""
    check = ResumeCheck(settings, registry)
    return [(trial, check.decide(trial)) for trial in trials]

