"""The runner and the local executor: results on disk, resume, isolation of failures, determinism,
and clear errors for bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from harness import HarnessError
from harness.run.runner import RunSettings, run_trial
from harness.run.trial import Experiment, expand
from harness.store import ResultStore
from tests.conftest import TINY

SMOKE = ("--profile", "smoke", "--no-onnx", *TINY)


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


def test_cli_end_to_end_on_synthetic_smoke(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "resnet", "--seeds", "0,1", "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 0, result.output
    assert "resnet" in result.output and "Macro-F1" in result.output
    records = _results(runs / "synthetic")
    assert len(records) == 2 and {r["seed"] for r in records} == {0, 1}
    for record in records:
        assert record["status"] == "ok"
        assert set(record["metrics"]) >= {"macro_f1", "balanced_accuracy", "mcc", "accuracy", "auroc", "ece"}
        for key in ("method", "dataset", "sampler", "seed", "profile", "params", "fit_seconds",
                    "harness_version", "git_commit", "hardware"):
            assert key in record, key
        # what the trial cost in CPU time (all threads), beside its wall time: budgets are set from it
        assert 0 < record["timings"]["cpu_seconds"] <= record["total_seconds"] * record["hardware"]["cpu_count"] + 1
        lat = record["latency"]
        assert lat["ms_per_image_b1"] > 0 and lat["ms_per_image_b64"] > 0 and lat["threads"] >= 1
        folder = runs / "synthetic" / record["key"]
        assert (folder / "trial.json").exists()
        preds = pl.read_parquet(folder / "predictions.parquet")
        assert preds.height == 35 and {"index", "label", "pred", "prob_0", "prob_6"} <= set(preds.columns)
        probs = preds.select([f"prob_{k}" for k in range(7)]).to_numpy()
        assert abs(probs.sum(1) - 1).max() < 1e-4
    assert not list(runs.rglob("*.tmp")), "temporary files left behind"
    board = (runs / "synthetic" / "leaderboard.md").read_text()
    assert "| 1 | resnet | uniform | 2 |" in board
    frame = pl.read_parquet(runs / "synthetic" / "leaderboard.parquet")
    assert frame["seeds"].to_list() == [2]


def test_resume_skips_finished_trials(tmp_path, cli):
    runs = tmp_path / "runs"
    args = ("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--seeds", "0,1",
            "--runs-dir", str(runs), *SMOKE)
    assert cli(*args).exit_code == 0
    mtimes = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")}
    assert len(mtimes) == 2
    second = cli(*args)
    assert second.exit_code == 0
    assert second.output.count("done already, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")} == mtimes
    # a third seed is the only new work
    third = cli(*args[:6], "0,1,2", *args[7:])
    assert third.output.count("done already, skipped") == 2 and len(list(runs.rglob("result.json"))) == 3


def test_failed_trial_is_recorded_and_others_go_on(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "always-fails,constant", "--plugin", "tests.failing_plugin",
                 "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 1
    by_method = {r["method"]: r for r in _results(runs)}
    assert by_method["always-fails"]["status"] == "failed"
    assert "deliberate failure" in by_method["always-fails"]["error"]
    assert "RuntimeError" in by_method["always-fails"]["traceback"]
    assert by_method["constant"]["status"] == "ok"
    # the failed trial is retried on the next run; the finished one is not
    again = cli("run", "--methods", "always-fails,constant", "--plugin", "tests.failing_plugin",
                "--runs-dir", str(runs), *SMOKE)
    assert again.output.count("done already, skipped") == 1 and again.exit_code == 1


def test_same_trial_twice_gives_identical_metrics_and_a_kept_model_reproduces_them(tmp_path, registry):
    from harness.run.models import stored_trial
    from harness.run.runner import load_data, load_predictor

    exp = Experiment(methods=("resnet",), datasets=("synthetic",), profile="smoke",
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}})
    (trial,) = expand(exp, registry)
    settings = RunSettings(runs_dir=tmp_path / "a", latency=_no_onnx())
    a = run_trial(trial, settings, reporter=lambda **_: None)
    b = run_trial(trial, RunSettings(runs_dir=tmp_path / "b", latency=_no_onnx()), reporter=lambda **_: None)
    assert a.status == b.status == "ok"
    assert a.metrics == b.metrics
    folder = tmp_path / "a" / trial.experiment / trial.key
    pa = pl.read_parquet(folder / "predictions.parquet")
    pb = pl.read_parquet(tmp_path / "b" / trial.experiment / trial.key / "predictions.parquet")
    assert pa.equals(pb)

    # the kept model: its size line, and loaded back it predicts exactly what the trial stored
    assert a.model["dir"] == "model" and a.model["files"]["predictor.pt"] > 0
    assert a.model["bytes"] == sum(p.stat().st_size for p in (folder / "model").iterdir())
    assert a.model["pickler"] == "pickle" and not a.model["onnx"]  # --no-onnx: no graph exported
    stored = stored_trial(folder)
    assert stored.trial == trial and stored.result == ResultStore(tmp_path / "a" / trial.experiment).load_result(
        trial.key)
    data = load_data(stored.trial, registry, settings)
    predictor = stored.predictor()
    assert predictor.batch_size == load_predictor(folder).batch_size
    probs = predictor.predict(data.test.images)["probs"].astype(np.float64)
    expected = pa.select([f"prob_{k}" for k in range(data.num_classes)]).to_numpy()
    assert np.array_equal(probs, expected)
    assert np.array_equal(probs.argmax(1), pa["pred"].to_numpy())


def _no_onnx():
    from harness.run.latency import LatencySettings

    return LatencySettings(onnx=False)


def test_trial_key_changes_with_what_changes_the_result(registry):
    base = Experiment(methods=("resnet",), datasets=("synthetic",), profile="smoke")
    (a,) = expand(base, registry)
    (same,) = expand(base, registry)
    (lr,) = expand(Experiment(**{**base.__dict__, "overrides": {"resnet": {"lr": 0.5}}}), registry)
    (size,) = expand(Experiment(**{**base.__dict__, "overrides": {"dataset": {"size": 20}}}), registry)
    (seed,) = expand(Experiment(**{**base.__dict__, "seeds": (1,)}), registry)
    assert a.key == same.key
    assert len({a.key, lr.key, size.key, seed.key}) == 4


def test_an_option_left_at_none_keeps_the_key(registry):
    """A plugin that adds an optional (None) option keeps the keys of results already stored."""
    (a,) = expand(Experiment(methods=("resnet",), datasets=("synthetic",), profile="smoke"), registry)
    widened = replace(a, dataset_options=tuple(sorted((*a.dataset_options, ("new_option", None)))))
    assert widened.key == a.key
    assert replace(a, dataset_options=tuple(sorted((*a.dataset_options, ("new_option", 3))))).key != a.key


def test_unknown_method_lists_the_available_ones(tmp_path, cli):
    result = cli("run", "--methods", "nope", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output and "resnet" in result.output


def test_unknown_dataset_and_sampler(tmp_path, cli):
    assert "synthetic" in cli("run", "--datasets", "imaginary", "--runs-dir", str(tmp_path)).output
    out = cli("run", "--samplers", "magic", "--runs-dir", str(tmp_path)).output
    assert "unknown sampler 'magic'" in out and "balanced" in out


def test_bad_set_key_lists_the_config_keys(tmp_path, cli):
    result = cli("run", "--methods", "resnet", "--set", "resnet.learning_rate=1", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "'learning_rate'" in result.output and "lr" in result.output and "epochs" in result.output


def test_bad_set_value_type_and_syntax(tmp_path, cli):
    result = cli("run", "--methods", "resnet", "--set", "resnet.epochs=many", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "expected an integer" in result.output
    result = cli("run", "--methods", "resnet", "--set", "epochs=3", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "SCOPE.KEY=VALUE" in result.output
    result = cli("run", "--methods", "resnet", "--set", "nosuch.x=3", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "nosuch" in result.output


def test_missing_data_file_says_where_it_looked(tmp_path, cli):
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--datasets", "retinamnist",
                 "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--profile", "smoke")
    assert result.exit_code == 1
    (record,) = _results(tmp_path / "runs")
    assert record["status"] == "failed"
    assert str(tmp_path / "retinamnist" / "retinamnist.npz") in record["error"]
    assert "zenodo" in record["error"].lower()


def test_missing_data_dir_is_explained(tmp_path, registry):
    from harness.contract.specs import DatasetRequest
    from harness.run.config import config_from_dict

    spec = registry.datasets["pneumoniamnist"]
    request = DatasetRequest(options=config_from_dict(spec.options, {}), seed=0, data_dir=None, cache_dir=tmp_path)
    with pytest.raises(HarnessError, match="--data-dir"):
        spec.load_fn()(request)


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from harness.cli import main; "
            "CliRunner().invoke(main, ['--help']); print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


# ------------------------------------------------------------------------------- the contract, enforced


def _contract_trials(tmp_path, *methods: str, latency=None, **settings):
    from harness.registry import load_plugins
    from harness.run.latency import LatencySettings
    from tests import contract_plugin

    manager = load_plugins(objects=[("contract", contract_plugin)])
    registry = manager.build_registry()
    exp = Experiment(methods=methods, datasets=("synthetic",), profile="smoke",
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}})
    run_settings = RunSettings(runs_dir=tmp_path, latency=latency or LatencySettings(onnx=False), **settings)
    return {t.method: run_trial(t, run_settings, registry=registry, manager=manager, reporter=lambda **_: None)
            for t in expand(exp, registry)}


def test_fit_never_sees_the_test_split(tmp_path):
    results = _contract_trials(tmp_path, "honest", "peeks-at-test", "peeks-quietly")
    assert results["honest"].ok
    for method in ("peeks-at-test", "peeks-quietly"):  # swallowing the refusal does not help
        result = results[method]
        assert result.status == "failed", method
        assert f"method {method!r} read data.test inside fit; a method may select on data.val only" in result.error
        assert result.metrics == {} and result.model is None
        assert not (tmp_path / result.experiment / result.key / "predictions.parquet").exists()


@pytest.mark.parametrize("method, message", [
    ("nan-probs", "that are not finite (NaN or inf) in 1 of 35 rows (1)"),
    ("negative-probs", "that are negative in 1 of 35 rows (0) (smallest -0.25)"),
    ("unnormalised", "whose rows do not sum to 1 within 0.0001: 35 of 35 rows"),
    ("no-predictor", "fit returned str; expected a harness.Predictor"),
])
def test_invalid_predictor_output_fails_the_trial_naming_the_method(tmp_path, method, message):
    result = _contract_trials(tmp_path, method)[method]
    assert result.status == "failed" and f"method {method!r}" in result.error
    assert message in result.error, result.error
    stored = ResultStore(tmp_path / result.experiment).load_result(result.key)
    assert stored == result and not stored.ok  # on disk as returned; never skipped as done


def test_without_the_metrics_plugin_a_trial_fails_naming_the_plugin(tmp_path, cli):
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--block-plugin", "metrics",
                 "--runs-dir", str(tmp_path), *SMOKE)
    assert result.exit_code == 1
    (record,) = _results(tmp_path)
    assert record["status"] == "failed"
    assert "macro_f1, balanced_accuracy, mcc are not registered" in record["error"]
    assert "plugin 'metrics' provides macro_f1, balanced_accuracy, mcc, which is blocked" in record["error"]
    assert not record["metrics"]
    # unblocked, the same command runs it (a failed trial is never taken for done)
    again = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--runs-dir", str(tmp_path), *SMOKE)
    assert again.exit_code == 0 and _results(tmp_path)[0]["status"] == "ok"


def test_headline_metric_and_default_sampler_are_settings(tmp_path, registry):
    from harness.contract.specs import TrialContext
    from harness.run.settings import HEADLINE_METRIC

    assert TrialContext.__dataclass_fields__["headline_metric"].default == HEADLINE_METRIC
    seen = {}

    def fit(data, config, ctx):
        seen["headline"] = ctx.headline_metric
        sampler = ctx.make_sampler(data.train.labels)
        seen["sampler"] = (type(sampler).__name__, getattr(sampler, "power", None))
        from tests.contract_plugin import honest

        return honest(data, config, ctx)

    from harness import MethodSpec, hookimpl
    from harness.registry import load_plugins
    from tests.contract_plugin import Config

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec(name="asks", description="d", config=Config, fit=fit, uses_sampler=False))

    manager = load_plugins(objects=[("asks", Plugin())])
    registry = manager.build_registry()
    (trial,) = expand(Experiment(methods=("asks",), datasets=("synthetic",), profile="smoke",
                                 overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}}),
                      registry)
    settings = RunSettings(runs_dir=tmp_path, latency=_no_onnx(), headline_metric="mcc", default_sampler="balanced")
    result = run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    assert result.ok, result.error
    assert seen == {"headline": "mcc", "sampler": ("PowerSampler", 0.0)}  # the class-balanced sampler
    gone = RunSettings(runs_dir=tmp_path / "b", latency=_no_onnx(), default_sampler="nonexistent")
    failed = run_trial(trial, gone, registry=registry, manager=manager, reporter=lambda **_: None)
    assert failed.status == "failed" and "default sampler 'nonexistent' is not registered" in failed.error


# ----------------------------------------------------------------------------------------- models kept


def test_model_of_a_class_defined_inside_fit_and_the_onnx_graph(tmp_path):
    from harness.run.latency import LatencySettings
    from harness.run.runner import load_predictor

    result = _contract_trials(tmp_path, "honest", latency=LatencySettings(onnx=True, budget_s=0.01))["honest"]
    assert result.ok and result.model["pickler"] == "cloudpickle"  # a class defined inside fit: saved by value
    assert "onnx_ms_per_image_b1" in result.latency, result.latency
    assert result.model["onnx"] and result.model["files"]["model.onnx"] > 0  # the timed graph is kept
    probs = load_predictor(tmp_path / result.experiment / result.key).predict(np.zeros((3, 16, 16, 3), np.uint8))["probs"]
    assert probs.shape == (3, 7) and np.allclose(probs.sum(1), 1)


def test_no_save_model_keeps_nothing(tmp_path, cli):
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--no-save-model",
                 "--runs-dir", str(tmp_path), *SMOKE)
    assert result.exit_code == 0, result.output
    (record,) = _results(tmp_path)
    assert record["status"] == "ok" and record["model"] is None
    assert not list(tmp_path.rglob("model"))
    with pytest.raises(HarnessError, match="no saved model"):
        from harness.run.runner import load_predictor

        load_predictor(tmp_path / "synthetic" / record["key"])


def test_a_runs_folder_written_before_schema_2_resumes_and_reports(tmp_path, cli):
    """tests/data/runs-schema1: a real runs folder written by the schema-1 runner (2 ok, 2 failed trials)."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(Path(__file__).parent / "data" / "runs-schema1", runs)
    before = {p: p.read_bytes() for p in runs.rglob("result.json") if "constant" in p.parent.name}
    result = cli("--plugin", "tests.failing_plugin", "run", "--methods", "constant,always-fails", "--seeds", "0,1",
                 "--runs-dir", str(runs), "--threads", "1", *SMOKE)
    assert result.exit_code == 1  # always-fails fails again
    assert result.output.count("done already, skipped") == 2  # the old ok trials are done: same keys
    assert {p: p.read_bytes() for p in before} == before  # and untouched
    records = {r["key"]: r for r in _results(runs)}
    assert sorted(r["schema"] for r in records.values()) == [1, 1, 2, 2]  # the re-run failures: schema 2
    board = (runs / "synthetic" / "leaderboard.md").read_text()
    assert "| constant |" in board
    assert (runs / "synthetic" / "report" / "index.html").exists()
    report = cli("report", str(runs / "synthetic"), "--out", str(tmp_path / "site"))
    assert report.exit_code == 0, report.output
