"""The result store: ``runs/<experiment>/<trial-key>/{trial.json, result.json, predictions.parquet}``.

Every write is atomic (a temporary file in the same folder, then ``os.replace``), so an interrupted run
never leaves a half-written result. A trial is done when its ``result.json`` says ``status: ok``.
The read side (``load_runs``) reads a runs folder once into one table that the leaderboard, the statistics
and the report share; a result that cannot be read is named with what is wrong, never dropped silently.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract.result import RESULT_SCHEMA, TrialResult
from harness.errors import HarnessError

RESULT_FILE = "result.json"
TRIAL_FILE = "trial.json"
EXPERIMENT_FILE = "experiment.json"  # RUNS_DIR/EXPERIMENT/experiment.json: the commands that produced it

__all__ = ["RESULT_SCHEMA", "ResultStore", "Runs", "TrialResult", "Unreadable", "atomic_write_json", "load_runs",
           "write_result"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame) -> None:
    """Write a polars DataFrame atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """Trials of one experiment under ``root`` (``runs/<experiment>``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def trial_dir(self, key: str) -> Path:
        return self.root / key

    def result_path(self, key: str) -> Path:
        return self.trial_dir(key) / RESULT_FILE

    def load_result(self, key: str) -> TrialResult | None:
        """The stored result of trial ``key`` (schema 1 or 2), or None when there is none or it cannot be read
        (an unreadable result is not done: the trial runs again and overwrites it)."""
        path = self.result_path(key)
        if not path.exists():
            return None
        try:
            return TrialResult.read(path)
        except HarnessError:
            return None

    def write_result(self, result: TrialResult) -> Path:
        return write_result(self.trial_dir(result.key), result)

    def is_done(self, key: str) -> bool:
        result = self.load_result(key)
        return result is not None and result.ok


def read_experiment_record(root: Path) -> dict:
    """``root/experiment.json`` (empty when there is none or it cannot be read: it is rewritten)."""
    path = Path(root) / EXPERIMENT_FILE
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_experiment_record(root: Path, record: Mapping[str, Any]) -> Path:
    path = Path(root) / EXPERIMENT_FILE
    atomic_write_json(path, dict(record))
    return path


def write_result(trial_dir: Path, result: TrialResult) -> Path:
    """Write ``result`` to ``trial_dir/result.json`` atomically (schema 2); returns the path."""
    if not isinstance(result, TrialResult):
        raise HarnessError(f"write_result expects a TrialResult; found {type(result).__name__}")
    path = Path(trial_dir) / RESULT_FILE
    atomic_write_json(path, result.to_dict())
    return path


# --------------------------------------------------------------------------------------------------
# The read side: a runs folder, read once

CURVE_FILE = "curve.json"
PREDICTIONS_FILE = "predictions.parquet"


@dataclass(frozen=True)
class Unreadable:
    """A ``result.json`` that could not be used: where, what is wrong with it, and the trial it belongs to
    (from the ``trial.json`` beside it, when that is readable: method, dataset, sampler, seed)."""

    path: Path
    problem: str
    trial: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = ""
        if self.trial.get("method"):
            where = (f" (trial {self.trial.get('method')} · {self.trial.get('sampler', '-')} on "
                     f"{self.trial.get('dataset')}, seed {self.trial.get('seed')})")
        return f"{self.path}{where}: {self.problem}; it counts as missing in its row. Re-run the trial (delete " \
               "the file and run the same command again) or repair the file."


@dataclass
class Runs:
    """A runs folder read once: every result record (typed, one row per trial in ``table``, a polars DataFrame
    whose ``row`` column indexes ``records`` and ``folders``), the results that could not be read, and the
    ``experiment.json`` records (the commands that made the experiments)."""

    root: Path
    records: list[TrialResult]
    folders: list[Path]
    unreadable: list[Unreadable]
    experiments: list[dict]
    table: Any

    def ok(self) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.ok]


def parse_record(payload: Any, path: Path) -> tuple[TrialResult | None, str | None]:
    """A parsed ``result.json`` as a :class:`TrialResult`, or what is wrong with it."""
    try:
        record = TrialResult.from_dict(payload, where=str(path))
    except HarnessError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    for name, kind in (("method", str), ("dataset", str), ("sampler", str)):
        if not isinstance(getattr(record, name), kind):
            return None, f"field {name!r} is {type(getattr(record, name)).__name__}; expected a string"
    if record.seed is not None and (isinstance(record.seed, bool) or not isinstance(record.seed, int)):
        return None, f"field 'seed' is {record.seed!r}; expected an integer"
    for key, value in record.metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return None, f"metrics.{key} is {value!r}; expected a number"
    return record, None


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({type(exc).__name__}: {exc})"


def _selected(record: Mapping[str, Any], only: Mapping[str, Collection[str]] | None) -> bool:
    return not only or all(not values or record.get(name) in values for name, values in only.items())


def load_runs(root: Path | str, only: Mapping[str, Collection[str]] | None = None) -> Runs:
    """Read every ``result.json`` under ``root`` (any depth) once. ``only`` keeps the trials whose fields are
    among the given values, e.g. ``{"method": {"resnet", "focal"}, "dataset": {"retinamnist"}}``. A result
    that is not valid JSON or lacks what a row needs is listed in ``unreadable`` (with its trial, from
    ``trial.json``), never dropped silently."""
    import polars as pl

    root = Path(root)
    records, folders, unreadable = [], [], []
    for path in sorted(root.rglob("result.json")):
        payload, problem = _read_json(path)
        record = None
        if problem is None:
            record, problem = parse_record(payload, path)
        if problem is not None:
            trial, _ = _read_json(path.parent / "trial.json")
            trial = trial if isinstance(trial, dict) else {}
            if _selected(trial, only):
                unreadable.append(Unreadable(path, problem, trial))
            continue
        if not _selected(record, only):
            continue
        records.append(record)
        folders.append(path.parent)
    experiments = []
    for path in sorted(root.rglob(EXPERIMENT_FILE)):
        payload, _ = _read_json(path)
        if isinstance(payload, dict):
            experiments.append(payload)
    rows = []
    for i, (record, folder) in enumerate(zip(records, folders)):
        row = {"row": i, "key": record.key, "experiment": record.experiment, "dataset": record.dataset,
               "method": record.method, "sampler": record.sampler or "-", "seed": record.seed,
               "profile": record.profile, "status": record.status, "harness_version": record.harness_version or None,
               "finished": record.finished, "params": record.params, "fit_seconds": record.fit_seconds,
               "path": str(folder)}
        for name, value in record.metrics.items():
            row[f"metric.{name}"] = value
        for name, value in record.latency.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"latency.{name}"] = value
        rows.append(row)
    table = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return Runs(root, records, folders, unreadable, experiments, table)


def read_predictions(folder: Path | str):
    """A trial's ``predictions.parquet`` (polars; ``index``, optional ``image_id``, ``label``, ``pred``,
    ``prob_*``), or None when there is none."""
    import polars as pl

    file = Path(folder) / PREDICTIONS_FILE
    if not file.exists():
        return None
    return pl.read_parquet(file)


def read_curve(folder: Path | str, record: Mapping[str, Any]) -> tuple[list[dict] | None, str | None]:
    """A trial's learning curve (``curve.json``: the per-epoch records it reported) and, when it exists but
    cannot be used, what is wrong with it."""
    name = record.get("curve") or CURVE_FILE
    path = Path(folder) / str(name)
    if Path(str(name)).is_absolute() or ".." in Path(str(name)).parts:
        return None, f"{record.get('key', folder)}: curve file {name!r} is not inside the trial folder"
    if not path.exists():
        return None, None
    payload, problem = _read_json(path)
    if problem is None and not (isinstance(payload, list) and all(isinstance(r, dict) for r in payload)):
        problem = "expected a JSON list of per-epoch records"
    if problem is not None:
        return None, f"{path}: {problem}"
    return payload, None
