"""The conformance checks, one per kind of registered name. Each raises ``AssertionError`` (with what was
expected and what was found) when a plugin breaks its contract; ``test_contract.py`` runs them over the
registry, and the harness's own tests run them against deliberately broken plugins."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract.hookspecs import hookimpl
from harness.contract.specs import (
    PROFILES,
    DatasetOptions,
    DatasetRequest,
    DatasetSpec,
    DataSplits,
    MethodSpec,
    MetricSpec,
    Sampler,
    SamplerSpec,
    Split,
    check_probabilities,
)
from harness.errors import HarnessError

DEFAULT_TIMEOUT_S = 300.0  # one method's smoke trial; the other cases get a tenth of it
TINY_DATASET = "conformance-tiny"


# --------------------------------------------------------------------------------------- time limits


class ConformanceTimeout(Exception):
    """A conformance case ran longer than its limit."""


def timeout_s(kind: str = "method") -> float:
    limit = float(os.environ.get("HARNESS_CONFORMANCE_TIMEOUT", DEFAULT_TIMEOUT_S))
    return limit if kind == "method" else limit / 10


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`ConformanceTimeout` in this thread after ``seconds`` (POSIX, main thread; elsewhere the
    case runs unlimited)."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ConformanceTimeout(f"{what} ran longer than {seconds:g} s, its conformance time limit "
                                 f"(HARNESS_CONFORMANCE_TIMEOUT); a smoke-sized case should take seconds")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def limited(kind: str) -> Callable:
    """Decorate a test so it runs under :func:`time_limit` (``kind``: ``"method"`` or ``"other"``)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with time_limit(timeout_s(kind), fn.__name__):
                return fn(*args, **kwargs)

        return inner

    return wrap


# ---------------------------------------------------------------------------------------- plugins


def registration_importing_torch(modules: list[str]) -> str | None:
    """The first of ``modules`` whose import pulls in torch (registration must stay cheap), or None. Runs in a
    fresh interpreter."""
    code = ("import importlib, sys\n"
            "import harness\n"
            "assert 'torch' not in sys.modules, 'harness itself'\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    if 'torch' in sys.modules:\n"
            "        print(name); break\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])})
    assert out.returncode == 0, f"importing the plugin modules failed: {out.stderr[-2000:]}"
    return out.stdout.strip() or None


def hooks_without_tests(namespace: dict[str, Any]) -> list[str]:
    """The hook specs of :mod:`harness.contract.hookspecs` with no ``test_hook_<name>`` function in
    ``namespace`` (a test module's globals), as datasette checks its hooks."""
    import inspect

    from harness.contract import hookspecs

    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "harness_spec")]
    assert hooks, "no hook specs found in harness.contract.hookspecs"
    return [hook for hook in hooks if not callable(namespace.get(f"test_hook_{hook}"))]


# ---------------------------------------------------------------------------------------- datasets


def check_dataset_spec(spec: DatasetSpec) -> None:
    """What a dataset declares: a description, modality, licence, citation, 1 or 3 channels, split protocols,
    an options dataclass built on DatasetOptions that every profile fills in, unique class names."""
    for attr in ("description", "modality", "license", "source"):
        assert getattr(spec, attr), f"dataset {spec.name!r} declares no {attr}"
    assert spec.channels in (1, 3), f"dataset {spec.name!r}: channels must be 1 or 3; found {spec.channels}"
    assert spec.protocols, f"dataset {spec.name!r} declares no split protocol"
    assert issubclass(spec.options, DatasetOptions), \
        f"dataset {spec.name!r}: options must subclass harness.DatasetOptions; found {spec.options.__name__}"
    assert len(set(spec.classes)) == len(spec.classes), f"dataset {spec.name!r} repeats a class name: {spec.classes}"
    assert len(spec.classes) != 1, f"dataset {spec.name!r} declares one class; a classifier needs at least two"
    from harness.run.config import build_dataclass

    for profile, values in spec.profiles.items():
        assert profile in PROFILES, f"dataset {spec.name!r}: unknown profile {profile!r} (profiles: {PROFILES})"
        build_dataclass(spec.options, values, f"dataset {spec.name!r} profile {profile!r}")
    if spec.needs_data_dir:
        assert spec.obtain, f"dataset {spec.name!r} reads files, so it must say how to obtain them (obtain=...)"


