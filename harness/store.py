"""The result store: ``runs/<experiment>/<trial-key>/{trial.json, result.json, predictions.parquet}``.

Every write is atomic (a temporary file in the same folder, then ``os.replace``), so an interrupted run
never leaves a half-written result. A trial is done when its ``result.json`` says ``status: ok``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.contract.result import RESULT_SCHEMA, TrialResult
from harness.errors import HarnessError

RESULT_FILE = "result.json"
TRIAL_FILE = "trial.json"
EXPERIMENT_FILE = "experiment.json"  # RUNS_DIR/EXPERIMENT/experiment.json: the commands that produced it

__all__ = ["RESULT_SCHEMA", "ResultStore", "TrialResult", "atomic_write_json", "iter_results", "write_result"]


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


def iter_results(root: Path | str, only: Mapping[str, Collection[str]] | None = None
                 ) -> Iterator[tuple[Path, dict]]:
    """Every ``result.json`` under ``root`` (any depth), with its folder. ``only`` keeps the results whose
    fields are among the given values, e.g. ``{"method": {"resnet", "focal"}, "dataset": {"retinamnist"}}``."""
    for path in sorted(Path(root).rglob("result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if only and any(values and result.get(field) not in values for field, values in only.items()):
            continue
        yield path.parent, result
