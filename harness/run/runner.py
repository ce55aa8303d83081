"""``run_trial``: the one function every executor calls, and ``fit_trial``: the one fit path (run and tune).

dataset plugin -> DataSplits -> method.fit(train + val only) -> Predictor -> probabilities on test (checked:
finite, non-negative, rows summing to 1) -> metric plugins (every required headline metric present), then the
model kept in ``trial_dir/model/``, latency, and ``result.json`` (a :class:`TrialResult`) and
``predictions.parquet`` written atomically. A trial that raises is recorded with status ``failed`` and its
traceback; it never takes other trials down with it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.contract.result import STATUS_FAILED, STATUS_INTERRUPTED, STATUS_OK, TrialResult
from harness.contract.specs import DataSplits, MethodSpec, Predictor, TrialContext, check_probabilities
from harness.errors import HarnessError
from harness.registry import ENV_BLOCK, PluginManager, Registry, load_plugins
from harness.run import models
from harness.run.config import config_from_dict, data_protocol_warnings
from harness.run.models import load_predictor
from harness.run.resume import REPLACES_OK, Decision
from harness.run.settings import ENV_CACHE_DIR, ENV_DATA_DIR, RunSettings
from harness.run.trial import NO_SAMPLER, Trial, load_data
from harness.store import (
    TRIAL_FILE,
    ResultStore,
    StoreError,
    TrialSkipped,
    atomic_write_json,
    atomic_write_parquet,
    store_error,
    write_result,
)

CURVE_FILE = "curve.json"  # a trial's learning curve: the list of its per-epoch ctx.report records

__all__ = ["CURVE_FILE", "ENV_CACHE_DIR", "ENV_DATA_DIR", "Fitted", "RunSettings", "cached_plugins", "compute_metrics",
           "fit_trial", "load_data", "load_predictor", "record_unfinished", "run_trial", "scorer"]


@functools.lru_cache(maxsize=8)
def cached_plugins(plugins: tuple[str, ...], blocked: tuple[str, ...]) -> tuple[PluginManager, Registry]:
    manager = load_plugins(plugins, blocked)
    return manager, manager.build_registry()


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=5,
        )
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device: str) -> dict[str, Any]:
    import torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _console_reporter(trial: Trial) -> Callable[..., None]:
    def report(**metrics: Any) -> None:
        parts = []
        for key, value in metrics.items():
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        print(f"    {'  '.join(parts)}", flush=True)

    return report


def compute_metrics(registry: Registry, labels: np.ndarray, probs: np.ndarray) -> tuple[dict, dict]:
    metrics, errors = {}, {}
    for name, spec in sorted(registry.metrics.items()):
        try:
            metrics[name] = float(spec.compute_fn()(labels, probs))
        except Exception as exc:  # e.g. AUROC with one class present: recorded, not fatal
            metrics[name] = None
            errors[name] = f"{type(exc).__name__}: {exc}"
    return metrics, errors


def scorer(registry: Registry):
    """``(labels, probs) -> {metric: value}`` with the registered metric plugins (for ``ctx.score``)."""

    def score(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        values, _ = compute_metrics(registry, labels, probs)
        return {k: v for k, v in values.items() if v is not None}

    return score


def sampler_factory(trial: Trial, registry: Registry, settings: RunSettings) -> Callable[[np.ndarray], Any]:
    """The trial's sampler; a method without a sampler axis (``uses_sampler=False``) that still asks
    ``ctx.make_sampler`` gets ``settings.default_sampler``, or a clear error if no plugin registers it."""
    if trial.sampler != NO_SAMPLER:
        return registry.get("samplers", trial.sampler).build_fn()
    if settings.default_sampler in registry.samplers:
        return registry.get("samplers", settings.default_sampler).build_fn()

    def missing(labels):
        raise HarnessError(f"method {trial.method!r} asked for a sampler, and the default sampler "
                           f"{settings.default_sampler!r} is not registered (samplers: "
                           f"{', '.join(sorted(registry.samplers)) or 'none'}); install or unblock the plugin "
                           f"that provides it")

    return missing


def missing_metrics_error(registry: Registry, settings: RunSettings) -> HarnessError | None:
    """None when every required headline metric is registered; otherwise the error a trial fails with, naming
    the missing metrics and the plugin that provides them (found by loading the plugins with none blocked)."""
    missing = [m for m in settings.required_metrics if m not in registry.metrics]
    if not missing:
        return None
    names = ", ".join(missing)
    where = _providers(missing, settings)
    if where:
        blocked = set(settings.blocked) | {b.strip() for b in os.environ.get(ENV_BLOCK, "").split(",")}
        failed = {f.name: f.error for f in registry.failures}
        parts = []
        for plugin in sorted(set(where.values())):
            provides = ", ".join(m for m in missing if where.get(m) == plugin)
            why = ("which is blocked (--block-plugin / HARNESS_BLOCK_PLUGINS): unblock it" if plugin in blocked
                   else f"which failed to load ({failed[plugin]})" if plugin in failed else "which is not loaded")
            parts.append(f"plugin {plugin!r} provides {provides}, {why}")
        detail = "; ".join(parts)
    else:
        detail = "no installed plugin registers them: install a metrics plugin that does"
    return HarnessError(f"the headline metric(s) {names} are not registered, and a trial without every headline "
                        f"metric is not ok: {detail}")


def _providers(names: list[str], settings: RunSettings) -> dict[str, str]:
    try:
        manager = load_plugins(settings.plugins, (), honour_env_block=False)
        registry = manager.build_registry()
    except Exception:  # e.g. the blocked plugin duplicates another's name: say what is missing, not who
        return {}
    return {name: registry.provider[("metrics", name)] for name in names if ("metrics", name) in registry.provider}


@dataclass
class Fitted:
    """What :func:`fit_trial` returns: the trial's data (the test split included: the runner's to predict),
    its resolved config, the context ``fit`` ran with, and the fitted predictor."""

    method: MethodSpec
    data: DataSplits
    config: Any
    ctx: TrialContext
    predictor: Predictor


def fit_trial(trial: Trial, settings: RunSettings, *, registry: Registry, trial_dir: Path,
              reporter: Callable[..., None], result: TrialResult) -> Fitted:
    """The one fit path, shared by ``run_trial`` and ``harness tune``: device, threads and seeds; the data;
    the config; the context (the registered metrics as its scorer, ``settings.headline_metric``); then
    ``method.fit`` on the training and validation splits only. Facts for the result (hardware, load and fit
    time, data fingerprint, warnings, learning curve, notes) are filled into ``result`` as they become known,
    so a failing fit still records them. Raises whatever fit raises, and a :class:`HarnessError` when fit read
    ``data.test`` or did not return a Predictor."""
    import torch

    device = pick_device(settings.device)
    threads = settings.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    result.hardware = hardware(device)
    seed_everything(trial.seed)

    t0 = time.perf_counter()
    data = load_data(trial, registry, settings)
    result.timings["load_seconds"] = time.perf_counter() - t0
    result.data_fingerprint = data.fingerprint
    result.protocol = data.protocol
    result.num_classes, result.classes = data.num_classes, list(data.classes)
    result.n_train, result.n_test = int(len(data.train)), int(len(data.test))

    method = registry.get("methods", trial.method)
    config = config_from_dict(method.config, trial.config)
    result.warnings.extend(data.warnings)  # what the dataset says about this load (absent classes, dropped rows)
    if data.fingerprint is None:
        result.warnings.append(f"dataset {trial.dataset!r} gave no data fingerprint: this result cannot be checked "
                               f"against changed data when a run resumes")
    result.warnings.extend(data_protocol_warnings(method, trial.profile, trial.dataset, trial.options))
    curve: list[dict[str, Any]] = []  # the learning curve: every ctx.report of the trial

    def report(**values: Any) -> None:
        curve.append(values)
        reporter(**values)

    ctx = TrialContext(
        seed=trial.seed, device=device, threads=threads, trial_dir=trial_dir, reporter=report,
        sampler_factory=sampler_factory(trial, registry, settings), profile=trial.profile,
        scorer=scorer(registry), headline_metric=settings.headline_metric, cache_dir=settings.resolved_cache_dir(),
    )
    fit_data = data.without_test(trial.method)
    hidden = fit_data.test
    t0 = time.perf_counter()
    try:
        predictor = method.fit_fn()(fit_data, config, ctx)
    except Exception as exc:
        if hidden.touched:  # whatever fit made of the refusal, the reason is that it read the test split
            raise hidden.error() from exc
        raise
    finally:
        if curve:
            atomic_write_json(trial_dir / CURVE_FILE, curve)
            result.curve = CURVE_FILE
        if ctx.notes:
            result.notes = dict(ctx.notes)
        result.warnings.extend(ctx.warnings)
    if hidden.touched:  # the method caught the refusal and went on: still not a valid trial
        raise hidden.error()
    result.fit_seconds = time.perf_counter() - t0 - result.timings.get("observer_seconds", 0.0)
    if not isinstance(predictor, Predictor):
        raise HarnessError(f"method {trial.method!r}: fit returned {type(predictor).__name__}; expected a "
                           f"harness.Predictor (a torch module from normalised images to class probabilities)")
    return Fitted(method=method, data=data, config=config, ctx=ctx, predictor=predictor)


def start_result(trial: Trial, started: datetime) -> TrialResult:
    """A trial's result before it runs (status ``failed`` until it finishes ok)."""
    return TrialResult(
        key=trial.key, experiment=trial.experiment, method=trial.method, dataset=trial.dataset,
        sampler=trial.sampler, seed=trial.seed, profile=trial.profile, config=trial.config,
        dataset_options=trial.options, harness_version=__version__, git_commit=git_commit(),
        started=started.isoformat(), status=STATUS_FAILED,
    )