def check_dataset_without_files(spec: DatasetSpec, empty_dir: Path, cache_dir: Path) -> None:
    """A dataset read from files, pointed at an empty folder: a HarnessError, not a crash or empty splits."""
    from harness.run.config import build_dataclass

    options = build_dataclass(spec.options, spec.profiles.get("smoke", {}), spec.name)
    try:
        spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=empty_dir, cache_dir=cache_dir))
    except HarnessError:
        return
    raise AssertionError(f"dataset {spec.name!r} loaded from an empty folder ({empty_dir}) without a HarnessError "
                         f"saying what it looked for and how to obtain the data")


def load_smallest(spec: DatasetSpec, data_dir: Path | None, cache_dir: Path) -> DataSplits:
    """The dataset at its ``smoke`` profile (the smallest it declares)."""
    from harness.run.config import build_dataclass

    options = build_dataclass(spec.options, spec.profiles.get("smoke", {}), spec.name)
    return spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=data_dir, cache_dir=cache_dir))


def check_splits(spec: DatasetSpec, data: DataSplits, size: int | None = None) -> None:
    """Loaded splits: at least two classes (the declared ones, in order), uint8 (N, H, W, C) images of the
    requested size and the declared channels, int64 labels in range and aligned with the images, train / val /
    test non-empty, and no image in two splits (by id, or by content where a split has no ids)."""
    name = spec.name
    assert isinstance(data, DataSplits), f"dataset {name!r}: load returned {type(data).__name__}, not DataSplits"
    assert data.num_classes >= 2, f"dataset {name!r} has {data.num_classes} class(es): {data.classes}"
    if spec.classes:
        assert tuple(data.classes) == tuple(spec.classes), \
            f"dataset {name!r}: loaded classes {data.classes} differ from the declared {spec.classes}"
    for split_name in ("train", "val", "test"):
        split: Split = getattr(data, split_name)
        assert len(split) > 0, f"dataset {name!r}: the {split_name} split is empty"
        images, labels = split.images, split.labels
        assert images.dtype == np.uint8 and images.ndim == 4, \
            f"dataset {name!r} {split_name}: images must be uint8 (N, H, W, C); found {images.dtype} {images.shape}"
        assert images.shape[-1] == spec.channels, \
            f"dataset {name!r} {split_name}: {images.shape[-1]} channel(s); the spec declares {spec.channels}"
        assert images.shape[1] == images.shape[2], f"dataset {name!r} {split_name}: images are not square"
        if size is not None:
            assert images.shape[1] == size, f"dataset {name!r} {split_name}: {images.shape[1]} px; asked for {size}"
        assert labels.dtype == np.int64 and labels.shape == (len(images),), \
            f"dataset {name!r} {split_name}: labels must be int64 (N,); found {labels.dtype} {labels.shape}"
        assert labels.min() >= 0 and labels.max() < data.num_classes, \
            f"dataset {name!r} {split_name}: labels outside 0..{data.num_classes - 1}: {labels.min()}..{labels.max()}"
        if split.ids is not None:
            assert len(split.ids) == len(labels), f"dataset {name!r} {split_name}: {len(split.ids)} ids for " \
                                                  f"{len(labels)} images"
            assert len(set(map(str, split.ids))) == len(labels), f"dataset {name!r} {split_name}: repeated image ids"
    splits = {s: getattr(data, s) for s in ("train", "val", "test")}
    if all(split.ids is not None for split in splits.values()):
        keys = {s: set(map(str, split.ids)) for s, split in splits.items()}
        how, pairs = "image id", (("train", "test"), ("val", "test"), ("train", "val"))
    else:  # by content: an image in test that is also in train or val leaks (publishers' train and val splits
        # do share a few identical images, e.g. PneumoniaMNIST's official ones: not checked without ids)
        keys = {s: {hashlib.sha1(image.tobytes()).hexdigest() for image in split.images} for s, split in splits.items()}
        how, pairs = "identical image", (("train", "test"), ("val", "test"))
    for a, b in pairs:
        shared = keys[a] & keys[b]
        assert not shared, f"dataset {name!r}: {len(shared)} {how}(s) in both {a} and {b}, e.g. {sorted(shared)[0]}"


