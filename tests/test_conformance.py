"""The conformance suite (``harness/conformance``) runs here over every registered plugin, as a plugin author
runs it over theirs; and the suite's checks are shown to catch plugins that break the contract."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness import DatasetSpec, HarnessError, MetricSpec, SamplerSpec, Split
from harness.conformance import checks
from harness.conformance.test_contract import (  # noqa: F401  (collected here: the suite is part of the tests)
    test_every_hook_has_a_test,
    test_hook_register_datasets,
    test_hook_register_methods,
    test_hook_register_metrics,
    test_hook_register_samplers,
    test_hook_trial_finished,
    test_no_plugin_failed_to_load,
    test_registration_imports_no_torch,
)
from harness.contract.specs import DataSplits
from tests.conftest import REPO, shared_data_dir


@pytest.fixture(scope="module")
def _data_folder(tmp_path_factory):
    """One data folder for the suite's dataset checks: the shared MedMNIST files (linked, where present) and a
    small generated tree in each publisher's layout (tests/datatrees.py), so every file-based dataset loads."""
    from tests import datatrees

    root = tmp_path_factory.mktemp("conformance-data")
    real = Path(os.environ.get("HARNESS_TEST_DATA") or shared_data_dir())
    for name in ("retinamnist", "pneumoniamnist"):
        if (real / name).is_dir():
            (root / name).symlink_to(real / name, target_is_directory=True)
    datatrees.write_aptos(root / "aptos", per_class=4)
    datatrees.write_ham(root / "ham10000", per_class=6)
    datatrees.write_isic(root / "isic2018")
    datatrees.write_chexpert(root / "chexpert")
    datatrees.write_bone_marrow(root / "bone-marrow", per_class=6)
    return root


@pytest.fixture(autouse=True)
def _real_data(monkeypatch, _data_folder):
    monkeypatch.setenv("HARNESS_TEST_DATA", str(_data_folder))


# ------------------------------------------------------------------------- the checks catch bad plugins


@pytest.mark.parametrize("method, message", [
    ("peeks-at-test", "read data.test inside fit"),
    ("nan-probs", "not finite (NaN or inf)"),
    ("unnormalised", "do not sum to 1"),
])
def test_method_check_fails_a_method_that_breaks_the_contract(method, message, tmp_path):
    from tests import contract_plugin

    with pytest.raises(AssertionError, match=re.escape(message)):
        checks.check_method_trial(method, tmp_path, objects=[("contract", contract_plugin)])


def test_method_check_passes_a_method_that_keeps_the_contract(tmp_path):
    from tests import contract_plugin

    result = checks.check_method_trial("honest", tmp_path, objects=[("contract", contract_plugin)])
    assert result.ok and result.model["pickler"] == "cloudpickle" and result.n_test == 36


def test_method_spec_check(registry):
    from dataclasses import replace

    spec = registry.methods["resnet"]
    checks.check_method_spec(spec)
    with pytest.raises(AssertionError, match="has no 'paper' profile"):
        checks.check_method_spec(replace(spec, profiles={"smoke": {}, "cpu": {}}))
    with pytest.raises(AssertionError, match="name its paper"):
        checks.check_method_spec(replace(spec, paper=""))
    with pytest.raises(HarnessError, match="epochs must be at least 1"):
        checks.check_method_spec(replace(spec, profiles={**spec.profiles, "smoke": {"epochs": 0}}))


def _splits(**changes) -> DataSplits:
    rng = np.random.default_rng(0)

    def split(n, offset):
        return Split(rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), np.arange(n, dtype=np.int64) % 2,
                     np.array([f"i{offset + i}" for i in range(n)]))

    parts = {"train": split(6, 0), "val": split(4, 100), "test": split(4, 200), "classes": ("a", "b")}
    return DataSplits(**{**parts, **changes})


def test_dataset_checks_catch_bad_splits():
    spec = DatasetSpec(name="toy", description="d", load="x:y", classes=("a", "b"), modality="m", source="s",
                       license="l", needs_data_dir=False)
    checks.check_dataset_spec(spec)
    checks.check_splits(spec, _splits(), size=8)
    good = _splits()
    bad = {
        "has 0 class(es)": (DatasetSpec(**{**spec.__dict__, "classes": ()}), _splits(classes=())),
        "declares one class": (DatasetSpec(**{**spec.__dict__, "classes": ("a",)}), None),
        "differ from the declared": (spec, _splits(classes=("b", "a"))),
        "asked for 16": (spec, good),
        "the val split is empty": (spec, _splits(val=Split(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64)))),
        "labels outside 0..1": (spec, _splits(test=Split(good.test.images, np.array([0, 1, 2, 0]), good.test.ids))),
        "1 image id(s) in both train and test": (spec, _splits(test=Split(good.test.images, good.test.labels,
                                                                          np.array(["i0", "x", "y", "z"])))),
        "identical image(s) in both val and test": (spec, _splits(
            val=Split(good.val.images, good.val.labels), test=Split(good.val.images, good.val.labels))),
        "1 channel(s)": (spec, _splits(train=Split(good.train.images[..., :1], good.train.labels))),
    }
    for message, (bad_spec, data) in bad.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_dataset_spec(bad_spec)
            checks.check_splits(bad_spec, data, size=16 if message == "asked for 16" else 8)


