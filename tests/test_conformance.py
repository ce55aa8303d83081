"""One conformance test per registered dataset, method, sampler and metric (as timm tests every model):
each goes through its contract at the smallest size. A new plugin is covered without a new test."""

from __future__ import annotations

import numpy as np
import pytest

from harness import DatasetOptions, HarnessError
from harness.contract.specs import PROFILES, DatasetRequest
from harness.registry import load_plugins
from harness.run.config import config_from_dict, resolve_method_config
from harness.run.latency import LatencySettings
from harness.run.runner import RunSettings, run_trial
from harness.run.trial import Experiment, expand
from tests.conftest import shared_data_dir

REGISTRY = load_plugins().build_registry()
TINY = {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}


def _check_splits(data, spec):
    assert data.classes == tuple(spec.classes) or len(data.classes) == len(spec.classes) or not spec.classes
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == np.uint8 and split.images.ndim == 4
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < data.num_classes
    assert len(data.val) > 0, "every dataset must provide a validation split"


@pytest.mark.parametrize("name", sorted(REGISTRY.datasets))
def test_dataset_contract(name, tmp_path):
    spec = REGISTRY.datasets[name]
    assert spec.description and spec.modality and spec.license and spec.source
    assert spec.channels in (1, 3)
    assert spec.protocols and issubclass(spec.options, DatasetOptions)
    options = config_from_dict(spec.options, spec.profiles.get("smoke", {}))
    if not spec.needs_data_dir:
        data = spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=tmp_path))
        _check_splits(data, spec)
        return
    assert spec.obtain, "a dataset read from files must say how to obtain them"
    with pytest.raises(HarnessError):  # an empty data directory: a clear error, not a crash
        spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=tmp_path, cache_dir=tmp_path))
    real = shared_data_dir()
    if (real / name).is_dir():
        data = spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=real, cache_dir=tmp_path))
        _check_splits(data, spec)


@pytest.mark.parametrize("name", sorted(REGISTRY.methods))
def test_method_contract(name, tmp_path):
    spec = REGISTRY.methods[name]
    assert spec.description and spec.paper, "a method names its paper or source"
    for profile in PROFILES:
        assert profile in spec.profiles, f"{name} has no {profile!r} profile"
        resolve_method_config(spec, profile, {})  # every profile names real config keys
    for key in spec.search_space:
        assert key in spec.config_keys(), f"search space key {key!r} is not a config key of {name}"
    exp = Experiment(methods=(name,), datasets=("synthetic",), profile="smoke", overrides={"synthetic": TINY})
    trial = expand(exp, REGISTRY)[0]
    record = run_trial(trial, RunSettings(runs_dir=tmp_path, latency=LatencySettings(onnx=False)),
                       reporter=lambda **_: None)
    assert record["status"] == "ok", record.get("traceback")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert record["latency"]["ms_per_image_b1"] > 0


@pytest.mark.parametrize("name", sorted(REGISTRY.samplers))
def test_sampler_contract(name):
    labels = np.repeat(np.arange(4), [50, 20, 5, 1])
    sampler = REGISTRY.samplers[name].build_fn()(labels)
    for epoch in (0, 5, 9):
        a = sampler.indices(epoch, 10, np.random.default_rng(1))
        b = sampler.indices(epoch, 10, np.random.default_rng(1))
        assert np.array_equal(a, b), "the same rng seed gives the same order"
        assert a.dtype.kind == "i" and len(a) > 0
        assert a.min() >= 0 and a.max() < len(labels)


@pytest.mark.parametrize("name", sorted(REGISTRY.metrics))
def test_metric_contract(name):
    spec = REGISTRY.metrics[name]
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    perfect = np.eye(3)[y]
    value = spec.compute_fn()(y, perfect)
    assert isinstance(float(value), float)
    assert value == pytest.approx(1.0 if spec.higher_is_better else 0.0)