def run_trial(
    trial: Trial,
    settings: RunSettings,
    *,
    reporter: Callable[..., None] | None = None,
    registry: Registry | None = None,
    manager: PluginManager | None = None,
    decision: Decision | None = None,
) -> TrialResult:
    """Run one trial end to end and write its results; returns its :class:`TrialResult` (never raises for a
    failure inside the trial: that is recorded with status ``failed``).

    The trial runs holding its lock (:meth:`ResultStore.lock`): when another process holds it, or (with the
    executor's ``decision``) finished it since the decision was made, this raises :class:`TrialSkipped`. An
    ``ok`` result already in the folder is moved to ``superseded/`` first, never overwritten. A runs folder
    that cannot be written raises :class:`StoreError` (the command stops: the next trial would fail too)."""
    if registry is None or manager is None:
        manager, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    store = ResultStore.of(settings.runs_dir, trial.experiment)
    with store.lock(trial.key) as trial_dir:
        _set_aside_previous(store, trial, decision)
        return _run_locked(trial, settings, trial_dir, reporter=reporter, registry=registry, manager=manager)


def _set_aside_previous(store: ResultStore, trial: Trial, decision: Decision | None) -> None:
    """Under the trial's lock: skip a trial another process finished meanwhile; move an ok or unreadable
    result out of the way (to ``superseded/``) before the trial runs again."""
    result, unreadable = store.read(trial.key)
    if unreadable is not None:
        store.set_aside(trial.key, "unreadable")
    elif result is not None and result.ok:
        replacing = decision is not None and decision.state in REPLACES_OK and \
            result.data_fingerprint == decision.stored_fingerprint
        if decision is not None and not replacing:
            raise TrialSkipped(f"finished by another process meanwhile (result written {result.finished}); "
                               f"not run again here")
        store.set_aside(trial.key, decision.state if replacing else "rerun")