def test_dataset_reading_files_must_fail_clearly_on_an_empty_folder(tmp_path, registry):
    checks.check_dataset_without_files(registry.datasets["retinamnist"], tmp_path, tmp_path / "cache")
    silent = DatasetSpec(name="silent", description="d", load=lambda request: _splits(), classes=("a", "b"),
                         modality="m", source="s", license="l", obtain="somewhere")
    with pytest.raises(AssertionError, match="without a HarnessError"):
        checks.check_dataset_without_files(silent, tmp_path, tmp_path / "cache")


@dataclass
class _Sampler:
    labels: np.ndarray
    shift: int = 0
    noisy: bool = False

    def indices(self, epoch, num_epochs, rng):
        if self.noisy:
            return np.random.default_rng().permutation(len(self.labels))
        return rng.permutation(len(self.labels)) + self.shift


def test_sampler_check_catches_out_of_range_and_unseeded_orders():
    checks.check_sampler(SamplerSpec("ok", "d", lambda labels: _Sampler(labels)))
    with pytest.raises(AssertionError, match="outside 0..75"):
        checks.check_sampler(SamplerSpec("shifted", "d", lambda labels: _Sampler(labels, shift=1)))
    with pytest.raises(AssertionError, match="the same generator seed gave a different order"):
        checks.check_sampler(SamplerSpec("noisy", "d", lambda labels: _Sampler(labels, noisy=True)))


def test_metric_check_catches_metrics_that_are_not_metrics():
    checks.check_metric(MetricSpec("acc", "d", lambda y, p: float((p.argmax(1) == y).mean())))
    cases = {
        "not finite": lambda y, p: float("nan"),
        "perfect predictions score 0.5": lambda y, p: 0.5 * float((p.argmax(1) == y).mean()),
        "not worse than perfect": lambda y, p: 1.0,
        "changed its inputs": lambda y, p: float(p.sort(axis=1) or 1.0),
    }
    for message, compute in cases.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            checks.check_metric(MetricSpec("bad", "d", compute))


def test_observer_check_and_the_hook_test_check():
    checks.check_observer(lambda result: result.metrics, ("result",), "fine")

    def fragile(trial, result):
        return result.metrics["macro_f1"]  # a failed result has no metrics

    with pytest.raises(AssertionError, match="plugin 'fragile' trial_finished raised on a failed result: KeyError"):
        checks.check_observer(fragile, ("trial", "result"), "fragile")
    from harness.conformance import test_contract

    namespace = {k: v for k, v in vars(test_contract).items() if k != "test_hook_trial_finished"}
    assert checks.hooks_without_tests(namespace) == ["trial_finished"]
    assert checks.hooks_without_tests(vars(test_contract)) == []


def test_time_limit_stops_a_case_that_runs_too_long():
    t0 = time.perf_counter()
    with pytest.raises(checks.ConformanceTimeout, match="ran longer than 0.2 s"):
        with checks.time_limit(0.2, "sleepy"):
            time.sleep(5)
    assert time.perf_counter() - t0 < 2


def test_registration_that_imports_torch_is_named(tmp_path, monkeypatch):
    (tmp_path / "heavy_plugin.py").write_text("import torch\n")
    (tmp_path / "light_plugin.py").write_text("import json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert checks.registration_importing_torch(["light_plugin", "heavy_plugin"]) == "heavy_plugin"


def test_a_plugin_author_runs_the_suite_with_one_command(tmp_path):
    """README's command, on the example plugin: `harness --plugin harness_example_plugin conformance`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "examples" / "harness-example-plugin"), str(REPO)]),
           "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("HARNESS_TEST_DATA", None)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--plugin", "harness_example_plugin", "conformance",
                          "-v"], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "test_hook_register_methods[nearest-centroid] PASSED" in out.stdout or " passed" in out.stdout
    assert "resnet" not in out.stdout  # only what the plugin registers is tested
