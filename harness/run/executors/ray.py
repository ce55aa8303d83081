"""The Ray executor: each trial becomes one Ray Tune trial whose trainable calls the same
:func:`harness.run.runner.run_trial` the local executor calls, so results land in the same result store
(``RUNS_DIR/<experiment>/<key>/``) and the leaderboard cannot tell which executor ran them.

- Trials whose result already exists (status ``ok``) are not submitted, so running the same command
  again after an interruption re-runs only what is missing.
- Each trial asks Ray for ``cpus_per_trial`` CPUs (and ``gpus_per_trial`` GPUs, fractions allowed) and
  sets torch's thread count from its CPU share, so parallel trials do not oversubscribe the cores.
- Per-epoch numbers a method reports (``ctx.report(epoch=..., val_macro_f1=...)``) go to
  ``ray.tune.report``, so Ray's progress table and schedulers see them.
- A failing trial is recorded as failed by ``run_trial`` and the sweep goes on.
- As each trial ends the driver prints the sweep's progress (trials done / failed / left, elapsed time, an
  estimate of the time left for the trials running at once: :mod:`harness.run.progress`), through a Ray Tune
  callback; Ray's own table shows the per-epoch numbers.

Ray is imported only here (and in :mod:`harness.run.tuning`), and only when something is submitted.
On a cluster, ``RUNS_DIR`` (and the data directory) must be paths every node sees (a shared filesystem):
the workers write the results there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.contract.result import STATUS_FAILED, STATUS_INTERRUPTED
from harness.errors import HarnessError
from harness.run.executors.base import RunSummary, progress_metrics
from harness.run.progress import SweepProgress
from harness.run.settings import ENV_CACHE_DIR, RunSettings
from harness.run.trial import Trial
from harness.store import ResultStore

CONNECT_TIMEOUT_S = 10.0
FORWARDED_ENV = ("HARNESS_PLUGINS", "HARNESS_BLOCK_PLUGINS")


@dataclass(frozen=True)
class RayOptions:
    """How trials are placed on Ray (the ``--cpus-per-trial`` ... options of ``harness run``)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None  # None: start a local Ray instance (or reuse the one already initialised)
    storage: Path | None = None  # Ray's own experiment state (default: Ray's, ~/ray_results)
    verbose: int = 1

    def __post_init__(self):
        if self.cpus_per_trial <= 0:
            raise HarnessError(f"--cpus-per-trial must be positive; found {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise HarnessError(f"--gpus-per-trial must be 0 or more; found {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise HarnessError(f"--max-concurrent must be at least 1; found {self.max_concurrent}")

    @property
    def resources(self) -> dict[str, float]:
        out = {"cpu": float(self.cpus_per_trial)}
        if self.gpus_per_trial:
            out["gpu"] = float(self.gpus_per_trial)
        return out

    @property
    def threads(self) -> int:
        """torch threads for a trial with this CPU share (at least one)."""
        return max(1, int(self.cpus_per_trial))


# ------------------------------------------------------------------------------------ connecting


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (within ``timeout`` seconds) with a clear message when ``address`` cannot be reached.

    ``None``, ``"local"`` and ``"auto"`` are left to Ray. ``HOST:PORT`` (the GCS address printed by
    ``ray start --head``) and ``ray://HOST[:PORT]`` (Ray Client, default port 10001) are checked with a
    plain TCP connect before ``ray.init``, which would otherwise retry for minutes.
    """
    if address is None or address in ("local", "auto"):
        return
    text = address
    default_port = None
    if text.startswith("ray://"):
        text, default_port = text[len("ray://"):], 10001
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port) if default_port else ""
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise HarnessError(
            f"--address {address!r}: expected HOST:PORT (the address `ray start --head` prints, e.g. "
            f"10.0.0.1:6379), ray://HOST:PORT, or 'auto'"
        ) from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise HarnessError(
            f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc} (gave up after at most "
            f"{timeout:.0f}s). Start the head node with `ray start --head --port=6379` and pass "
            f"--address HEAD_IP:6379, or leave --address out to run on a local Ray instance."
        ) from None


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Initialise Ray (joining ``address`` if given); returns True if this call started the connection
    (the caller then shuts it down), False if Ray was already initialised in this process."""
    check_address(address)
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise HarnessError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return True


# ---------------------------------------------------------------------------------- the workers


def worker_sys_paths(modules: Iterable[str]) -> list[str]:
    """The ``sys.path`` entries the driver imports these plugin modules from (so Ray workers, whose
    working directory Ray changes, can import a plugin under development, e.g. ``tests.failing_plugin``)."""
    paths: list[str] = []
    for module in modules:
        top = module.split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if spec.submodule_search_locations:  # a package: its parent folder
            roots = [Path(p).parent for p in spec.submodule_search_locations]
        elif spec.origin:
            roots = [Path(spec.origin).parent]
        else:
            roots = []
        for root in roots:
            if root.is_dir() and str(root) not in paths:
                paths.append(str(root))
    cwd = os.getcwd()
    if cwd not in paths:
        paths.append(cwd)
    return paths


def prepare_worker(sys_paths: Iterable[str], env: dict[str, str]) -> None:
    """Run first inside every trainable: the driver's plugin paths and plugin environment."""
    for path in reversed(list(sys_paths)):
        if path not in sys.path:
            sys.path.insert(0, path)
    for key in FORWARDED_ENV:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    sys.unraisablehook = _quiet_stop_hook(sys.unraisablehook)


def _quiet_stop_hook(default):
    """An unraisable-exception hook that drops ``KeyboardInterrupt``: Ray stops a trial on Ctrl-C by interrupting
    its worker, which can land inside a finaliser (a weakref callback) and print an "Exception ignored" traceback
    that Ray forwards to the driver. The stop is expected, and the driver says what it stopped."""
    if getattr(default, "harness_quiet_stop", False):
        return default

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            return
        default(unraisable)

    hook.harness_quiet_stop = True
    return hook


def absolute_settings(settings: RunSettings, threads: int | None = None, device: str | None = None) -> RunSettings:
    """``settings`` with every path absolute and the environment's data/cache dirs made explicit: Ray
    runs trials in another working directory (and, on a cluster, on another machine)."""
    data_dir = settings.resolved_data_dir()
    cache_dir = settings.cache_dir if settings.cache_dir is not None else os.environ.get(ENV_CACHE_DIR)
    return dataclasses.replace(
        settings,
        runs_dir=Path(settings.runs_dir).expanduser().resolve(),
        data_dir=data_dir.resolve() if data_dir is not None else None,
        cache_dir=Path(cache_dir).expanduser().resolve() if cache_dir else None,
        threads=threads if threads is not None else settings.threads,
        device=device if device is not None else settings.device,
    )


def numeric(metrics: dict[str, Any]) -> dict[str, Any]:
    """The reportable part of a ``ctx.report`` call (numbers, booleans and short strings)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str)) or v is None}


def _trainable(config: dict, *, trials: dict, decisions: dict, settings: RunSettings, sys_paths: list[str],
               env: dict[str, str]) -> None:
    prepare_worker(sys_paths, env)
    from ray import tune

    from harness.run.runner import run_trial
    from harness.store import StoreError, TrialSkipped

    key = config["trial"]
    trial = Trial.from_dict(trials[key])

    def reporter(**metrics: Any) -> None:
        tune.report(numeric(metrics))

    try:
        result = run_trial(trial, settings, reporter=reporter, decision=decisions.get(key))
    except TrialSkipped as exc:  # another process holds the trial, or finished it meanwhile
        tune.report({"trial_status": SKIPPED, "trial_key": key, "reason": str(exc)})
        return
    except StoreError as exc:  # the runs folder cannot be written: the driver stops the command
        tune.report({"trial_status": STORE_ERROR, "trial_key": key, "reason": str(exc)})
        return
    final = {"trial_status": result.status, "trial_key": trial.key}
    for name, value in result.metrics.items():
        if value is not None:
            final[f"test_{name}"] = value
    tune.report(final)


SKIPPED, STORE_ERROR = "skipped", "store-error"  # a trainable's final trial_status besides a result's status


# -------------------------------------------------------------------------------------- running


def plugin_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


@dataclass(frozen=True)
class Outcome:
    """What Ray says about one submitted trial: its trainable's final ``trial_status`` (None: it never reported
    one: stopped or never started), the reason of a skip or store error, Ray's error (a worker that died) and
    Ray's folder for the trial (its logs)."""

    status: str | None = None
    reason: str = ""
    error: str | None = None
    ray_dir: str | None = None
    node: str | None = None


def run_ray(trials: list[Trial], settings: RunSettings, options: RayOptions | None = None, *,
            out=None) -> RunSummary:
    """Run ``trials`` as Ray Tune trials; skip those already done (:mod:`harness.run.resume`); return what
    happened. Ctrl-C (or a worker that cannot write the runs folder) ends with ``summary.stopped`` set; a
    trial whose worker died without writing its result gets a ``failed`` result saying so."""
    from harness.run.resume import BUSY, UNVERIFIED, ResumeCheck
    from harness.run.runner import cached_plugins, record_unfinished

    out = out or sys.stdout
    options = options or RayOptions()
    check_address(options.address)  # a wrong address is an error even when nothing is left to run
    summary = RunSummary()
    command_started = datetime.now(timezone.utc).isoformat()  # an attempt that started before is not this command's
    runs_dir = Path(settings.runs_dir)
    if options.storage is not None:
        storage = Path(options.storage).expanduser().resolve()
        for root in {(runs_dir / t.experiment).expanduser().resolve() for t in trials}:
            if storage == root or root in storage.parents:
                raise HarnessError(f"--ray-storage {options.storage} is inside the result folder {root}; Ray's own "
                                   f"result files would mix with the harness's. Put it elsewhere.")
    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    check = ResumeCheck(settings, registry)
    pending: list[Trial] = []
    decisions: dict[str, Any] = {}
    before: dict[str, str | None] = {}  # the stored result's start time at submission (None: none)
    try:
        for trial in trials:
            if trial.key in decisions:
                continue
            decision = decisions[trial.key] = check.decide(trial)
            if decision.state == BUSY:
                summary.busy[trial.key] = decision.reason
                print(f"  skipped {trial.label()}: {decision.reason}", file=out, flush=True)
            elif not decision.runs:
                summary.skipped.append(trial.key)
                if decision.state == UNVERIFIED:
                    summary.unverified.append(trial.key)
                    print(f"  warning: {trial.label()}: {decision.reason}", file=out, flush=True)
            else:
                pending.append(trial)
                stored, _ = check.store(trial).read(trial.key)
                before[trial.key] = stored.started if stored is not None else None
                if decision.reason:
                    summary.rerun[trial.key] = decision.reason
                    print(f"  runs again: {trial.label()}: {decision.reason}", file=out, flush=True)
    except KeyboardInterrupt:
        summary.interrupted, summary.stopped = True, "interrupted (Ctrl-C) while checking stored results"
        summary.not_run = [t.key for t in trials if t.key not in {*summary.skipped, *summary.busy}]
        return summary
    print(f"ray: {len(summary.skipped)} trial(s) done already, {len(pending)} to submit", file=out, flush=True)
    if not pending:
        return summary  # nothing to do: Ray is not even imported

    device = settings.device
    if device == "auto" and not options.gpus_per_trial:
        device = "cpu"  # a trial without a GPU share must not grab one
    worker_settings = absolute_settings(settings, threads=settings.threads or options.threads, device=device)
    started_here = connect(options.address)
    outcomes: dict[str, Outcome] = {}
    progress = SweepProgress(len(decisions), concurrency=_concurrency(options, len(pending)), out=out)
    progress.skipped(len(decisions) - len(pending))
    try:
        outcomes = _fit(pending, {t.key: decisions[t.key] for t in pending}, worker_settings, options, out,
                        progress=progress)
    except KeyboardInterrupt:  # a second Ctrl-C: Ray Tune's graceful stop was cut short
        summary.interrupted = True
    finally:
        if started_here:
            import ray

            ray.shutdown()
    for trial in pending:
        outcome = outcomes.get(trial.key, Outcome())
        if outcome.status == SKIPPED:
            summary.busy[trial.key] = outcome.reason
            print(f"  skipped {trial.label()}: {outcome.reason}", file=out)
            continue
        if outcome.status == STORE_ERROR:
            summary.stopped = outcome.reason
        result, _ = ResultStore.of(worker_settings.runs_dir, trial.experiment).read(trial.key)
        fresh = result is not None and result.started != before[trial.key]  # written by this command's attempt
        if fresh and result.ok:
            summary.ok.append(trial.key)
            print(f"  ok      {trial.label()}  in {result.total_seconds or 0:.1f}s  "
                  f"{progress_metrics(result, settings)}", file=out)
            continue
        if fresh and result.status != STATUS_INTERRUPTED:
            summary.failed.append(trial.key)
            summary.errors[trial.key] = result.error or ""
            print(f"  FAILED  {trial.label()}: {result.error}", file=out)
            continue
        if outcome.error is not None and not fresh:  # the worker died before run_trial could record anything
            error = (f"the Ray worker running this trial ended before it recorded a result: {outcome.error}"
                     + (f" (Ray's logs for it: {outcome.ray_dir})" if outcome.ray_dir else ""))
            details = {k: v for k, v in (("ray_trial_dir", outcome.ray_dir), ("node", outcome.node)) if v}
            record_unfinished(trial, worker_settings, status=STATUS_FAILED, error=error, details=details)
            summary.failed.append(trial.key)
            summary.errors[trial.key] = error
            print(f"  FAILED  {trial.label()}: {error}", file=out)
            continue
        # never reported an end: stopped by Ctrl-C (recorded as interrupted if it had started) or never started
        # (nothing recorded: it is listed as not run)
        summary.interrupted = True
        if not fresh:
            record_unfinished(trial, worker_settings, status=STATUS_INTERRUPTED, started_since=command_started,
                              error="stopped (Ctrl-C) before it finished; run the same command again to resume")
        summary.not_run.append(trial.key)
    if summary.interrupted:
        summary.stopped = "interrupted (Ctrl-C)"
    out.flush()
    return summary


def _concurrency(options: RayOptions, pending: int) -> int:
    """How many trials run at once: ``--max-concurrent``, else what the cluster's CPUs (and GPUs) hold."""
    import ray

    limits = [pending]
    if options.max_concurrent:
        limits.append(options.max_concurrent)
    try:
        resources = ray.cluster_resources()
    except Exception:  # not connected (tests that stub Ray): the other limits
        resources = {}
    if resources.get("CPU"):
        limits.append(int(resources["CPU"] // options.cpus_per_trial))
    if options.gpus_per_trial and resources.get("GPU") is not None:
        limits.append(int(resources["GPU"] // options.gpus_per_trial))
    return max(1, min(limits))


class TrialCounter:
    """What the progress callback does with Ray Tune's events, kept apart from Ray so it can be tested: a trial
    counts once, when its trainable reports its final ``trial_status`` or when Ray says its worker failed."""

    def __init__(self, progress: SweepProgress):
        self.progress = progress
        self.seen: set[str] = set()

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        status = result.get("trial_status")
        if status is None or trial_id in self.seen:
            return  # a per-epoch report, or counted already
        self.seen.add(trial_id)
        if status == SKIPPED:
            self.progress.skipped()
            return
        seconds = float(result.get("time_total_s") or 0.0)
        self.progress.finished(status == "ok", seconds)

    def error(self, trial_id: str, seconds: float = 0.0) -> None:
        if trial_id not in self.seen:
            self.seen.add(trial_id)
            self.progress.finished(False, seconds)


def _progress_callback(progress: SweepProgress):
    from ray.tune import Callback

    class ProgressCallback(Callback):
        def __init__(self):
            self.counter = TrialCounter(progress)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.counter.result(str(trial.trial_id), result)

        def on_trial_error(self, iteration, trials, trial, **info):
            last = getattr(trial, "last_result", None) or {}
            self.counter.error(str(trial.trial_id), float(last.get("time_total_s") or 0.0))

    return ProgressCallback()


def _fit(pending: list[Trial], decisions: dict[str, Any], settings: RunSettings, options: RayOptions,
         out, progress: SweepProgress | None = None) -> dict[str, Outcome]:
    """Submit ``pending`` to Ray Tune and wait; returns what Ray says about each trial, by key. On Ctrl-C Ray
    Tune stops its trials and returns (a trial that never reported its end has ``Outcome.status`` None)."""
    from ray import tune

    trainable = tune.with_parameters(
        _trainable,
        trials={t.key: t.to_dict() for t in pending},
        decisions=decisions,
        settings=settings,
        sys_paths=worker_sys_paths([*settings.plugins, *_env_plugins()]),
        env=plugin_env(),
    )
    trainable = tune.with_resources(trainable, options.resources)
    name = "harness-" + "-".join(sorted({t.experiment for t in pending}))[:60] + time.strftime("-%Y%m%d-%H%M%S")
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(Path(options.storage).expanduser().resolve()) if options.storage else None,
        verbose=options.verbose,
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        callbacks=[_progress_callback(progress)] if progress is not None else None,
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.key for t in pending])},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=options.max_concurrent,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=run_config,
    )
    print(f"ray: submitting {len(pending)} trial(s), {options.resources} each; Ray state under "
          f"{run_config.storage_path or '~/ray_results'}/{name}", file=out, flush=True)
    grid = tuner.fit()
    outcomes: dict[str, Outcome] = {}
    for result in grid:
        if not result.config:
            continue
        metrics = result.metrics or {}
        error = f"{type(result.error).__name__}: {result.error}" if result.error is not None else None
        outcomes[result.config["trial"]] = Outcome(
            status=metrics.get("trial_status"), reason=str(metrics.get("reason", "")), error=error,
            ray_dir=getattr(result, "path", None), node=metrics.get("node_ip") or metrics.get("hostname"))
    return outcomes


def _trial_name(trial) -> str:
    return str(trial.config["trial"])


def _env_plugins() -> list[str]:
    return [p.strip() for p in os.environ.get("HARNESS_PLUGINS", "").split(",") if p.strip()]