# ----------------------------------------------------------------------------------------- methods


def check_method_spec(spec: MethodSpec) -> None:
    """A description, the paper or source, every profile resolving to a valid config, a valid search space."""
    from harness.run.config import resolve_method_config
    from harness.run.tuning import search_space_problems

    assert spec.description and spec.paper, f"method {spec.name!r} must have a description and name its paper/source"
    for profile in PROFILES:
        assert profile in spec.profiles, f"method {spec.name!r} has no {profile!r} profile (profiles: {PROFILES})"
        resolve_method_config(spec, profile, {})  # every profile names real keys with values in range
    if spec.search_space:
        problems = search_space_problems(spec)
        assert not problems, "; ".join(problems)


@dataclass(frozen=True)
class _TinyOptions(DatasetOptions):
    size: int = 16
    per_class: int = 18  # training images per class; val and test get half as many


TINY_CLASSES = ("red", "green", "blue", "grey")


def tiny_dataset(request: DatasetRequest) -> DataSplits:
    """Four balanced classes of small noisy images, each a blob of its colour: enough for a method to learn
    something in a smoke profile, and independent of any dataset plugin."""
    options = request.options
    rng = np.random.default_rng(request.seed + 1)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [128, 128, 128]], np.float64)
    size = options.size
    yy, xx = np.mgrid[:size, :size] / size

    def split(n_per_class: int, offset: int) -> Split:
        labels = np.repeat(np.arange(len(TINY_CLASSES)), n_per_class).astype(np.int64)
        cy, cx = rng.uniform(0.3, 0.7, (2, len(labels)))
        blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 0.05)
        images = 60 + blob[..., None] * (colours[labels][:, None, None, :] - 60)
        images = np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)
        ids = np.array([f"tiny-{offset + i}" for i in range(len(labels))])
        return Split(images, labels, ids)

    n = options.per_class
    return DataSplits(train=split(n, 0), val=split(max(1, n // 2), 10_000), test=split(max(1, n // 2), 20_000),
                      classes=TINY_CLASSES, name=TINY_DATASET, protocol="official", fingerprint=None)


class TinyDatasetPlugin:
    """Registers :func:`tiny_dataset` for the method checks (not part of any user's registry)."""

    @hookimpl
    def register_datasets(self, register):
        register(DatasetSpec(name=TINY_DATASET, description="conformance: 4 colour-blob classes", load=tiny_dataset,
                             classes=TINY_CLASSES, modality="synthetic", source="harness.conformance",
                             license="CC0", options=_TinyOptions, needs_data_dir=False))


def check_method_trial(name: str, runs_dir: Path, *, plugins: tuple[str, ...] = (), objects=()) -> Any:
    """One ``smoke`` trial of method ``name`` on the tiny dataset, through the real runner; asserts it is ``ok``
    (fit never read the test split; its probabilities are valid; every headline metric is there), the stored
    predictions are valid, and the kept model loads back and predicts valid probabilities. Returns the result."""
    import polars as pl

    from harness.registry import load_plugins
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, load_predictor, run_trial
    from harness.run.trial import Experiment, expand

    manager = load_plugins(plugins, objects=[*objects, ("harness-conformance", TinyDatasetPlugin())])
    registry = manager.build_registry()
    settings = RunSettings(runs_dir=runs_dir, plugins=plugins, latency=LatencySettings(onnx=False, budget_s=0.05),
                           save_model=True)
    (trial,) = [t for t in expand(Experiment(methods=(name,), datasets=(TINY_DATASET,), profile="smoke",
                                             samplers=(settings.default_sampler,), name="conformance"), registry)]
    result = run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    assert result.ok, f"method {name!r}: its smoke trial failed: {result.error}\n{result.traceback or ''}"
    assert not any(r.startswith("model not kept") for r in result.warnings), \
        f"method {name!r}: {[w for w in result.warnings if w.startswith('model not kept')]}"
    for metric in settings.required_metrics:
        value = result.metrics.get(metric)
        assert value is not None and np.isfinite(value), f"method {name!r}: headline metric {metric} is {value!r}"
    folder = Path(runs_dir) / trial.experiment / trial.key
    frame = pl.read_parquet(folder / "predictions.parquet")
    k = len(TINY_CLASSES)
    probs = frame.select([f"prob_{c}" for c in range(k)]).to_numpy()
    check_probabilities(probs, method=name, rows=result.n_test, num_classes=k)
    assert np.array_equal(frame["pred"].to_numpy(), probs.argmax(1)), f"method {name!r}: pred is not argmax(probs)"
    assert result.model is not None and result.model["bytes"] > 0, f"method {name!r}: no model kept ({result.model})"
    images = tiny_dataset(DatasetRequest(options=_TinyOptions(), seed=0, data_dir=None, cache_dir=runs_dir)).test.images
    reloaded = load_predictor(folder).predict(images[:4])["probs"]
    check_probabilities(reloaded, method=f"{name} (reloaded from {folder / 'model'})", rows=4, num_classes=k)
    return result


# ---------------------------------------------------------------------------------------- samplers


def check_sampler(spec: SamplerSpec) -> None:
    """In-range integer indices, the same for the same generator, for skewed, two-image and one-class label sets,
    at the first, a middle and the last epoch."""
    for labels in (np.repeat(np.arange(4), [50, 20, 5, 1]), np.array([0, 1]), np.zeros(7, np.int64)):
        sampler = spec.build_fn()(labels)
        assert isinstance(sampler, Sampler), f"sampler {spec.name!r}: build returned {type(sampler).__name__}, " \
                                             f"not a harness Sampler (.indices(epoch, num_epochs, rng))"
        for epoch in (0, 5, 9):
            a = np.asarray(sampler.indices(epoch, 10, np.random.default_rng(1)))
            b = np.asarray(sampler.indices(epoch, 10, np.random.default_rng(1)))
            what = f"sampler {spec.name!r} (labels {np.bincount(labels).tolist()}, epoch {epoch})"
            assert a.ndim == 1 and a.dtype.kind in "iu" and len(a) > 0, \
                f"{what}: expected a non-empty 1-d integer array; found {a.dtype} {a.shape}"
            assert a.min() >= 0 and a.max() < len(labels), f"{what}: indices {a.min()}..{a.max()} outside " \
                                                           f"0..{len(labels) - 1}"
            assert np.array_equal(a, b), f"{what}: the same generator seed gave a different order"


# ----------------------------------------------------------------------------------------- metrics


def check_metric(spec: MetricSpec) -> None:
    """Finite and deterministic, inputs left unchanged; perfect predictions score the best value (1, or 0 when
    lower is better) and random ones strictly worse, for three classes and for two."""
    compute = spec.compute_fn()
    for k in (3, 2):
        rng = np.random.default_rng(k)
        y = np.tile(np.arange(k), 12)
        rng.shuffle(y)
        perfect = np.eye(k)[y]
        random = rng.dirichlet(np.ones(k), len(y))
        y_copy, random_copy = y.copy(), random.copy()
        best = float(compute(y, perfect))
        value = float(compute(y, random))
        again = float(compute(y, random))
        what = f"metric {spec.name!r} ({k} classes)"
        assert np.array_equal(y, y_copy) and np.array_equal(random, random_copy), f"{what} changed its inputs"
        assert np.isfinite(best) and np.isfinite(value), f"{what}: not finite: perfect {best}, random {value}"
        assert value == again, f"{what}: two calls on the same predictions gave {value} and {again}"
        target = 1.0 if spec.higher_is_better else 0.0
        assert abs(best - target) < 1e-9, f"{what}: perfect predictions score {best}; expected {target}"
        worse = value < best if spec.higher_is_better else value > best
        assert worse, f"{what}: random predictions score {value}, not worse than perfect ({best})"


# -------------------------------------------------------------------------------------- observers


def check_observer(function: Callable, argnames: tuple[str, ...], plugin: str) -> None:
    """A ``trial_finished`` implementation (``function`` taking ``argnames``, a subset of ``trial, result,
    trial_dir``) accepts an ``ok`` and a ``failed`` result without raising (``trial_dir``: a folder holding only
    ``result.json``, as a trial that failed early leaves it)."""
    import json
    import tempfile

    from harness.contract.result import TrialResult
    from harness.run.trial import Trial

    trial = Trial(method="m", dataset="d", sampler="-", seed=0, profile="smoke", method_config=(("lr", 0.1),),
                  dataset_options=(("size", 16),), experiment="conformance")
    for status, extra in (("ok", {"metrics": {"macro_f1": 0.5}}), ("failed", {"error": "RuntimeError: x"})):
        result = TrialResult(key=trial.key, method="m", dataset="d", status=status, seed=0, sampler="-", **extra)
        with tempfile.TemporaryDirectory(prefix="harness-observer-") as folder:
            trial_dir = Path(folder)
            (trial_dir / "result.json").write_text(json.dumps(result.to_dict()))
            kwargs = {"trial": trial, "result": result, "trial_dir": trial_dir}
            try:
                function(**{a: kwargs[a] for a in argnames})
            except Exception as exc:
                raise AssertionError(f"plugin {plugin!r} trial_finished raised on a {status} result: "
                                     f"{type(exc).__name__}: {exc}") from exc


def check_reporter(function: Callable, argnames: tuple[str, ...], plugin: str) -> None:
    """A ``trial_reported`` implementation (``function`` taking ``argnames``, a subset of ``trial, record,
    trial_dir, metric_names``) accepts two learning-curve records of a running trial without raising and without
    changing them (``trial_dir``: a folder holding only ``trial.json``, as a running trial's does)."""
    import copy
    import json
    import tempfile

    from harness.run.trial import Trial

    trial = Trial(method="m", dataset="d", sampler="-", seed=0, profile="smoke", method_config=(("lr", 0.1),),
                  dataset_options=(("size", 16),), experiment="conformance")
    with tempfile.TemporaryDirectory(prefix="harness-reporter-") as folder:
        trial_dir = Path(folder)
        (trial_dir / "trial.json").write_text(json.dumps(trial.to_dict()))
        for record in ({"epoch": 1, "loss": 0.9, "lr": 1e-3}, {"epoch": 2, "loss": 0.7, "val_macro_f1": 0.4}):
            kwargs = {"trial": trial, "record": record, "trial_dir": trial_dir, "metric_names": ("macro_f1",)}
            before = copy.deepcopy(record)
            try:
                function(**{a: kwargs[a] for a in argnames})
            except Exception as exc:
                raise AssertionError(f"plugin {plugin!r} trial_reported raised on record {record}: "
                                     f"{type(exc).__name__}: {exc}") from exc
            assert record == before, f"plugin {plugin!r} trial_reported changed the record it was given"

