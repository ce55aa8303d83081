"""The result record of one trial: what ``result.json`` holds, as one typed, versioned dataclass.

The runner builds a :class:`TrialResult`, the store writes it (``to_dict``) and reads it back
(``from_dict``), ``trial_finished`` observers receive it, and the leaderboard, statistics and report read
its fields. Nothing else builds a result by hand (tests use ``tests/factories.py``).

Schema history:

- 1: the plain dict ``harness/runner.py`` wrote before the layout change; the same field names, each
  optional. ``from_dict`` reads it, so a runs folder written before still loads, resumes and reports.
- 2: this record. New fields: ``data_fingerprint``, ``warnings``, ``curve``, ``notes`` (already written by
  late schema-1 runners) and ``model`` (what the trial saved under ``trial_dir/model/``). Every field is
  written, absent values as ``null`` / empty. Later additions within schema 2 (optional, ``null`` when absent,
  so older readers drop them and older records read as unset): ``bench`` (the latest ``harness bench``).

For code written against the schema-1 dict (a third-party ``trial_finished`` observer doing
``result["method"]`` or ``result.get("metrics")``), the record also answers read-only item access by field
name. New code uses the attributes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

RESULT_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"  # Ctrl-C (or SystemExit) during the trial: recorded, then re-raised
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_INTERRUPTED)

MODEL_DIR = "model"  # trial_dir / MODEL_DIR holds what the predictor needs (see ``TrialResult.model``)
DEFAULT_DATASET = "synthetic"  # `harness run --datasets` default: the built-in procedural dataset (needs no files)
DEFAULT_SAMPLER = "uniform"  # `--samplers` default; what a method with uses_sampler=False gets from ctx.make_sampler
NO_SAMPLER = "-"  # the ``sampler`` of a trial whose method takes none (``uses_sampler=False``), whatever --samplers said

_REQUIRED = ("key", "method", "dataset", "status")  # a record without these cannot be placed in a table


@dataclass
class TrialResult:
    """One trial's result (``runs/<experiment>/<key>/result.json``).

    Identity (what ran) comes from the :class:`harness.run.trial.Trial`; the rest is filled in as the trial
    runs. ``status`` is ``ok`` only when the method fitted, its probabilities were valid and every headline
    metric was computed.
    """

    # -- what ran ---------------------------------------------------------------------------------
    key: str
    method: str
    dataset: str
    status: str
    experiment: str = ""
    sampler: str = ""
    seed: int | None = None
    profile: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the method's resolved config
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the dataset's resolved options
    harness_version: str = ""
    git_commit: str = ""
    schema: int = RESULT_SCHEMA
    # -- when and where ---------------------------------------------------------------------------
    started: str | None = None  # ISO 8601, UTC
    finished: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)  # platform, processor, cpu_count, torch, device, gpu
    # -- what went wrong --------------------------------------------------------------------------
    error: str | None = None  # "ExceptionType: message" of a failed trial
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. the data protocol differs from the paper's
    # -- the data ---------------------------------------------------------------------------------
    data_fingerprint: str | None = None  # DataSplits.fingerprint: ties the result to the data it came from
    num_classes: int | None = None
    classes: list[str] = field(default_factory=list)
    n_train: int | None = None
    n_test: int | None = None
    protocol: str | None = None  # the split protocol the dataset used
    # -- the outcome ------------------------------------------------------------------------------
    metrics: dict[str, float | None] = field(default_factory=dict)  # {metric: value} on the full test split
    metric_errors: dict[str, str] = field(default_factory=dict)  # {metric: why it could not be computed}
    params: int | None = None  # parameters of the predictor's module
    latency: dict[str, Any] = field(default_factory=dict)  # ms_per_image_b1, ms_per_image_b64, onnx_..., threads
    fit_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # load_seconds, predict_seconds, ..., cpu_seconds (rounded)
    total_seconds: float | None = None
    curve: str | None = None  # file name (in the trial folder) of the learning curve, the ctx.report records
    notes: dict[str, Any] = field(default_factory=dict)  # what the method recorded with ctx.note(...)
    explanations: list[str] = field(default_factory=list)  # paths (relative to the trial folder) of maps
    explain_error: str | None = None
    observer_errors: list[str] = field(default_factory=list)  # trial_reported / trial_finished observers that raised
    # What the trial saved under trial_dir/model/ (None: nothing, e.g. --no-save-model or a failed trial):
    # {"dir": "model", "files": {name: bytes}, "bytes": total, "onnx": bool, ...}.
    model: dict[str, Any] | None = None
    # The latest `harness bench` of the kept model (None: never benched): the latency keys of ``latency``,
    # timed with nothing else of the harness running, plus "source": "bench", "benched_at", threads, provider,
    # hardware and load average. Every bench run is kept in trial_dir/bench.json. See ``latency_of_record``.
    bench: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise HarnessError(f"result {self.key!r}: status must be one of {', '.join(STATUSES)}; "
                               f"found {self.status!r}")

    # -- reading ----------------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def metric(self, name: str) -> float | None:
        """The value of one metric (None when it is missing or could not be computed)."""
        return self.metrics.get(name)

    def __getitem__(self, name: str) -> Any:
        """Read-only access by field name, for code written against the schema-1 dict."""
        if name not in _FIELD_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """``record.get("metrics")`` as on the schema-1 dict: the field, or ``default`` when it is unset."""
        if name not in _FIELD_NAMES:
            return default
        value = getattr(self, name)
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        return name in _FIELD_NAMES and getattr(self, name) is not None

    # -- (de)serialising --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (``json.dumps(result.to_dict())``), in declaration order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "result") -> TrialResult:
        """Read a record of schema 1 or 2. Keys this version does not know are dropped; a record without a
        key, method, dataset or status, or of a newer schema, is a :class:`HarnessError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise HarnessError(f"{where}: expected a JSON object (a trial result); found {type(data).__name__}")
        schema = data.get("schema", 1)
        if schema not in READABLE_SCHEMAS:
            raise HarnessError(
                f"{where}: result schema {schema!r} is not one this harness reads ({', '.join(map(str, READABLE_SCHEMAS))}); "
                f"it was written by a newer harness: upgrade harness to read it"
            )
        missing = [name for name in _REQUIRED if not data.get(name)]
        if missing:
            raise HarnessError(f"{where}: not a trial result: {', '.join(missing)} missing (fields found: "
                               f"{', '.join(sorted(map(str, data))) or 'none'})")
        values = {name: data[name] for name in _FIELD_NAMES if name in data and data[name] is not None}
        values["schema"] = RESULT_SCHEMA  # read into the current record: written back as schema 2
        for name, kind in _CONTAINERS.items():
            if name in values and not isinstance(values[name], kind):
                raise HarnessError(f"{where}: field {name!r} must be a {kind.__name__}; found {values[name]!r}")
        if values["status"] not in STATUSES:
            raise HarnessError(f"{where}: status must be one of {', '.join(STATUSES)}; found {values['status']!r}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise HarnessError(f"{where}: malformed trial result: {exc}") from None

    @classmethod
    def read(cls, path: Path | str) -> TrialResult:
        """Read ``result.json``; a file that is not JSON or not a trial result is a HarnessError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, where=str(path))


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrialResult))
_CONTAINERS = {  # container fields and their JSON type (checked when reading)
    **dict.fromkeys(("config", "dataset_options", "hardware", "metrics", "metric_errors", "latency", "timings",
                     "notes", "model", "bench"), dict),
    **dict.fromkeys(("warnings", "classes", "explanations", "observer_errors"), list),
}


LATENCY_SOURCES = {
    "bench": "re-timed by `harness bench`, one trial at a time with nothing else of the harness running",
    "trial": "timed inside the trial, after fit (other trials may have shared the cores)",
}


def latency_of_record(result: Mapping[str, Any] | TrialResult) -> tuple[dict[str, Any], str | None]:
    """``(latency, source)`` a table shows for a result (a :class:`TrialResult` or its JSON dict): the latest
    ``harness bench`` figures when the trial was benched (source ``"bench"``), else the figures timed inside the
    trial (``"trial"``), else ``({}, None)``. :data:`LATENCY_SOURCES` says what each source means."""
    bench = result.get("bench") or {}
    if bench.get("ms_per_image_b1") is not None:
        return dict(bench), "bench"
    latency = result.get("latency") or {}
    return (dict(latency), "trial") if latency else ({}, None)


def _plain(value: Any) -> Any:
    """Tuples to lists, paths to strings, numpy scalars to Python numbers (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()
    return value
