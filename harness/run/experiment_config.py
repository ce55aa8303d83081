"""Experiment files: ``harness run --config experiment.toml``.

One TOML file names a whole experiment; every key is optional and command-line flags given explicitly
override the file::

    experiment = "retinamnist-baselines"   # results go to RUNS_DIR/<experiment>  (alias: name)
    methods = ["resnet"]                   # a list, or a comma-separated string
    datasets = ["retinamnist"]
    samplers = ["uniform", "balanced"]
    seeds = [0, 1, 2]                      # a list of integers, or "0,1,2"
    profile = "cpu"                        # smoke | cpu | paper
    data_dir = "../../../shared/data"      # relative paths are relative to this file
    # runs_dir, executor, device, threads, no_onnx, no_save_model, cpus_per_trial, gpus_per_trial,
    # max_concurrent, address, ray_storage: as the flags of the same name
    plugins = ["mypkg.myplugin"]           # loaded in addition to --plugin

    [overrides.resnet]                     # the same as --set resnet.lr=0.001 --set resnet.epochs=30
    lr = 0.001
    epochs = 30

    [overrides.dataset]                    # every dataset of the run (--set dataset.size=64)
    size = 64

Overrides merge key by key: ``--set resnet.lr=3e-4`` replaces the file's ``resnet.lr`` and keeps its
``resnet.epochs``.
"""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

LIST_KEYS = ("methods", "datasets", "samplers")
PATH_KEYS = ("data_dir", "runs_dir", "ray_storage")
SCALAR_KEYS = ("profile", "experiment", "executor", "device", "threads", "no_onnx", "no_save_model",
               "cpus_per_trial", "gpus_per_trial", "max_concurrent", "address")
ALIASES = {"name": "experiment", "method": "methods", "dataset": "datasets", "sampler": "samplers"}
KNOWN_KEYS = (*LIST_KEYS, "seeds", *PATH_KEYS, *SCALAR_KEYS, "plugins", "overrides")


@dataclass(frozen=True)
class ExperimentFile:
    """A parsed experiment file.

    ``options`` maps ``harness run`` parameter names to values in the form the flag takes (lists as
    comma-separated strings, paths as absolute :class:`Path`); ``overrides`` is ``{scope: {key: value}}``.
    """

    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()


def _names(value: Any, key: str, where: str) -> str:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value if v.strip()]
    else:
        raise HarnessError(f"{where}: {key} must be a list of names or a comma-separated string; found {value!r}")
    if not items:
        raise HarnessError(f"{where}: {key} is empty")
    return ",".join(items)


def _seeds(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise HarnessError(f"{where}: seeds must be integers; found {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        parts = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        parts = value
    else:
        raise HarnessError(f"{where}: seeds must be a list of integers like [0, 1, 2]; found {value!r}")
    seeds = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise HarnessError(f"{where}: seeds must be integers; found {part!r}")
        try:
            seeds.append(int(part))
        except ValueError:
            raise HarnessError(f"{where}: seeds must be integers; found {part!r}") from None
    if not seeds:
        raise HarnessError(f"{where}: seeds is empty")
    return ",".join(str(s) for s in seeds)


def parse_experiment(data: Mapping[str, Any], base_dir: Path, where: str = "experiment file") -> ExperimentFile:
    """Validate and normalise the (already TOML-decoded) contents of an experiment file."""
    options: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    plugins: tuple[str, ...] = ()
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if key in options or (key == "overrides" and overrides):
            raise HarnessError(f"{where}: {raw_key!r} is given twice (as {key!r} and an alias)")
        if key in LIST_KEYS:
            options[key] = _names(value, raw_key, where)
        elif key == "seeds":
            options[key] = _seeds(value, where)
        elif key in PATH_KEYS:
            if not isinstance(value, str) or not value:
                raise HarnessError(f"{where}: {raw_key} must be a path string; found {value!r}")
            path = Path(value).expanduser()
            options[key] = path if path.is_absolute() else (base_dir / path).resolve()
        elif key in SCALAR_KEYS:
            if isinstance(value, (dict, list)):
                raise HarnessError(f"{where}: {raw_key} must be a single value; found {value!r}")
            options[key] = value
        elif key == "plugins":
            plugins = tuple(_names(value, raw_key, where).split(","))
        elif key == "overrides":
            overrides = _overrides(value, where)
        else:
            raise HarnessError(
                f"{where}: unknown key {raw_key!r}. Known keys: {', '.join(KNOWN_KEYS)} "
                f"(and [overrides.SCOPE] tables, e.g. [overrides.resnet] lr = 0.001)."
            )
    return ExperimentFile(path=base_dir, options=options, overrides=overrides, plugins=plugins)


def _overrides(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: overrides must be tables like [overrides.resnet]; found {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for scope, table in value.items():
        if not isinstance(table, dict):
            raise HarnessError(
                f"{where}: [overrides.{scope}] must be a table of KEY = VALUE lines; found {table!r} "
                f"(write `[overrides.{scope}]` then `lr = 0.001`, not `overrides.{scope} = ...`)"
            )
        for key, item in table.items():
            if isinstance(item, dict):
                raise HarnessError(f"{where}: overrides.{scope}.{key} must be a value, not a table")
        out[scope] = dict(table)
    return out


def load_experiment(path: Path | str) -> ExperimentFile:
    """Read and validate an experiment TOML file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise HarnessError(f"cannot read experiment file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"experiment file {path} is not valid TOML: {exc}") from None
    parsed = parse_experiment(data, path.resolve().parent, where=str(path))
    return ExperimentFile(path=path.resolve(), options=parsed.options, overrides=parsed.overrides,
                          plugins=parsed.plugins)


def merge_options(cli_values: Mapping[str, Any], explicit: Iterable[str], file: ExperimentFile) -> dict[str, Any]:
    """The file's values for every option not given explicitly on the command line."""
    explicit = set(explicit)
    merged = dict(cli_values)
    for key, value in file.options.items():
        if key not in explicit:
            merged[key] = value
    return merged


def merge_overrides(file_overrides: Mapping[str, Mapping[str, Any]],
                    cli_overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``--set`` values on top of the file's, key by key."""
    merged = {scope: dict(values) for scope, values in file_overrides.items()}
    for scope, values in cli_overrides.items():
        merged.setdefault(scope, {}).update(values)
    return merged


# ---------------------------------------------------------------------------------------- writing

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    """One TOML value: strings, booleans, integers, floats, paths and (nested) lists of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise HarnessError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def dump_experiment(values: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]],
                    header: Iterable[str] = ()) -> str:
    """An experiment file's text (the inverse of :func:`load_experiment`); ``header`` lines become comments."""
    lines = [f"# {line}" if line else "#" for line in header]
    if lines:
        lines.append("")
    for key, value in values.items():
        if value is not None:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for scope, table in overrides.items():
        if not table:
            continue
        lines.append("")
        lines.append(f"[overrides.{toml_key(scope)}]")
        for key, value in table.items():
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
