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

RESULT_SCHEMA = 1


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
        return self.trial_dir(key) / "result.json"

    def load_result(self, key: str) -> dict | None:
        path = self.result_path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_done(self, key: str) -> bool:
        result = self.load_result(key)
        return bool(result) and result.get("status") == "ok"


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