def _run_locked(trial: Trial, settings: RunSettings, trial_dir: Path, *, reporter, registry: Registry,
                manager: PluginManager) -> TrialResult:
    started = datetime.now(timezone.utc)
    atomic_write_json(trial_dir / TRIAL_FILE, {**trial.to_dict(), "started": started.isoformat()})
    models.remove_partial(trial_dir)  # a model left by an earlier, failed attempt is not this trial's
    result = start_result(trial, started)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    try:
        missing = missing_metrics_error(registry, settings)
        if missing is not None:
            raise missing
        fitted = fit_trial(trial, settings, registry=registry, trial_dir=trial_dir,
                           reporter=_observed(reporter or _console_reporter(trial), trial, trial_dir, registry,
                                              manager, result), result=result)
        data, predictor = fitted.data, fitted.predictor
        timings = result.timings

        t0 = time.perf_counter()
        outputs = predictor.predict(data.test.images)
        timings["predict_seconds"] = time.perf_counter() - t0
        if "probs" not in outputs:
            raise HarnessError(f"method {trial.method!r}: the predictor returned a dict without 'probs' "
                               f"(keys: {', '.join(outputs)}); expected class probabilities under 'probs'")
        probs = outputs.pop("probs")
        check_probabilities(probs, method=trial.method, rows=len(data.test), num_classes=data.num_classes)
        labels = data.test.labels.astype(np.int64)
        result.metrics, result.metric_errors = compute_metrics(registry, labels, probs)
        absent = [m for m in settings.required_metrics if result.metrics.get(m) is None]
        if absent:
            raise HarnessError(f"headline metric(s) {', '.join(absent)} could not be computed ("
                               + "; ".join(f"{m}: {result.metric_errors.get(m, 'not registered')}" for m in absent)
                               + "); a trial without every headline metric is not ok")
        result.params = int(sum(p.numel() for p in predictor.module.parameters()))

        t0 = time.perf_counter()
        _write_predictions(trial_dir, labels, probs, outputs, data.test.ids)
        if predictor.explain is not None:
            try:
                result.explanations = [
                    str(Path(p).relative_to(trial_dir)) for p in
                    predictor.explain(data.test.images, labels, fitted.ctx.artefacts_dir)
                ]
            except Exception as exc:
                result.explain_error = f"{type(exc).__name__}: {exc}"
        saved = False
        if settings.save_model:
            try:
                models.save_predictor(predictor, trial_dir, input_shape=data.test.images.shape[1:])
                saved = True
            except StoreError:
                raise
            except HarnessError as exc:  # a module that cannot be pickled: the trial stands, without a model
                result.warnings.append(f"model not kept: {exc}")
        timings["write_seconds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        from harness.run.latency import measure

        result.latency = measure(predictor, data.test.images, settings.latency, trial_dir,
                                 keep_onnx=models.onnx_path(trial_dir) if saved else None)
        timings["latency_seconds"] = time.perf_counter() - t0
        result.model = models.describe(trial_dir) if saved else None
        result.status = STATUS_OK
    except BaseException as exc:  # KeyboardInterrupt is recorded too, then re-raised below
        result.status = STATUS_FAILED
        result.error = f"{type(exc).__name__}: {exc}"
        result.traceback = traceback.format_exc()
        result.model = None
        models.remove_partial(trial_dir)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            result.status = STATUS_INTERRUPTED
            _finish(result, t_start, cpu_start, trial_dir, manager, trial)
            raise
        stop = exc if isinstance(exc, StoreError) else _disk_error(exc, trial_dir)
        if stop is not None:  # the disk is full or read-only: record what we can, then stop the command
            with contextlib.suppress(StoreError):
                _finish(result, t_start, cpu_start, trial_dir, manager, trial)
            if stop is exc:
                raise
            raise stop from exc
    _finish(result, t_start, cpu_start, trial_dir, manager, trial)
    return result


def record_unfinished(trial: Trial, settings: RunSettings, *, status: str, error: str,
                      details: dict[str, Any] | None = None, started_since: str | None = None) -> TrialResult | None:
    """Record a trial whose process ended without writing its result (a Ray worker that died, a trial stopped
    by Ctrl-C): ``status`` (``failed`` or ``interrupted``), ``error`` and what is known (when it started, the
    learning curve so far, ``details`` as notes). Returns the result written, or None when another process holds
    the trial, or it has a result of its own by now, or (``started_since``, an ISO time) no attempt started at or
    after that time: a trial still waiting for a slot when Ctrl-C came is not a result, so a report does not
    count it as a failed seed."""
    store = ResultStore.of(settings.runs_dir, trial.experiment)
    try:
        with store.lock(trial.key) as trial_dir:
            stored, _ = store.read(trial.key)
            started = _started(trial_dir)
            if started_since is not None and (started is None or started < started_since):
                return None
            if stored is not None and (stored.ok or (started is not None and (stored.started or "") >= started)):
                return None  # a finished result is never overwritten; or the attempt wrote its own
            result = start_result(trial, datetime.fromisoformat(started) if started else datetime.now(timezone.utc))
            result.status, result.error = status, error
            result.notes = dict(details or {})
            if (trial_dir / CURVE_FILE).exists():
                result.curve = CURVE_FILE
            result.finished = datetime.now(timezone.utc).isoformat()
            write_result(trial_dir, result)
            return result
    except TrialSkipped:
        return None


def _started(trial_dir: Path) -> str | None:
    """When the last attempt at the trial in ``trial_dir`` started (its ``trial.json``), or None."""
    try:
        value = json.loads((trial_dir / TRIAL_FILE).read_text()).get("started")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _disk_error(exc: BaseException, trial_dir: Path) -> StoreError | None:
    """A :class:`StoreError` when ``exc`` (raised inside the trial, e.g. by a method saving a checkpoint) says the
    disk is full or read-only: every later trial would fail the same way."""
    disk = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS)
    if isinstance(exc, OSError) and exc.errno in disk:
        return store_error(exc, Path(exc.filename) if exc.filename else trial_dir)
    return None


