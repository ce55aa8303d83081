"""The plugin contract: discovery, registration, failures, duplicates, blocking, and the third-party path."""

from __future__ import annotations

import inspect
import json
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import HarnessError, MethodSpec, hookimpl
from harness.contract import hookspecs
from harness.registry import load_plugins
from tests.conftest import REPO, TINY

EXAMPLE = REPO / "examples" / "harness-example-plugin"


@dataclass(frozen=True)
class _Cfg:
    pass


def _method_plugin(name: str):
    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec(name=name, description="test", config=_Cfg, fit="x:y"))

    return Plugin()


def test_every_hook_is_documented():
    hooks = [f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "harness_spec")]
    assert {h.__name__ for h in hooks} >= {"register_datasets", "register_methods", "register_samplers",
                                           "register_metrics", "trial_finished"}
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert "Called" in doc and ":param" in doc and ":return:" in doc, hook.__name__


def test_builtins_come_through_entry_points(registry):
    sources = {p.name: p.source for p in registry.plugins}
    for name in ("synthetic", "medmnist", "baselines", "samplers", "metrics"):
        assert sources.get(name) == "entry point", sources
    assert registry.provider[("methods", "resnet")] == "baselines"
    assert registry.provider[("datasets", "synthetic")] == "synthetic"


def test_registered_plugin_appears_in_registry():
    registry = load_plugins(objects=[("mine", _method_plugin("my-method"))]).build_registry()
    assert registry.provider[("methods", "my-method")] == "mine"
    assert "resnet" in registry.methods  # the built-ins still load


def test_duplicate_names_are_listed_and_using_one_fails_naming_both_plugins():
    registry = load_plugins(objects=[("first", _method_plugin("twin")), ("second", _method_plugin("twin"))]
                            ).build_registry()  # both stay visible, so the user can block one
    assert sorted((name, plugin, conflict) for name, _, plugin, conflict in registry.entries("methods")
                  if name == "twin") == [("twin", "first", True), ("twin", "second", True)]
    with pytest.raises(HarnessError) as err:
        registry.get("methods", "twin")
    assert "'first'" in str(err.value) and "'second'" in str(err.value) and "twin" in str(err.value)
    assert "--block-plugin" in str(err.value)


def test_duplicate_of_a_builtin_fails_when_used():
    registry = load_plugins(objects=[("impostor", _method_plugin("resnet"))]).build_registry()
    with pytest.raises(HarnessError, match="'resnet'.*'impostor'"):
        registry.get("methods", "resnet")
    assert registry.get("methods", "focal")  # the other names are unaffected


def test_broken_plugin_is_reported_and_the_rest_load(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_plugins(["broken_plugin"]).build_registry()
    failures = {f.name: f.error for f in registry.failures}
    assert "boom at import" in failures["broken_plugin"]
    assert "resnet" in registry.methods and "synthetic" in registry.datasets


def test_plugin_whose_hook_raises_is_reported(tmp_path, monkeypatch):
    (tmp_path / "raising_plugin.py").write_text(textwrap.dedent("""
        from harness import hookimpl
        @hookimpl
        def register_methods(register):
            raise ValueError("bad registration")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_plugins(["raising_plugin"]).build_registry()
    assert any("bad registration" in f.error for f in registry.failures)
    assert "resnet" in registry.methods


def test_blocking_a_plugin_by_name(monkeypatch):
    registry = load_plugins(blocked=["baselines"]).build_registry()
    assert "resnet" not in registry.methods and "synthetic" in registry.datasets
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "synthetic")
    registry = load_plugins().build_registry()
    assert "synthetic" not in registry.datasets


def test_plugin_from_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "env_plugin.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from harness import MethodSpec, hookimpl
        @dataclass(frozen=True)
        class C:
            pass
        @hookimpl
        def register_methods(register):
            register(MethodSpec(name="from-env", description="d", config=C, fit="x:y"))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HARNESS_PLUGINS", "env_plugin")
    registry = load_plugins().build_registry()
    assert registry.provider[("methods", "from-env")] == "env_plugin"


def test_plugins_command_lists_versions_and_hooks(cli):
    result = cli("plugins", "--json")
    data = json.loads(result.output)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["baselines"]["hooks"] == ["register_methods"]
    assert by_name["baselines"]["version"]


def test_core_never_imports_plugins():
    for path in (REPO / "harness").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import plugins", "from plugins")), f"{path}: {line}"


def _install_example_as_distribution(tmp_path: Path, monkeypatch) -> None:
    """What ``pip install examples/harness-example-plugin`` leaves behind: the module and a dist-info
    folder with its entry point, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE / "harness_example_plugin.py", site)
    info = site / "harness_example_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-example-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[harness]\nexample = harness_example_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))


def test_readme_example_plugin_installs_lists_and_runs(tmp_path, monkeypatch, cli):
    _install_example_as_distribution(tmp_path, monkeypatch)
    listed = json.loads(cli("list", "methods", "--json").output)
    entry = {m["name"]: m for m in listed}["nearest-centroid"]
    assert entry["plugin"] == "example"
    plugins = {p["name"]: p for p in json.loads(cli("plugins", "--json").output)["plugins"]}
    assert plugins["example"]["version"] == "0.1.0"
    result = cli("run", "--methods", "nearest-centroid", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"),
                 "--no-onnx", *TINY, "--set", "synthetic.separation=3")
    assert result.exit_code == 0, result.output
    results = list((tmp_path / "runs").rglob("result.json"))
    record = json.loads(results[0].read_text())
    assert record["status"] == "ok" and record["method"] == "nearest-centroid"
    # a real classifier: clearly better than chance (1/7) on the easily separable variant
    assert record["metrics"]["balanced_accuracy"] > 0.3, record["metrics"]
    sys.modules.pop("harness_example_plugin", None)


def test_trial_finished_observer_sees_ok_and_failed_trials(tmp_path):
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, run_trial
    from harness.run.trial import Experiment, expand
    from tests import failing_plugin

    seen = []

    class Observer:
        @hookimpl
        def trial_finished(self, result):  # a subset of the hook's arguments is fine
            seen.append((result.method, result.status, result["method"]))  # item access: observers of schema 1

        @hookimpl
        def register_methods(self, register):
            raise RuntimeError("an observer's other hook failing must not matter")

    manager = load_plugins(objects=[("failing", failing_plugin), ("observer", Observer())])
    registry = manager.build_registry()
    exp = Experiment(methods=("constant", "always-fails"), datasets=("synthetic",), profile="smoke",
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}})
    settings = RunSettings(runs_dir=tmp_path, latency=LatencySettings(onnx=False))
    for trial in expand(exp, registry):
        run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    assert seen == [("constant", "ok", "constant"), ("always-fails", "failed", "always-fails")]


