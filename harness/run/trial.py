"""Trials: plain data, and the experiment matrix that expands into them.

A :class:`Trial` is picklable, hashable and printable. Its key is a hash of everything that changes
its result: the method and its resolved config, the dataset and its resolved options (size, split
protocol, ...), the sampler, the seed, the profile and the harness version. Runs are resumable because
a trial whose result exists under its key is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import __version__
from harness.contract.result import NO_SAMPLER
from harness.contract.specs import DatasetRequest, DataSplits
from harness.errors import HarnessError
from harness.registry import Registry
from harness.run.config import build_dataclass, config_from_dict, config_to_dict, resolve_method_config
from harness.run.settings import DEFAULT_SAMPLER, RunSettings, check_seed


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Trial:
    method: str
    dataset: str
    sampler: str
    seed: int
    profile: str
    method_config: tuple[tuple[str, Any], ...]  # sorted items, so the trial stays hashable
    dataset_options: tuple[tuple[str, Any], ...]
    experiment: str = "default"
    version: str = __version__

    @property
    def config(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.method_config}

    @property
    def options(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.dataset_options}

    @property
    def key(self) -> str:
        payload = {
            "method": self.method,
            "config": self.config,
            "dataset": self.dataset,
            # An option left at None is not part of the key, so a plugin may add an optional option
            # without invalidating results already stored under the old key.
            "dataset_options": {k: v for k, v in self.options.items() if v is not None},
            "sampler": self.sampler,
            "seed": self.seed,
            "profile": self.profile,
            "version": self.version,
        }
        digest = hashlib.sha256(_canonical(payload).encode()).hexdigest()[:12]
        return f"{self.method}-{self.dataset}-{self.sampler if self.sampler != NO_SAMPLER else 'none'}-s{self.seed}-{digest}"

    def label(self) -> str:
        return f"{self.method} · {self.dataset} · {self.sampler} · seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method_config"] = self.config
        out["dataset_options"] = self.options
        out["key"] = self.key
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        return cls(
            method=data["method"],
            dataset=data["dataset"],
            sampler=data["sampler"],
            seed=int(data["seed"]),
            profile=data["profile"],
            method_config=_freeze(data["method_config"]),
            dataset_options=_freeze(data["dataset_options"]),
            experiment=data.get("experiment", "default"),
            version=data.get("version", __version__),
        )


def _freeze(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


@dataclass(frozen=True)
class Experiment:
    """The matrix ``methods x datasets x samplers x seeds`` with its overrides."""

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    samplers: tuple[str, ...] = (DEFAULT_SAMPLER,)
    seeds: tuple[int, ...] = (0,)
    profile: str = "cpu"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    name: str = "default"


def load_data(trial: Trial, registry: Registry, settings: RunSettings) -> DataSplits:
    """The data ``trial`` trains and is tested on: its dataset plugin's ``load`` with the trial's options and
    seed, the settings' data and cache folders."""
    spec = registry.get("datasets", trial.dataset)
    options = config_from_dict(spec.options, trial.options)
    request = DatasetRequest(
        options=options, seed=trial.seed, data_dir=settings.resolved_data_dir(),
        cache_dir=settings.resolved_cache_dir(),
    )
    return spec.load_fn()(request)


def resolve_dataset_options(registry: Registry, dataset: str, overrides: Mapping[str, Mapping[str, Any]],
                            profile: str = "cpu"):
    """The dataset's option defaults, then its profile's, then ``dataset.*``, then ``<dataset>.*``."""
    spec = registry.get("datasets", dataset)
    values = {**spec.profiles.get(profile, {}), **overrides.get("dataset", {}), **overrides.get(dataset, {})}
    options = build_dataclass(spec.options, values, f"dataset {dataset!r}")
    if getattr(options, "split", None) is not None and options.split not in spec.protocols:
        raise HarnessError(
            f"dataset {dataset!r} has no split protocol {options.split!r}; "
            f"it offers: {', '.join(spec.protocols)}"
        )
    return options


def expand(experiment: Experiment, registry: Registry) -> list[Trial]:
    """Every trial of the experiment; unknown names and bad overrides are errors before anything runs."""
    for kind, names in (("methods", experiment.methods), ("datasets", experiment.datasets),
                        ("samplers", experiment.samplers)):
        if not names:
            raise HarnessError(f"no {kind} to run: pass at least one (see `harness list {kind}`)")
        for name in names:
            registry.get(kind, name)  # unknown, or registered by two plugins: an error naming them
    registry.check_conflicts("metrics")  # every metric is computed: two plugins claiming one name is ambiguous
    if not experiment.seeds:
        raise HarnessError("no seeds to run: pass at least one (--seeds 0,1,2)")
    for seed in experiment.seeds:
        check_seed(seed)
    known_scopes = {"dataset", *registry.methods, *registry.datasets}
    for scope in experiment.overrides:
        if scope not in known_scopes:
            raise HarnessError(
                f"--set scope {scope!r} is neither a method, a dataset nor 'dataset'. "
                f"Methods: {', '.join(sorted(registry.methods))}; datasets: {', '.join(sorted(registry.datasets))}."
            )
    trials: list[Trial] = []
    for dataset in experiment.datasets:
        options = config_to_dict(resolve_dataset_options(registry, dataset, experiment.overrides,
                                                                   experiment.profile))
        for method in experiment.methods:
            spec = registry.get("methods", method)
            config = resolve_method_config(spec, experiment.profile, experiment.overrides.get(method, {}),
                                           dataset)
            samplers = experiment.samplers if spec.uses_sampler else (NO_SAMPLER,)
            for sampler in samplers:
                for seed in experiment.seeds:
                    trials.append(Trial(
                        method=method, dataset=dataset, sampler=sampler, seed=int(seed),
                        profile=experiment.profile, method_config=_freeze(config),
                        dataset_options=_freeze(options), experiment=experiment.name,
                    ))
    return trials