def _observed(reporter: Callable[..., None], trial: Trial, trial_dir: Path, registry: Registry,
              manager: PluginManager | None, result: TrialResult) -> Callable[..., None]:
    """``reporter`` followed by the plugins' ``trial_reported`` observers. An observer that raises is printed,
    recorded in ``result.observer_errors`` and not called again in this trial (a tracking server that is down
    costs one timeout, not one per epoch); the trial goes on. The observers' time is kept in
    ``result.timings["observer_seconds"]``, and ``fit_trial`` takes it out of ``fit_seconds``."""
    if manager is None or not manager.pm.hook.trial_reported.get_hookimpls():
        return reporter
    names = tuple(sorted(registry.metrics))
    failed: set[str] = set()

    def report(**values: Any) -> None:
        reporter(**values)
        t0 = time.perf_counter()
        errors = manager.notify_trial_reported(trial, dict(values), trial_dir, names, skip=failed)
        result.timings["observer_seconds"] = result.timings.get("observer_seconds", 0.0) + time.perf_counter() - t0
        for plugin, error in errors:
            failed.add(plugin)
            print(f"warning: {error}", file=sys.stderr, flush=True)
            result.observer_errors.append(error)

    return report


def _finish(result: TrialResult, t_start: float, cpu_start: float, trial_dir: Path,
            manager: PluginManager | None, trial: Trial) -> None:
    result.total_seconds = time.perf_counter() - t_start
    # the CPU time of all of this process's threads: what a trial costs, measurable on a shared machine
    result.timings["cpu_seconds"] = time.process_time() - cpu_start
    result.timings = {k: round(v, 4) for k, v in result.timings.items()}
    result.finished = datetime.now(timezone.utc).isoformat()
    write_result(trial_dir, result)
    errors = manager.notify_trial_finished(trial, result, trial_dir) if manager is not None else []
    if errors:  # printed, and recorded with the result
        for error in errors:
            print(f"warning: {error}", file=sys.stderr, flush=True)
        result.observer_errors = [*result.observer_errors, *errors]
        write_result(trial_dir, result)


def _write_predictions(trial_dir: Path, labels: np.ndarray, probs: np.ndarray, extras: dict,
                       ids: np.ndarray | None = None) -> None:
    import polars as pl

    columns: dict[str, Any] = {
        "index": np.arange(len(labels), dtype=np.int64),
        **({"image_id": np.asarray(ids).astype(str)} if ids is not None else {}),
        "label": labels,
        "pred": probs.argmax(axis=1).astype(np.int64),
    }
    for k in range(probs.shape[1]):
        columns[f"prob_{k}"] = probs[:, k].astype(np.float64)
    for key, value in extras.items():
        value = np.asarray(value)
        if value.ndim == 1 and len(value) == len(labels):
            columns[key] = value
    atomic_write_parquet(trial_dir / "predictions.parquet", pl.DataFrame(columns))
