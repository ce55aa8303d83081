"""MLflow tracking: every finished trial becomes an MLflow run (an optional observer plugin, off by default).

Enable it for a command with ``--plugin plugins.mlflow_tracking`` (``harness --plugin plugins.mlflow_tracking run
...``) or for a shell with ``HARNESS_PLUGINS=plugins.mlflow_tracking``; install MLflow with the extra
``pip install -e ".[mlflow]"`` (``mlflow-skinny``: the tracking client, no server or UI). It is not registered
as an entry point, so a plain ``harness run`` never needs MLflow.

Where: ``MLFLOW_TRACKING_URI`` (a server ``http://host:5000``, a database, or a folder ``file:///path``); without
it, a file store ``mlruns/`` in the working directory. MLflow 3 refuses new file stores unless
``MLFLOW_ALLOW_FILE_STORE=true``; the plugin sets that (if unset) when the target is a file store, since a local
folder is what it was asked for. The MLflow experiment is the harness experiment (``runs/<experiment>/``).

What, per trial (``trial_reported`` and ``trial_finished``, in the process that runs the trial, Ray workers
included):

- the run is named by the trial key, tagged ``harness.key``, ``harness.status``, ``harness.method`` ... and
  ``harness.error`` for a failed trial (status ``FAILED``);
- params: ``method``, ``dataset``, ``sampler``, ``seed``, ``profile``, the method's resolved config
  (``config.<name>``) and the dataset's options (``dataset.<name>``);
- metrics: the test metrics (``macro_f1`` ...), ``fit_seconds``, ``total_seconds``, ``parameters`` and the
  numeric latency figures (``latency.<name>``);
- the learning curve, **live** (``trial_reported``: the run opens at the trial's first ``ctx.report``, status
  RUNNING, and each record is logged as it comes, so the MLflow UI shows the curve while the trial trains):
  every numeric key with step = the record's epoch (``loss``, ``val_macro_f1``, ``lr`` ...; a key that is also
  a test metric is logged as ``curve.<key>``); at the end, any record the live run missed (``curve.json``). A
  run an earlier attempt left RUNNING (its process died, or Ctrl-C) is marked KILLED when the trial runs again;
- artefacts: the trial folder's ``artefacts/``, ``predictions.parquet``, ``curve.json``, ``result.json`` and
  ``trial.json`` (not the kept model: large, and ``harness predict`` / ``bench`` read it from the runs folder).

A failure here (no MLflow, an unreachable server) is printed and recorded in the result's ``observer_errors``;
the trial keeps its status.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness import hookimpl

ENV_URI = "MLFLOW_TRACKING_URI"
DEFAULT_STORE = "mlruns"
MAX_PARAM_CHARS = 500  # the smallest limit of the MLflow servers this supports (2.x); longer values are cut
ARTEFACT_FILES = ("predictions.parquet", "curve.json", "result.json", "trial.json")
BATCH = 100  # params per log_batch call (MLflow's limit); metrics go in batches of 10 x this


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the file store ``./mlruns`` (as a ``file://`` URI)."""
    return os.environ.get(ENV_URI) or Path(DEFAULT_STORE).resolve().as_uri()


def is_file_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a bare path (a Windows drive letter is a 1-letter scheme)


def params_of(trial: Any, result: Any) -> dict[str, str]:
    """What the trial was: its axes and the resolved method config and dataset options, as MLflow params."""
    params: dict[str, Any] = {"method": result.method, "dataset": result.dataset, "sampler": result.sampler,
                              "seed": result.seed, "profile": result.profile}
    config = result.config or getattr(trial, "config", {}) or {}
    options = result.dataset_options or dict(getattr(trial, "dataset_options", ()) or ())
    params.update({f"config.{k}": v for k, v in config.items()})
    params.update({f"dataset.{k}": v for k, v in options.items()})
    return {k: _text(v)[:MAX_PARAM_CHARS] for k, v in params.items()}


def metrics_of(result: Any) -> dict[str, float]:
    """The trial's final numbers: test metrics, times, size and latency (finite numbers only)."""
    values: dict[str, Any] = dict(result.metrics or {})
    values.update(fit_seconds=result.fit_seconds, total_seconds=result.total_seconds, parameters=result.params)
    values.update({f"latency.{k}": v for k, v in (result.latency or {}).items()})
    return {k: float(v) for k, v in values.items() if _finite(v)}


