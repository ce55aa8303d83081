"""The result store: ``runs/<experiment>/<trial-key>/{trial.json, result.json, predictions.parquet}``.

The runs folder is the user's data, so the store guards it:

- every write is atomic (a temporary file in the same folder, then ``os.replace``): an interrupted run never
  leaves a half-written result; a write that fails (disk full, read-only folder) is a :class:`StoreError`
  naming the file and what to do, and the file it would have replaced is untouched;
- every folder it writes is one checked name below the runs folder (:func:`check_name`, :func:`child`): an
  experiment, method or dataset name with ``/`` or ``..`` never writes outside ``--runs-dir``;
- one process at a time works on a trial (:meth:`ResultStore.lock`, an ``fcntl.flock`` on
  ``<trial-key>/.lock``, released by the kernel when the process ends, however it ends);
- a finished result is never overwritten: a trial that runs again first moves what its folder holds to
  ``<trial-key>/superseded/<time>-<why>/`` (:meth:`ResultStore.set_aside`, ``result.json`` renamed
  ``result.superseded.json`` so that no table counts it).

A trial is done when its ``result.json`` says ``status: ok`` (and, for the executors, its data fingerprint
matches the data: :mod:`harness.run.resume`).

The read side (``load_runs``) reads a runs folder once into one table that the leaderboard, the statistics
and the report share; a result that cannot be read is named with what is wrong, never dropped silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; trials are not guarded against a second process
    fcntl = None

from harness.contract.result import RESULT_SCHEMA, TrialResult, latency_of_record
from harness.contract.specs import check_name
from harness.errors import HarnessError

RESULT_FILE = "result.json"
TRIAL_FILE = "trial.json"
EXPERIMENT_FILE = "experiment.json"  # RUNS_DIR/EXPERIMENT/experiment.json: the commands that produced it
LOCK_FILE = ".lock"  # RUNS_DIR/EXPERIMENT/<key>/.lock: held (flock) by the process running the trial
SUPERSEDED_DIR = "superseded"  # <key>/superseded/<time>-<why>/: what a re-run trial's folder held before
SUPERSEDED_RESULT = "result.superseded.json"
LOCK_PATIENCE_S = 0.25  # how long taking a trial's lock retries before the trial counts as held elsewhere

__all__ = ["RESULT_SCHEMA", "ResultStore", "Runs", "StoreError", "TrialResult", "TrialSkipped", "Unreadable",
           "atomic_write_json", "check_name", "child", "load_runs", "prepare_root", "write_result"]


class StoreError(HarnessError):
    """A runs folder that cannot be written (disk full, read-only, a file in the way). The command stops: the
    next trial would fail the same way. What was written before is intact."""


class TrialSkipped(Exception):
    """This process does not run the trial: another process holds its lock, or finished it meanwhile."""


def _advice(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC or exc.errno == getattr(errno, "EDQUOT", None):
        return "the disk (or your quota) is full: free space, or pass a --runs-dir on another disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only for you: make it writable, or pass a --runs-dir you can write to"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way where a folder should be: move it, or pass another --runs-dir"
    return "check the folder, or pass another --runs-dir"


def store_error(exc: OSError, path: Path, doing: str = "write") -> StoreError:
    """The :class:`StoreError` for an ``OSError`` met while ``doing`` ``path``."""
    reason = exc.strerror or str(exc)
    return StoreError(f"cannot {doing} {path}: {reason} [errno {exc.errno}]; {_advice(exc)}. Results already "
                      f"written are intact; run the same command again to resume.")


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; it replaces ``path`` when the block ends without error and is
    removed otherwise. An ``OSError`` is a :class:`StoreError` (``path`` untouched)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise store_error(exc, path) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk first); an ``OSError`` is a :class:`StoreError`."""
    with _atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame) -> None:
    """Write a polars DataFrame atomically (an ``OSError`` is a :class:`StoreError`)."""
    with _atomic_target(path) as tmp:
        frame.write_parquet(tmp)


# ------------------------------------------------------------------------------------ names and paths


def child(root: Path | str, name: str, what: str) -> Path:
    """``root / name`` after :func:`check_name`, checked to resolve inside ``root`` (a link named like a trial
    that points elsewhere is refused)."""
    root = Path(root)
    path = root / check_name(name, what)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise HarnessError(f"{what} {name!r}: {path} resolves to {real}, outside {root}; the store writes only "
                           f"inside the runs folder. Remove the link {path}.")
    return path


def prepare_root(root: Path | str, what: str = "--runs-dir") -> Path:
    """Create ``root`` (and its parents) and check that files can be written in it, before any trial runs:
    a path that is a file, a read-only folder or a full disk is one :class:`StoreError` each."""
    root = Path(root)
    for parent in (root, *root.parents):
        if parent.exists() and not parent.is_dir():
            raise StoreError(f"{what} {root}: {parent} is a file, not a folder; the results go in a folder. Pass "
                             f"another --runs-dir (or --experiment), or move the file.")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise store_error(exc, root, "write in") from exc
    return root


