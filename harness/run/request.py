"""Requests: what ``harness run`` and ``harness tune`` are asked to do, as plain dataclasses.

The CLI builds a request from its flags and the ``--config`` file (flags given explicitly win) and calls
:func:`execute` or :func:`tune`; it only parses and prints. Everything a run needs is checked here, before any
trial starts: names, seeds, device, config and dataset option ranges (through :func:`harness.run.trial.expand`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract.specs import PROFILES
from harness.errors import HarnessError
from harness.registry import Registry
from harness.run.config import parse_overrides
from harness.run.executors import EXECUTORS, RunSummary, get_executor
from harness.run.latency import LatencySettings
from harness.run.settings import (
    DEFAULT_DATASET,
    DEFAULT_SAMPLER,
    RunSettings,
    check_device,
    check_device_available,
    parse_seeds,
)
from harness.run.trial import Experiment, Trial, expand
from harness.store import check_name, child, prepare_root


def names(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``"a, b"`` (or a list) -> ``("a", "b")``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(v.strip() for v in items if v and v.strip())


@dataclass(frozen=True)
class RunRequest:
    """Everything ``harness run`` takes (flags, or keys of an experiment file)."""

    methods: tuple[str, ...] = ()  # empty: every registered method
    datasets: tuple[str, ...] = (DEFAULT_DATASET,)
    samplers: tuple[str, ...] = (DEFAULT_SAMPLER,)
    seeds: tuple[int, ...] = (0,)
    profile: str = "cpu"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data_dir: Path | None = None
    runs_dir: Path = Path("runs")
    experiment: str | None = None  # default: the dataset names joined by "-"
    executor: str = "local"
    device: str = "auto"
    threads: int | None = None
    onnx: bool = True
    save_model: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    ray_storage: Path | None = None
    dry_run: bool = False
    plugins: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise HarnessError(f"--profile must be one of {', '.join(PROFILES)}; found {self.profile!r}")
        if self.executor not in EXECUTORS:
            raise HarnessError(f"--executor must be one of {', '.join(sorted(EXECUTORS))}; found {self.executor!r}")
        check_device(self.device)
        if not self.datasets:
            raise HarnessError("--datasets is empty: name at least one dataset (see `harness list datasets`)")
        if self.experiment is not None:  # one folder below --runs-dir, never a path out of it
            check_name(self.experiment, "experiment name (--experiment, or `experiment` in the experiment file)")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                     plugins: tuple[str, ...] = (), blocked: tuple[str, ...] = ()) -> RunRequest:
        """A request from the ``run`` command's option values (lists as comma-separated strings, ``seeds`` as
        ``"0,1,2"``, ``no_onnx`` / ``no_save_model`` flags); ``overrides`` replaces the parsed ``--set`` items."""
        values = dict(options)
        table = overrides if overrides is not None else parse_overrides(list(values.get("overrides") or ()))
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in fields and v is not None}
        for key in ("methods", "datasets", "samplers"):
            if values.get(key) is not None:
                kwargs[key] = names(values[key])
        if values.get("seeds") is not None:
            kwargs["seeds"] = parse_seeds(values["seeds"]) if isinstance(values["seeds"], str) else tuple(values["seeds"])
        kwargs["overrides"] = table
        kwargs["onnx"] = not values.get("no_onnx", False)
        kwargs["save_model"] = not values.get("no_save_model", False)
        kwargs["plugins"] = tuple(dict.fromkeys([*plugins, *names(values.get("plugins"))]))
        kwargs["blocked"] = tuple(dict.fromkeys([*blocked, *names(values.get("blocked"))]))
        if kwargs.get("runs_dir") is not None:
            kwargs["runs_dir"] = Path(kwargs["runs_dir"])
        return cls(**kwargs)

    @property
    def name(self) -> str:
        return self.experiment or "-".join(self.datasets)

    @property
    def root(self) -> Path:
        """Where the experiment's results go: ``RUNS_DIR/EXPERIMENT`` (the name checked: one folder name)."""
        return child(self.runs_dir, self.name, "experiment name")

    def experiment_for(self, registry: Registry) -> Experiment:
        return Experiment(methods=self.methods or tuple(sorted(registry.methods)), datasets=self.datasets,
                          samplers=self.samplers, seeds=self.seeds, profile=self.profile,
                          overrides={k: dict(v) for k, v in self.overrides.items()}, name=self.name)

    def settings(self) -> RunSettings:
        return RunSettings(runs_dir=Path(self.runs_dir), data_dir=self.data_dir, plugins=self.plugins,
                           blocked=self.blocked, device=self.device, threads=self.threads,
                           latency=LatencySettings(onnx=self.onnx), save_model=self.save_model)

    def executor_options(self):
        """The executor's own options (Ray's placement; ``local`` has none)."""
        if self.executor != "ray":
            return None
        from harness.run.executors.ray import RayOptions

        return RayOptions(cpus_per_trial=self.cpus_per_trial, gpus_per_trial=self.gpus_per_trial,
                          max_concurrent=self.max_concurrent, address=self.address, storage=self.ray_storage)

    def plan(self, registry: Registry) -> tuple[Experiment, list[Trial]]:
        """The experiment and its trials; every name, seed and config value checked (nothing runs)."""
        experiment = self.experiment_for(registry)
        return experiment, expand(experiment, registry)


