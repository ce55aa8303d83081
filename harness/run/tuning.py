"""``harness tune``: search a method's declared ``MethodSpec.search_space`` with Ray Tune.

Each sample trains the method on the dataset's ``train`` split and is scored on ``val`` only: the
per-epoch numbers the method reports (``val_macro_f1`` from :func:`harness.toolkit.training.train_classifier`)
go to ``ray.tune.report`` so ASHA (``time_attr="epoch"``) stops poor samples early, and after ``fit``
the harness itself scores the returned predictor on ``val`` with the registered metric plugins (so methods
that report nothing per epoch can be tuned too). Each sample is fitted by the same function as a trial of
``harness run`` (:func:`harness.run.runner.fit_trial`). The test split is never predicted during tuning, and nothing is written to the
result store: the best configuration goes to a TOML experiment file for ``harness run --config``.

Search-space domains (the names and arguments of Ray Tune's own functions)::

    ("loguniform", lo, hi)   ("uniform", lo, hi)   ("choice", [a, b, ...])
    ("randint", lo, hi)      # integers lo <= x < hi, as tune.randint
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract.specs import MethodSpec
from harness.errors import HarnessError
from harness.run.runner import RunSettings
from harness.run.trial import Trial

DOMAINS = ("loguniform", "uniform", "choice", "randint")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def search_space_problems(spec: MethodSpec) -> list[str]:
    """What is wrong with a method's search space (empty list: it can be tuned)."""
    keys = set(spec.config_keys())
    problems = []
    if not spec.search_space:
        problems.append(f"method {spec.name!r} declares no search_space")
    for key, domain in spec.search_space.items():
        where = f"method {spec.name!r} search_space[{key!r}]"
        if key not in keys:
            problems.append(f"{where}: {key!r} is not a config key (keys: {', '.join(sorted(keys))})")
        if not isinstance(domain, (tuple, list)) or not domain or domain[0] not in DOMAINS:
            problems.append(f"{where}: expected (kind, ...) with kind one of {', '.join(DOMAINS)}; found {domain!r}")
            continue
        kind, args = domain[0], tuple(domain[1:])
        if kind in ("loguniform", "uniform"):
            if len(args) != 2 or not all(_number(a) for a in args) or not args[0] < args[1]:
                problems.append(f"{where}: ({kind!r}, lo, hi) needs numbers lo < hi; found {domain!r}")
            elif kind == "loguniform" and args[0] <= 0:
                problems.append(f"{where}: loguniform needs lo > 0; found {domain!r}")
        elif kind == "randint":
            if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args) \
                    or not args[0] < args[1]:
                problems.append(f"{where}: ('randint', lo, hi) needs integers lo < hi (hi excluded); found {domain!r}")
        elif len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            problems.append(f"{where}: ('choice', [a, b, ...]) needs a non-empty list; found {domain!r}")
    return problems