# ----------------------------------------------------------------------------------------- the store


class ResultStore:
    """Trials of one experiment under ``root`` (``runs/<experiment>``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @classmethod
    def of(cls, runs_dir: Path | str, experiment: str) -> ResultStore:
        """The store of ``experiment`` under ``runs_dir`` (the experiment name checked: one folder name)."""
        return cls(child(runs_dir, experiment, "experiment name"))

    def trial_dir(self, key: str) -> Path:
        return child(self.root, key, "trial key")

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

    def read(self, key: str) -> tuple[TrialResult | None, str | None]:
        """``(result, None)``, ``(None, None)`` when there is no ``result.json``, or ``(None, why)`` when there is
        one that cannot be read (not JSON, not a trial result): ``why`` names the file and the problem."""
        path = self.result_path(key)
        if not path.exists():
            return None, None
        try:
            return TrialResult.read(path), None
        except HarnessError as exc:
            return None, str(exc)

    def is_done(self, key: str) -> bool:
        result = self.load_result(key)
        return result is not None and result.ok

    # -- one process per trial -------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[Path]:
        """Hold trial ``key`` for this process (``flock`` on ``<key>/.lock``, with the owner's pid, host and
        start time written in it); raises :class:`TrialSkipped` naming the owner when another process holds
        it. The kernel releases the lock when the process ends, so a killed run leaves no stale lock."""
        folder = self.trial_dir(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(exc, folder / LOCK_FILE) from exc
        try:
            if fcntl is not None:
                if not _try_flock(fd, LOCK_PATIENCE_S):
                    raise TrialSkipped(f"in progress in another process ({_owner(fd)}); not run here. Its "
                                       f"result will be in {folder} when it finishes.")
                owner = {"pid": os.getpid(), "host": socket.gethostname(),
                         "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                with contextlib.suppress(OSError):  # who holds it is for messages only
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(owner).encode(), 0)
            yield folder
        finally:
            os.close(fd)  # releases the flock

    def holder(self, key: str) -> str | None:
        """Who holds trial ``key`` (``"pid 123 on host, since ..."``), or None when nobody does. A probe: it
        takes the lock for an instant only when it is free, writes nothing, and a process locking the trial
        meanwhile waits for it (:data:`LOCK_PATIENCE_S`)."""
        path = self.trial_dir(key) / LOCK_FILE
        if fcntl is None or not path.exists():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if _try_flock(fd, 0):
                return None
            return _owner(fd)
        finally:
            os.close(fd)

    # -- nothing finished is overwritten ----------------------------------------------------------

    def set_aside(self, key: str, why: str) -> Path | None:
        """Move what trial ``key``'s folder holds (but its lock) to ``<key>/superseded/<UTC time>-<why>/``, with
        ``result.json`` renamed ``result.superseded.json``; returns that folder (None: nothing to move). Called
        with the trial's lock held, before the trial runs again."""
        folder = self.trial_dir(key)
        items = [p for p in folder.iterdir() if p.name not in (LOCK_FILE, SUPERSEDED_DIR)] if folder.is_dir() else []
        if not items:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = folder / SUPERSEDED_DIR / f"{stamp}-{check_name(why, 'reason')}"
        try:
            target.mkdir(parents=True)
            for item in items:
                os.replace(item, target / (SUPERSEDED_RESULT if item.name == RESULT_FILE else item.name))
        except OSError as exc:
            raise store_error(exc, target, "move the previous result to") from exc
        return target