def execute(request: RunRequest, experiment: Experiment, trials: list[Trial], *, command: str = "",
            out=None) -> RunSummary:
    """Run ``trials`` (from ``request.plan``) with the request's executor; record the command in
    ``experiment.json``. Refuses a device this machine lacks when the trials run here."""
    options = request.executor_options()  # Ray's options are checked even when nothing is left to run
    if request.executor == "local" or request.address is None:  # on a cluster, the workers' devices count
        check_device_available(request.device)
    out = out or sys.stdout
    prepare_root(request.root)  # a file in the way, a read-only folder: said now, before any trial
    warning = record_experiment(request.root, experiment, command)
    if warning:
        print(f"warning: {warning}", file=out, flush=True)
    return get_executor(request.executor)(trials, request.settings(), options, out)


def record_experiment(root: Path, experiment: Experiment, command: str) -> str | None:
    """``RUNS_DIR/EXPERIMENT/experiment.json``: the command lines that produced the experiment (kept across
    resumed or extended runs, and across two commands running at once), for reports to say how to reproduce
    them. Returns a warning when the previous record could not be read (it is kept beside, not overwritten)."""
    from harness import __version__
    from harness.run.runner import git_commit
    from harness.store import update_experiment_record

    def update(previous: dict) -> dict:
        earlier = previous.get("commands")
        commands = [c for c in (earlier if isinstance(earlier, list) else []) if c != command] + [command]
        return {
            "name": experiment.name, "command": command, "commands": commands, "methods": list(experiment.methods),
            "datasets": list(experiment.datasets), "samplers": list(experiment.samplers),
            "seeds": list(experiment.seeds), "profile": experiment.profile, "overrides": experiment.overrides,
            "harness_version": __version__, "git_commit": git_commit(),
        }

    return update_experiment_record(root, update)


@dataclass(frozen=True)
class TuneRequest:
    """Everything ``harness tune`` takes."""

    method: str
    dataset: str
    samples: int = 8
    scheduler: str = "asha"
    metric: str | None = None  # default: val_ + the headline metric
    mode: str = "max"
    profile: str = "cpu"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    search_seed: int = 0
    data_dir: Path | None = None
    out_file: Path | None = None
    run_seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    grace_period: int = 1
    address: str | None = None
    ray_storage: Path | None = None
    plugins: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()

    def __post_init__(self):
        check_device(self.device)
        if self.profile not in PROFILES:
            raise HarnessError(f"--profile must be one of {', '.join(PROFILES)}; found {self.profile!r}")
        parse_seeds(str(self.seed), "--seed")
        parse_seeds(",".join(map(str, self.run_seeds)), "--run-seeds")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, plugins: tuple[str, ...] = (),
                     blocked: tuple[str, ...] = ()) -> TuneRequest:
        values = {k: v for k, v in options.items() if v is not None}
        values["overrides"] = parse_overrides(list(values.get("overrides") or ()))
        values["run_seeds"] = parse_seeds(values.get("run_seeds", "0,1,2"), "--run-seeds")
        return cls(**values, plugins=plugins, blocked=blocked)

    @property
    def out_path(self) -> Path:
        return Path(self.out_file) if self.out_file else Path(f"tune-{self.method}-{self.dataset}.toml")


def tune(request: TuneRequest, registry: Registry) -> tuple[Any, Path]:
    """Search the method's space with Ray Tune on validation scores and write the best configuration as an
    experiment file for ``harness run --config``. Returns the outcome and the file written."""
    from harness.run.executors.ray import RayOptions
    from harness.run.experiment_config import dump_experiment
    from harness.run.tuning import base_trial, tune_method

    spec = registry.get("methods", request.method)
    registry.get("datasets", request.dataset)
    trial = base_trial(request.method, request.dataset, sampler=request.sampler, seed=request.seed,
                       profile=request.profile, overrides=request.overrides, registry=registry)
    settings = RunSettings(runs_dir=Path("runs"), data_dir=request.data_dir, plugins=request.plugins,
                           blocked=request.blocked, device=request.device)
    options = RayOptions(cpus_per_trial=request.cpus_per_trial, gpus_per_trial=request.gpus_per_trial,
                         max_concurrent=request.max_concurrent, address=request.address,
                         storage=request.ray_storage)
    if request.address is None:
        check_device_available(request.device)
    outcome = tune_method(trial, spec, settings, samples=request.samples, metric=request.metric, mode=request.mode,
                          scheduler=request.scheduler, grace_period=request.grace_period, options=options,
                          seed=request.search_seed)
    values = {
        "experiment": f"{request.dataset}-{request.method}-tuned",
        "methods": [request.method],
        "datasets": [request.dataset],
        "samplers": [request.sampler],
        "seeds": list(request.run_seeds),
        "profile": request.profile,
        "data_dir": str(Path(request.data_dir).expanduser().resolve()) if request.data_dir else None,
        "plugins": list(request.plugins) or None,
    }
    table = {scope: dict(v) for scope, v in request.overrides.items()}
    table.setdefault(request.method, {}).update(outcome.best_config)
    header = [
        f"Written by: harness tune --method {request.method} --dataset {request.dataset} --samples "
        f"{request.samples} --scheduler {request.scheduler} --profile {request.profile}",
        f"Best {outcome.metric} (validation) = {outcome.best_score:.4f} over {request.samples} sample(s); "
        f"Ray state: {outcome.storage}",
    ]
    out = request.out_path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_experiment(values, table, header))
    return outcome, out
