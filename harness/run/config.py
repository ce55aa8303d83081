"""Resolving configs: a spec's dataclass defaults, then its profile, then ``--set`` overrides.

``--set`` takes ``SCOPE.KEY=VALUE`` where SCOPE is a method name (``resnet.lr=3e-4``), a dataset name
(``retinamnist.size=64``), or ``dataset`` for every dataset of the run (``dataset.split=iois``).
VALUE is read as TOML (``3``, ``0.5``, ``true``, ``"text"``, ``[1, 2]``); anything that is not valid
TOML is taken as a plain string (``resnet.optimizer=sgd``).
"""

from __future__ import annotations

import dataclasses

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

from harness.contract.specs import PROFILES, MethodSpec
from harness.errors import HarnessError


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["resnet.lr=0.1", "dataset.size=64"]`` -> ``{"resnet": {"lr": 0.1}, "dataset": {"size": 64}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        scope, dot, name = key.strip().partition(".")
        if not sep or not dot or not scope or not name:
            raise HarnessError(
                f"--set expects SCOPE.KEY=VALUE (e.g. resnet.lr=0.001 or dataset.size=64); found {item!r}"
            )
        out.setdefault(scope, {})[name] = parse_value(value.strip())
    return out


def _field_types(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check (and gently convert) an override against the dataclass field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except HarnessError as exc:
                errors.append(str(exc))
        raise HarnessError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise HarnessError(f"{where}: expected true or false, found {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise HarnessError(f"{where}: expected an integer, found {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HarnessError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            return str(value)
        return value
    if origin is tuple or annotation is tuple:
        if not isinstance(value, (list, tuple)):
            raise HarnessError(f"{where}: expected a list like [1, 2], found {value!r}")
        return tuple(value)
    return value


def build_dataclass(cls: type, values: Mapping[str, Any], what: str):
    """An instance of config dataclass ``cls`` with ``values`` applied; unknown keys are an error."""
    known = _field_types(cls)
    unknown = [k for k in values if k not in known]
    if unknown:
        raise HarnessError(
            f"{what} has no config key {', '.join(repr(k) for k in unknown)}. "
            f"Its keys are: {', '.join(known)}."
        )
    coerced = {k: _coerce(v, known[k], f"{what}.{k}") for k, v in values.items()}
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{what}: invalid config: {exc}") from None


def resolve_method_config(spec: MethodSpec, profile: str, overrides: Mapping[str, Any],
                          dataset: str | None = None) -> dict[str, Any]:
    """Defaults, then ``spec.profiles[profile]``, then the profile's settings for ``dataset``
    (``spec.dataset_profiles``), then ``overrides``: a plain dict (JSON-able). An ``epochs`` override without
    a ``steps`` one turns a profile's step budget (``steps`` > 0) off, so ``--set resnet.epochs=20`` means 20
    epochs under every profile."""
    if profile not in PROFILES:
        raise HarnessError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    values = dict(spec.profiles.get(profile, {}))
    per_dataset = spec.dataset_profiles.get(profile, {}).get(dataset, {}) if dataset else {}
    values.update({k: v for k, v in per_dataset.items() if not k.startswith("dataset.")})
    values.update(overrides)
    if "epochs" in overrides and "steps" not in overrides and "steps" in spec.config_keys():
        values["steps"] = 0  # --set m.epochs=N asks for an epoch budget: it replaces a profile's step budget
    config = build_dataclass(spec.config, values, f"method {spec.name!r}")
    return config_to_dict(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(cls: type, values: Mapping[str, Any]):
    return build_dataclass(cls, values, cls.__name__)


def data_protocol_warnings(spec: MethodSpec, profile: str, dataset: str, options: Mapping[str, Any]) -> list[str]:
    """Where a trial's dataset options differ from what the method's profile says its paper used
    (``"dataset.OPTION"`` keys of ``spec.dataset_profiles``): one sentence each."""
    expected = spec.dataset_profiles.get(profile, {}).get(dataset, {})
    out = []
    for key, value in expected.items():
        if key.startswith("dataset."):
            option = key[len("dataset."):]
            if options.get(option) != value:
                out.append(f"{spec.name} ({profile} profile) on {dataset}: the paper used {option}={value!r}, this "
                           f"trial has {option}={options.get(option)!r} (set --set {dataset}.{option}={value!r} to "
                           "match it)")
    return out
