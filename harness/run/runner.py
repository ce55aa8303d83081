"""``run_trial``: the one function every executor calls.

dataset plugin -> DataSplits -> method.fit -> Predictor -> probabilities on test -> metric plugins,
then latency, then ``result.json`` and ``predictions.parquet`` written atomically. A trial that raises
is recorded with status ``failed`` and its traceback; it never takes other trials down with it.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.contract.specs import DatasetRequest, TrialContext
from harness.errors import HarnessError
from harness.registry import PluginManager, Registry, load_plugins
from harness.run.config import config_from_dict, data_protocol_warnings
from harness.run.latency import LatencySettings
from harness.run.trial import NO_SAMPLER, Trial
from harness.store import RESULT_SCHEMA, ResultStore, atomic_write_json, atomic_write_parquet

ENV_DATA_DIR = "HARNESS_DATA_DIR"
CURVE_FILE = "curve.json"  # a trial's learning curve: the list of its per-epoch ctx.report records
ENV_CACHE_DIR = "HARNESS_CACHE_DIR"


@dataclass(frozen=True)
class RunSettings:
    """Where things are and how to run; the same for every trial of a run (and picklable for Ray)."""

    runs_dir: Path = Path("runs")
    data_dir: Path | None = None
    cache_dir: Path | None = None
    plugins: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    device: str = "auto"
    threads: int | None = None
    latency: LatencySettings = field(default_factory=LatencySettings)

    def resolved_data_dir(self) -> Path | None:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        env = os.environ.get(ENV_DATA_DIR)
        return Path(env).expanduser() if env else None

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get(ENV_CACHE_DIR)
        if env:
            return Path(env).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"


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


def load_data(trial: Trial, registry: Registry, settings: RunSettings):
    spec = registry.get("datasets", trial.dataset)
    options = config_from_dict(spec.options, trial.options)
    request = DatasetRequest(
        options=options, seed=trial.seed, data_dir=settings.resolved_data_dir(),
        cache_dir=settings.resolved_cache_dir(),
    )
    return spec.load_fn()(request)


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


def run_trial(
    trial: Trial,
    settings: RunSettings,
    *,
    reporter: Callable[..., None] | None = None,
    registry: Registry | None = None,
    manager: PluginManager | None = None,
) -> dict:
    """Run one trial end to end and write its results; returns the result record (never raises for a
    failure inside the trial: that is recorded with status ``failed``)."""
    if registry is None or manager is None:
        manager, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    store = ResultStore(Path(settings.runs_dir) / trial.experiment)
    trial_dir = store.trial_dir(trial.key)
    trial_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    atomic_write_json(trial_dir / "trial.json", {**trial.to_dict(), "started": started.isoformat()})

    record: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "key": trial.key,
        "experiment": trial.experiment,
        "method": trial.method,
        "dataset": trial.dataset,
        "sampler": trial.sampler,
        "seed": trial.seed,
        "profile": trial.profile,
        "config": trial.config,
        "dataset_options": trial.options,
        "harness_version": __version__,
        "git_commit": git_commit(),
        "started": started.isoformat(),
    }
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        import torch

        device = pick_device(settings.device)
        threads = settings.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        record["hardware"] = hardware(device)
        seed_everything(trial.seed)

        t0 = time.perf_counter()
        data = load_data(trial, registry, settings)
        timings["load_seconds"] = time.perf_counter() - t0

        method = registry.get("methods", trial.method)
        config = config_from_dict(method.config, trial.config)
        if trial.sampler != NO_SAMPLER:
            sampler_spec = registry.get("samplers", trial.sampler)
            sampler_factory = sampler_spec.build_fn()
        else:
            sampler_factory = registry.get("samplers", "uniform").build_fn() if "uniform" in registry.samplers \
                else _no_sampler
        record["data_fingerprint"] = data.fingerprint
        warnings = data_protocol_warnings(method, trial.profile, trial.dataset, trial.options)
        if warnings:
            record["warnings"] = warnings
        curve: list[dict[str, Any]] = []  # the learning curve: every ctx.report of the trial
        forward = reporter or _console_reporter(trial)

        def report(**values: Any) -> None:
            curve.append(values)
            forward(**values)

        ctx = TrialContext(
            seed=trial.seed, device=device, threads=threads, trial_dir=trial_dir, reporter=report,
            sampler_factory=sampler_factory, profile=trial.profile, scorer=scorer(registry),
            cache_dir=settings.resolved_cache_dir(),
        )
        t0 = time.perf_counter()
        try:
            predictor = method.fit_fn()(data, config, ctx)
        finally:
            if curve:
                atomic_write_json(trial_dir / CURVE_FILE, curve)
                record["curve"] = CURVE_FILE
            if ctx.notes:
                record["notes"] = ctx.notes
        record["fit_seconds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        outputs = predictor.predict(data.test.images)
        timings["predict_seconds"] = time.perf_counter() - t0
        probs = outputs.pop("probs")
        if probs.shape != (len(data.test), data.num_classes):
            raise HarnessError(
                f"method {trial.method!r} returned probabilities of shape {probs.shape}; expected "
                f"({len(data.test)}, {data.num_classes}) for the test split"
            )
        labels = data.test.labels.astype(np.int64)
        record["metrics"], metric_errors = compute_metrics(registry, labels, probs)
        if metric_errors:
            record["metric_errors"] = metric_errors
        record["params"] = int(sum(p.numel() for p in predictor.module.parameters()))
        record["num_classes"] = data.num_classes
        record["classes"] = list(data.classes)
        record["n_test"] = int(len(labels))
        record["n_train"] = int(len(data.train))
        record["protocol"] = data.protocol

        t0 = time.perf_counter()
        _write_predictions(trial_dir, labels, probs, outputs, data.test.ids)
        if predictor.explain is not None:
            try:
                record["explanations"] = [
                    str(Path(p).relative_to(trial_dir)) for p in
                    predictor.explain(data.test.images, labels, ctx.artefacts_dir)
                ]
            except Exception as exc:
                record["explain_error"] = f"{type(exc).__name__}: {exc}"
        timings["write_seconds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        from harness.run.latency import measure

        record["latency"] = measure(predictor, data.test.images, settings.latency, trial_dir)
        timings["latency_seconds"] = time.perf_counter() - t0
        record["status"] = "ok"
    except BaseException as exc:  # KeyboardInterrupt is recorded too, then re-raised below
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            record["status"] = "interrupted"
            _finish(record, timings, t_start, trial_dir, manager, trial)
            raise
    _finish(record, timings, t_start, trial_dir, manager, trial)
    return record


def _no_sampler(labels):
    raise HarnessError("no sampler plugin is registered; install one (the built-in 'uniform' is in plugins/)")


def _finish(record, timings, t_start, trial_dir, manager, trial) -> None:
    record["timings"] = {k: round(v, 4) for k, v in timings.items()}
    record["total_seconds"] = time.perf_counter() - t_start
    record["finished"] = datetime.now(timezone.utc).isoformat()
    atomic_write_json(trial_dir / "result.json", record)
    errors = manager.notify_trial_finished(trial, record) if manager is not None else []
    if errors:
        record["observer_errors"] = errors


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