def test_an_observer_that_raises_is_printed_and_recorded(tmp_path, capsys):
    from harness.contract.result import TrialResult
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, run_trial
    from harness.run.trial import Experiment, expand
    from tests import failing_plugin

    class Broken:
        @hookimpl
        def trial_finished(self, trial, result):
            raise ValueError(f"cannot log {trial.method}")

    manager = load_plugins(objects=[("failing", failing_plugin), ("broken-observer", Broken())])
    registry = manager.build_registry()
    exp = Experiment(methods=("constant",), datasets=("synthetic",), profile="smoke",
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}})
    (trial,) = expand(exp, registry)
    result = run_trial(trial, RunSettings(runs_dir=tmp_path, latency=LatencySettings(onnx=False)), registry=registry,
                       manager=manager, reporter=lambda **_: None)
    assert result.ok  # an observer never changes the trial's status
    message = "plugin 'broken-observer' trial_finished: ValueError: cannot log constant"
    assert result.observer_errors == [message]
    assert TrialResult.read(tmp_path / trial.experiment / trial.key / "result.json").observer_errors == [message]
    assert message in capsys.readouterr().err


def test_a_reporting_observer_sees_each_epoch_and_one_that_raises_is_called_once(tmp_path, capsys):
    """``trial_reported`` reaches the observers once per learning-curve record, while the trial runs; one that
    raises is printed and recorded once and not called again in the trial; the time spent in observers (here a
    slow one) is kept out of ``fit_seconds``."""
    import time

    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, run_trial
    from harness.run.trial import Experiment, expand

    calls = {"slow": [], "broken": 0}

    class Slow:
        @hookimpl
        def trial_reported(self, trial, record, metric_names):
            calls["slow"].append((record["epoch"], "macro_f1" in metric_names))
            time.sleep(0.5)

    class Broken:
        @hookimpl
        def trial_reported(self, record):
            calls["broken"] += 1
            raise ValueError("tracking server down")

    manager = load_plugins(objects=[("slow-observer", Slow()), ("broken-observer", Broken())])
    registry = manager.build_registry()
    exp = Experiment(methods=("resnet",), datasets=("synthetic",), profile="smoke",
                     overrides={"resnet": {"epochs": 3}, "synthetic": {"size": 16, "n_train": 70, "n_val": 35,
                                                                         "n_test": 35}})
    (trial,) = expand(exp, registry)
    result = run_trial(trial, RunSettings(runs_dir=tmp_path, threads=1, latency=LatencySettings(onnx=False)),
                       registry=registry, manager=manager, reporter=lambda **_: None)
    assert result.ok
    assert calls["slow"] == [(1, True), (2, True), (3, True)] and calls["broken"] == 1
    message = "plugin 'broken-observer' trial_reported: ValueError: tracking server down"
    assert result.observer_errors == [message] and capsys.readouterr().err.count(message) == 1
    assert result.timings["observer_seconds"] >= 1.5
    assert result.fit_seconds < result.total_seconds - result.timings["observer_seconds"]