def to_tune_space(spec: MethodSpec, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The method's search space as Ray Tune domains (``only``: a subset of its keys)."""
    problems = search_space_problems(spec)
    if problems:
        raise HarnessError("; ".join(problems))
    from ray import tune

    keys = only or tuple(spec.search_space)
    unknown = [k for k in keys if k not in spec.search_space]
    if unknown:
        raise HarnessError(f"method {spec.name!r} has no search-space key {', '.join(unknown)}; "
                           f"it declares: {', '.join(spec.search_space)}")
    space = {}
    for key in keys:
        kind, *args = spec.search_space[key]
        if kind == "choice":
            space[key] = tune.choice([list(v) if isinstance(v, tuple) else v for v in args[0]])
        else:
            space[key] = getattr(tune, kind)(*args)
    return space


def base_trial(method: str, dataset: str, *, sampler: str, seed: int, profile: str,
               overrides: Mapping[str, Mapping[str, Any]], registry) -> Trial:
    """The one trial every sample starts from (the sampled keys then replace its config values)."""
    from harness.run.trial import Experiment, expand

    trials = expand(Experiment(methods=(method,), datasets=(dataset,), samplers=(sampler,), seeds=(seed,),
                               profile=profile, overrides=overrides, name=f"tune-{method}-{dataset}"), registry)
    return trials[0]


def validation_scores(trial: Trial, settings: RunSettings, reporter) -> dict[str, float]:
    """Train ``trial`` through the one fit path (:func:`harness.run.runner.fit_trial`, as ``harness run`` does)
    and score the predictor on ``val`` with the registered metric plugins (``ctx.score``); never on ``test``.
    Per-epoch reports go to ``reporter``. Returns ``{"epoch": last reported epoch, "val_<metric>": value}``."""
    from datetime import datetime, timezone

    from harness.contract.specs import check_probabilities
    from harness.run.runner import cached_plugins, fit_trial, start_result

    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    last_epoch = [0]

    def report(**metrics: Any) -> None:
        if isinstance(metrics.get("epoch"), (int, float)):
            last_epoch[0] = max(last_epoch[0], int(metrics["epoch"]))
        reporter(**metrics)

    with tempfile.TemporaryDirectory(prefix="harness-tune-") as tmp:
        fitted = fit_trial(trial, settings, registry=registry, trial_dir=Path(tmp), reporter=report,
                           result=start_result(trial, datetime.now(timezone.utc)))
        val = fitted.data.val
        probs = fitted.predictor.predict(val.images)["probs"]
    check_probabilities(probs, method=trial.method, rows=len(val), num_classes=fitted.data.num_classes,
                        split="validation")
    scores = fitted.ctx.score(val.labels.astype(np.int64), probs)
    return {"epoch": max(last_epoch[0], 1), **{f"val_{name}": value for name, value in scores.items()}}


def _tune_trainable(config: dict, *, base: dict, method_keys: list[str], settings: RunSettings,
                    sys_paths: list[str], env: dict[str, str]) -> None:
    from harness.run.executors.ray import numeric, prepare_worker

    prepare_worker(sys_paths, env)
    from ray import tune

    from harness.run.config import config_from_dict, config_to_dict
    from harness.run.runner import cached_plugins

    trial = Trial.from_dict(base)
    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    spec = registry.get("methods", trial.method)
    values = {**trial.config, **{k: v for k, v in config.items() if k in method_keys}}
    resolved = config_to_dict(config_from_dict(spec.config, values))
    trial = Trial.from_dict({**trial.to_dict(), "method_config": resolved})

    def reporter(**metrics: Any) -> None:
        tune.report(numeric(metrics))

    final = validation_scores(trial, settings, reporter)
    tune.report({**final, "final": True})


@dataclass
class TuneOutcome:
    best_config: dict[str, Any]  # the sampled keys of the best sample
    best_score: float
    metric: str
    samples: int
    errors: list[str] = field(default_factory=list)
    storage: str = ""


def tune_method(trial: Trial, spec: MethodSpec, settings: RunSettings, *, samples: int, metric: str | None = None,
                mode: str = "max", scheduler: str = "asha", grace_period: int = 1, options=None,
                seed: int | None = 0, out=None) -> TuneOutcome:
    """Search ``spec.search_space`` around ``trial`` with Ray Tune; return the best sampled values. ``metric``:
    a validation metric, ``val_<registered metric>`` (default: ``val_`` + ``settings.headline_metric``)."""
    from harness.run.executors.ray import (
        RayOptions,
        absolute_settings,
        connect,
        plugin_env,
        worker_sys_paths,
    )

    metric = metric or f"val_{settings.headline_metric}"
    if not metric.startswith("val_"):
        raise HarnessError(f"--metric must be a validation metric (val_...), never a test metric; found {metric!r}")
    if samples < 1:
        raise HarnessError(f"--samples must be at least 1; found {samples}")
    options = options or RayOptions()
    space_keys = tuple(spec.search_space)
    device = settings.device if settings.device != "auto" or options.gpus_per_trial else "cpu"
    worker_settings = absolute_settings(settings, threads=settings.threads or options.threads, device=device)
    started_here = connect(options.address)
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
        from ray.tune.search.basic_variant import BasicVariantGenerator

        space = to_tune_space(spec)
        epochs = int(trial.config.get("epochs", 1) or 1)
        if "epochs" in spec.search_space:
            domain = spec.search_space["epochs"]
            epochs = max(domain[1]) if domain[0] == "choice" else int(domain[-1])
        if scheduler == "asha":
            sched = ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1), reduction_factor=2,
                                  grace_period=max(1, min(grace_period, epochs)), stop_last_trials=False)
        elif scheduler == "fifo":
            sched = FIFOScheduler()
        else:
            raise HarnessError(f"--scheduler must be asha or fifo; found {scheduler!r}")
        trainable = tune.with_parameters(
            _tune_trainable, base=trial.to_dict(), method_keys=list(space_keys), settings=worker_settings,
            sys_paths=worker_sys_paths([*settings.plugins]), env=plugin_env(),
        )
        trainable = tune.with_resources(trainable, options.resources)
        storage = str(Path(options.storage).expanduser().resolve()) if options.storage else None
        name = f"harness-tune-{trial.method}-{trial.dataset}" + time.strftime("-%Y%m%d-%H%M%S")
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, num_samples=samples, scheduler=sched,
                max_concurrent_trials=options.max_concurrent,
                search_alg=BasicVariantGenerator(random_state=seed) if seed is not None else None,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=options.verbose,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        grid = tuner.fit()
        errors = [f"{type(r.error).__name__}: {r.error}" for r in grid if r.error is not None]
        scored = [r for r in grid if r.metrics_dataframe is not None and metric in r.metrics_dataframe]
        if not scored:
            detail = f" Errors: {errors[0]}" if errors else ""
            raise HarnessError(f"no sample of {trial.method!r} reported {metric!r}; nothing to choose from.{detail}")
        best = grid.get_best_result(metric=metric, mode=mode, scope="all", filter_nan_and_inf=True)
        column = best.metrics_dataframe[metric]
        score = float(column.max() if mode == "max" else column.min())
        best_config = {k: best.config[k] for k in space_keys}
        return TuneOutcome(best_config=_plain(best_config), best_score=score, metric=metric, samples=samples,
                           errors=errors, storage=f"{storage or '~/ray_results'}/{name}")
    finally:
        if started_here:
            import ray

            ray.shutdown()


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            value = float(f"{value:.6g}")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out

