"""The conformance tests, driven by the registry: one case per registered dataset, method, sampler and metric
(and ``trial_finished`` observer), each under a time limit. See :mod:`harness.conformance` for how to run them
against your own plugin. A test named ``test_hook_<hook>`` exists for every hook spec (checked below)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.conformance import ENV_ONLY
from harness.conformance.checks import (
    check_dataset_spec,
    check_dataset_without_files,
    check_method_spec,
    check_method_trial,
    check_metric,
    check_observer,
    check_reporter,
    check_sampler,
    check_splits,
    hooks_without_tests,
    limited,
    load_smallest,
    registration_importing_torch,
)
from harness.errors import HarnessError
from harness.registry import load_plugins

MANAGER = load_plugins()
REGISTRY = MANAGER.build_registry()
ONLY = tuple(p.strip() for p in os.environ.get(ENV_ONLY, "").split(",") if p.strip())


def selected(kind: str) -> list[str]:
    """The registered names of ``kind`` under test (those of the ``ONLY`` plugins, when given)."""
    return sorted(name for name in REGISTRY.table(kind)
                  if not ONLY or REGISTRY.provider[(kind, name)] in ONLY)


def _data_dir() -> Path | None:
    for var in ("HARNESS_TEST_DATA", "HARNESS_DATA_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return None


# ------------------------------------------------------------------------------------------ plugins


def test_no_plugin_failed_to_load():
    failures = [f for f in REGISTRY.failures if not ONLY or f.name in ONLY]
    assert not failures, "; ".join(f"plugin {f.name!r} failed to load: {f.error}" for f in failures)
    loaded = {p.name for p in REGISTRY.plugins}
    missing = [name for name in ONLY if name not in loaded]
    assert not missing, f"plugin(s) {', '.join(missing)} not loaded (loaded: {', '.join(sorted(loaded))})"


@limited("other")
def test_registration_imports_no_torch():
    modules = [p.module for p in REGISTRY.plugins if not ONLY or p.name in ONLY]
    culprit = registration_importing_torch(modules)
    assert culprit is None, f"importing plugin module {culprit!r} imports torch: registration must be cheap " \
                            f"(import torch inside fit / load)"


# ------------------------------------------------------------------------------------------ one per hook


@limited("other")
@pytest.mark.parametrize("name", selected("datasets"))
def test_hook_register_datasets(name, tmp_path):
    spec = REGISTRY.datasets[name]
    check_dataset_spec(spec)
    cache = tmp_path / "cache"
    if spec.needs_data_dir:
        empty = tmp_path / "empty"
        empty.mkdir()
        check_dataset_without_files(spec, empty, cache)
        if _data_dir() is None:
            pytest.skip(f"dataset {name!r} reads files: set HARNESS_TEST_DATA to a folder with them to check its splits")
    try:
        data = load_smallest(spec, _data_dir(), cache)
    except HarnessError as exc:
        if not spec.needs_data_dir:
            raise
        pytest.skip(f"dataset {name!r}: no files for it under {_data_dir()} ({str(exc).splitlines()[0][:160]})")
    check_splits(spec, data, size=getattr(load_options(spec), "size", None))


def load_options(spec):
    from harness.run.config import build_dataclass

    return build_dataclass(spec.options, spec.profiles.get("smoke", {}), spec.name)


@limited("method")
@pytest.mark.parametrize("name", selected("methods"))
def test_hook_register_methods(name, tmp_path):
    check_method_spec(REGISTRY.methods[name])
    check_method_trial(name, tmp_path)


@limited("other")
@pytest.mark.parametrize("name", selected("samplers"))
def test_hook_register_samplers(name):
    check_sampler(REGISTRY.samplers[name])


@limited("other")
@pytest.mark.parametrize("name", selected("metrics"))
def test_hook_register_metrics(name):
    check_metric(REGISTRY.metrics[name])


OBSERVERS = [impl for impl in MANAGER.pm.hook.trial_finished.get_hookimpls()
             if not ONLY or impl.plugin_name in ONLY]


@limited("other")
@pytest.mark.parametrize("impl", OBSERVERS, ids=[impl.plugin_name for impl in OBSERVERS])
def test_hook_trial_finished(impl):
    check_observer(impl.function, tuple(impl.argnames), impl.plugin_name)


REPORTERS = [impl for impl in MANAGER.pm.hook.trial_reported.get_hookimpls()
             if not ONLY or impl.plugin_name in ONLY]


@limited("other")
@pytest.mark.parametrize("impl", REPORTERS, ids=[impl.plugin_name for impl in REPORTERS])
def test_hook_trial_reported(impl):
    check_reporter(impl.function, tuple(impl.argnames), impl.plugin_name)


def test_every_hook_has_a_test():
    """As datasette does: a hook spec added to the contract without a conformance test here fails."""
    missing = hooks_without_tests(globals())
    assert not missing, f"hook(s) without a conformance test (test_hook_<name> in {__name__}): {', '.join(missing)}"