def _try_flock(fd: int, patience: float) -> bool:
    """Take the exclusive lock on ``fd`` without blocking, retrying for ``patience`` seconds (another process's
    :meth:`ResultStore.holder` probe holds it for an instant); False when it stays held."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _owner(fd: int) -> str:
    """The owner a lock file records, as text."""
    for _ in range(20):  # the owner writes it right after taking the lock
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return f"pid {data.get('pid')} on {data.get('host')}, since {data.get('since')}"
        time.sleep(0.01)
    return "another process"


def read_experiment_record(root: Path) -> dict:
    """``root/experiment.json`` (empty when there is none or it cannot be read)."""
    record, _ = _experiment_record(Path(root) / EXPERIMENT_FILE)
    return record


def _experiment_record(path: Path) -> tuple[dict, str | None]:
    if not path.exists():
        return {}, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    return (data, None) if isinstance(data, dict) else ({}, f"expected a JSON object; found {type(data).__name__}")


def write_experiment_record(root: Path, record: Mapping[str, Any]) -> Path:
    path = Path(root) / EXPERIMENT_FILE
    atomic_write_json(path, dict(record))
    return path


def update_experiment_record(root: Path, update) -> str | None:
    """Read ``root/experiment.json``, write ``update(record)`` back, one process at a time (a blocking ``flock``
    on ``root/.experiment.lock``: two commands on one experiment both keep their command line). A file that
    cannot be read is kept as ``experiment.json.unreadable-<time>`` (not overwritten) and a fresh record is
    started; returns the warning saying so, else None."""
    root = Path(root)
    lock = root / ".experiment.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise store_error(exc, lock) from exc
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        path = root / EXPERIMENT_FILE
        record, problem = _experiment_record(path)
        warning = None
        if problem is not None:
            kept = path.with_name(f"{EXPERIMENT_FILE}.unreadable-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
            try:
                os.replace(path, kept)
            except OSError as exc:
                raise store_error(exc, kept, "keep the unreadable record as") from exc
            warning = (f"{path} could not be read ({problem}); it is kept as {kept.name} and a new record of the "
                       f"commands starts with this one")
        write_experiment_record(root, update(record))
        return warning
    finally:
        os.close(fd)


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
    notices: list[str] = field(default_factory=list)  # a method split into rows by its settings (variant_labels)

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


def _settings(record: TrialResult) -> dict[str, Any]:
    """What makes two trials of one method on one dataset different experiments (not seeds of one)."""
    return {"profile": record.profile, **record.config,
            **{f"dataset.{k}": v for k, v in (record.dataset_options or {}).items()}}


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def variant_labels(records: list[TrialResult]) -> tuple[dict[int, str], list[str]]:
    """Row names for trials of one (dataset, method, sampler) that ran with different settings (config, dataset
    options or profile; say a rerun with ``--set resnet.lr=...`` into the same experiment, or the IOIS protocol's
    ResNet-10-T beside the default ResNet-18): ``resnet [backbone=resnet10t, batch_size=32, crop_scale=0.77, +6 · 3cf9]``, the
    settings that differ within the group, so such trials make separate rows instead of one row that averages
    two experiments as if they were seeds. Returns (indices of ``records`` that need a new name -> the name,
    one notice per such group naming its rows and their seeds)."""
    groups: dict[tuple, dict[str, list[int]]] = {}
    for i, record in enumerate(records):
        ident = json.dumps(_settings(record), sort_keys=True, default=str)
        groups.setdefault((record.dataset, record.method, record.sampler or "-"), {}).setdefault(ident, []).append(i)
    labels: dict[int, str] = {}
    notices: list[str] = []
    for (dataset, method, sampler), variants in sorted(groups.items()):
        if len(variants) < 2:
            continue
        flat = {ident: json.loads(ident) for ident in variants}
        keys = sorted({k for settings in flat.values() for k in settings})
        differing = [k for k in keys
                     if len({json.dumps(settings.get(k), sort_keys=True) for settings in flat.values()}) > 1]
        rows = []
        for ident, members in variants.items():
            parts = [f"{k}={_shown(flat[ident].get(k))}" for k in differing]
            shown = ", ".join(parts[:3])
            if len(parts) > 3:
                shown += f", +{len(parts) - 3} · {hashlib.sha256(ident.encode()).hexdigest()[:4]}"
            for i in members:
                labels[i] = f"{method} [{shown}]"
            seeds = ",".join(sorted({str(records[i].seed) for i in members}, key=lambda v: (len(v), v)))
            rows.append(f"{method} [{shown}] (seeds {seeds}; {', '.join(parts)})")
        notices.append(f"{method} · {sampler} on {dataset} ran with different settings, so it is {len(rows)} rows, "
                       f"each one setting's seeds: {'; '.join(rows)}.")
    return labels, notices


def load_runs(root: Path | str, only: Mapping[str, Collection[str]] | None = None) -> Runs:
    """Read every ``result.json`` under ``root`` (any depth) once. ``only`` keeps the trials whose fields are
    among the given values, e.g. ``{"method": {"resnet", "focal"}, "dataset": {"retinamnist"}}``. A result
    that is not valid JSON or lacks what a row needs is listed in ``unreadable`` (with its trial, from
    ``trial.json``), never dropped silently. Trials of one method, dataset and sampler that ran with different
    settings are named apart (:func:`variant_labels`): a row is one experiment's seeds, never two averaged."""
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
    labels, notices = variant_labels(records)
    records = [dataclasses.replace(r, method=labels[i]) if i in labels else r for i, r in enumerate(records)]
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
        latency, row["latency_source"] = latency_of_record(record)  # harness bench's figures when there are any
        for name, value in latency.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"latency.{name}"] = value
        rows.append(row)
    table = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return Runs(root, records, folders, unreadable, experiments, table, notices)


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
