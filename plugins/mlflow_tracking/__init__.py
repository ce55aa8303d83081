"""MLflow tracking: every finished trial becomes an MLflow run (an optional observer plugin, off by default).

Enable it for a command with ``--plugin plugins.mlflow_tracking`` (``harness --plugin plugins.mlflow_tracking run
...``) or for a shell with ``HARNESS_PLUGINS=plugins.mlflow_tracking``; install MLflow with the extra
``pip install -e ".[mlflow]"`` (``mlflow-skinny``: the tracking client, no server or UI). It is not registered
as an entry point, so a plain ``harness run`` never needs MLflow.

Where: ``MLFLOW_TRACKING_URI`` (a server ``http://host:5000``, a database, or a folder ``file:///path``); without
it, a file store ``mlruns/`` in the working directory. MLflow 3 refuses new file stores unless
``MLFLOW_ALLOW_FILE_STORE=true``; the plugin sets that (if unset) when the target is a file store, since a local
folder is what it was asked for. The MLflow experiment is the harness experiment (``runs/<experiment>/``).

What, per trial (``trial_finished``, in the process that ran the trial, Ray workers included):

- the run is named by the trial key, tagged ``harness.key``, ``harness.status``, ``harness.method`` ... and
  ``harness.error`` for a failed trial (status ``FAILED``);
- params: ``method``, ``dataset``, ``sampler``, ``seed``, ``profile``, the method's resolved config
  (``config.<name>``) and the dataset's options (``dataset.<name>``);
- metrics: the test metrics (``macro_f1`` ...), ``fit_seconds``, ``total_seconds``, ``parameters`` and the
  numeric latency figures (``latency.<name>``);
- the learning curve (``curve.json``, one record per ``ctx.report``): every numeric key with step = the record's
  epoch (``loss``, ``val_macro_f1``, ``lr`` ...; a key that is also a test metric is logged as ``curve.<key>``);
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


def curve_points(curve: list[dict[str, Any]], taken: set[str] = frozenset()) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` for every numeric key of every record, step = the record's epoch (its position
    when it has none); a key in ``taken`` (a final metric's name) becomes ``curve.<key>``."""
    points = []
    for index, record in enumerate(curve, 1):
        epoch = record.get("epoch")
        step = int(epoch) if _finite(epoch) else index
        for key, value in record.items():
            if key == "epoch" or not _finite(value):
                continue
            points.append((f"curve.{key}" if key in taken else key, float(value), step))
    return points


def log_trial(trial: Any, result: Any, trial_dir: Path | None, uri: str | None = None) -> str:
    """Log one trial as an MLflow run; returns the run id."""
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ImportError(f"the mlflow_tracking plugin needs MLflow ({exc}); install it with "
                          f"`pip install -e \".[mlflow]\"` (or `pip install mlflow-skinny`)") from None
    uri = uri or tracking_uri()
    if is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, result.experiment or getattr(trial, "experiment", "") or "harness")
    tags = {"harness.key": result.key, "harness.status": result.status, "harness.method": result.method,
            "harness.dataset": result.dataset, "harness.sampler": result.sampler, "harness.seed": _text(result.seed),
            "harness.profile": result.profile, "harness.version": result.harness_version,
            "harness.git_commit": result.git_commit}
    if result.error:
        tags["harness.error"] = result.error[:5000]
    if trial_dir is not None:
        tags["harness.trial_dir"] = str(Path(trial_dir).resolve())
    run = client.create_run(experiment_id, run_name=result.key, tags={k: v for k, v in tags.items() if v})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in params_of(trial, result).items()]
        final = metrics_of(result)
        metrics = [Metric(k, v, now, 0) for k, v in final.items()]
        metrics += [Metric(k, v, now, step) for k, v, step in curve_points(read_curve(trial_dir, result), set(final))]
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