def read_curve(trial_dir: Path | None, result: Any) -> list[dict[str, Any]]:
    """The trial's learning curve (``curve.json`` or the file the result names), [] if it has none."""
    if trial_dir is None:
        return []
    path = Path(trial_dir) / (result.curve or "curve.json")
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def curve_points(curve: list[dict[str, Any]], taken: set[str] = frozenset(),
                 first: int = 1) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` for every numeric key of every record, step = the record's epoch (its position,
    counted from ``first``, when it has none); a key in ``taken`` (a final metric's name) becomes ``curve.<key>``."""
    points = []
    for index, record in enumerate(curve, first):
        epoch = record.get("epoch")
        step = int(epoch) if _finite(epoch) else index
        for key, value in record.items():
            if key == "epoch" or not _finite(value):
                continue
            points.append((f"curve.{key}" if key in taken else key, float(value), step))
    return points


def _client(uri: str | None = None):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ImportError(f"the mlflow_tracking plugin needs MLflow ({exc}); install it with "
                          f"`pip install -e \".[mlflow]\"` (or `pip install mlflow-skinny`)") from None
    uri = uri or tracking_uri()
    if is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _tags(trial: Any, trial_dir: Path | None, result: Any = None) -> dict[str, str]:
    source = result if result is not None else trial
    tags = {"harness.key": source.key, "harness.method": source.method, "harness.dataset": source.dataset,
            "harness.sampler": source.sampler, "harness.seed": _text(source.seed), "harness.profile": source.profile,
            "harness.status": result.status if result is not None else "running"}
    if result is not None:
        tags.update({"harness.version": result.harness_version, "harness.git_commit": result.git_commit})
        if result.error:
            tags["harness.error"] = result.error[:5000]
    if trial_dir is not None:
        tags["harness.trial_dir"] = str(Path(trial_dir).resolve())
    return {k: v for k, v in tags.items() if v}


@dataclass
class LiveRun:
    """The MLflow run a trial opened at a report, the records the trial has reported (``seen``) and the
    positions of those logged (``logged``): at the end, whatever was not logged live is."""

    run_id: str
    uri: str
    seen: int = 0
    logged: set[int] = field(default_factory=set)


LIVE: dict[str, LiveRun] = {}  # trial key -> its open run, in the process running the trial


def log_record(trial: Any, record: dict[str, Any], trial_dir: Path | None, metric_names=(),
               uri: str | None = None) -> str:
    """Log one learning-curve record of a running trial (opening its run, status RUNNING, at the first)."""
    uri = uri or tracking_uri()
    client = _client(uri)
    from mlflow.entities import Metric

    live = LIVE.get(trial.key)
    if live is None or live.uri != uri:
        seen = live.seen if live is not None else 0
        experiment_id = _experiment_id(client, getattr(trial, "experiment", "") or "harness")
        close_stale_runs(client, experiment_id, trial.key)
        run = client.create_run(experiment_id, run_name=trial.key, tags=_tags(trial, trial_dir))
        live = LIVE[trial.key] = LiveRun(run.info.run_id, uri, seen)
    position, live.seen = live.seen, live.seen + 1
    now = int(time.time() * 1000)
    points = curve_points([record], set(metric_names))
    step = int(record["epoch"]) if _finite(record.get("epoch")) else position + 1
    client.log_batch(live.run_id, metrics=[Metric(k, v, now, step) for k, v, _ in points])
    live.logged.add(position)
    return live.run_id


def close_stale_runs(client: Any, experiment_id: str, key: str) -> list[str]:
    """Mark KILLED the runs of trial ``key`` still RUNNING from an earlier attempt whose process ended without
    finishing them (a Ray worker that died, a Ctrl-C): a new attempt opens its own run. Returns their ids."""
    stale = client.search_runs([experiment_id], filter_string=f"tags.`harness.key` = '{key}' and "
                                                              "attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "harness.status", "interrupted")
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def log_trial(trial: Any, result: Any, trial_dir: Path | None, uri: str | None = None) -> str:
    """Log one finished trial as an MLflow run (the run its live curve opened, or a new one); returns the run id."""
    uri = uri or tracking_uri()
    client = _client(uri)
    from mlflow.entities import Metric, Param

    live = LIVE.pop(result.key, None)
    if live is not None and live.uri == uri:
        run_id = live.run_id
        for key, value in _tags(trial, trial_dir, result).items():
            client.set_tag(run_id, key, value)
    else:
        live = None
        experiment_id = _experiment_id(client, result.experiment or getattr(trial, "experiment", "") or "harness")
        close_stale_runs(client, experiment_id, result.key)
        run_id = client.create_run(experiment_id, run_name=result.key, tags=_tags(trial, trial_dir, result)).info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in params_of(trial, result).items()]
        final = metrics_of(result)
        metrics = [Metric(k, v, now, 0) for k, v in final.items()]
        logged = live.logged if live is not None else set()
        curve = read_curve(trial_dir, result)
        missed = [(i, r) for i, r in enumerate(curve) if i not in logged]  # what the live run did not log
        metrics += [Metric(k, v, now, step) for i, r in missed
                    for k, v, step in curve_points([r], set(final), first=i + 1)]
        for i in range(0, len(params), BATCH):
            client.log_batch(run_id, params=params[i:i + BATCH])
        for i in range(0, len(metrics), 10 * BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + 10 * BATCH])
        if trial_dir is not None:
            folder = Path(trial_dir)
            if (folder / "artefacts").is_dir():
                client.log_artifacts(run_id, str(folder / "artefacts"), "artefacts")
            for name in ARTEFACT_FILES:
                if (folder / name).is_file():
                    client.log_artifact(run_id, str(folder / name))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED" if result.ok else "FAILED")
    return run_id


@hookimpl
def trial_reported(trial, record, trial_dir, metric_names):
    log_record(trial, record, Path(trial_dir) if trial_dir is not None else None, metric_names)


@hookimpl
def trial_finished(trial, result, trial_dir):
    log_trial(trial, result, Path(trial_dir) if trial_dir is not None else None)


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process (a parallel Ray trial) created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
