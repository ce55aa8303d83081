"""The MLflow plugin (plugins/mlflow_tracking): a smoke trial run with the plugin loaded is logged to a temporary
MLflow file store with its params, test metrics, learning curve and artefacts."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY

MISSING = "MLflow is not installed: pip install -e '.[mlflow]' (mlflow-skinny)"

SMOKE = ("--profile", "smoke", "--no-onnx", "--threads", "1", *TINY)


def test_a_smoke_trial_is_logged_to_a_file_store(tmp_path, cli, monkeypatch):
    pytest.importorskip("mlflow", reason=MISSING)
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    runs = tmp_path / "runs"
    import plugins.mlflow_tracking as tracking

    seen = []  # what MLflow held right after each live record: the run's status and its loss points

    def observed(trial, record, trial_dir, metric_names=(), uri=None):
        run_id = log_record(trial, record, trial_dir, metric_names, uri)
        seen.append((MlflowClient(tracking_uri=store).get_run(run_id).info.status,
                     len(MlflowClient(tracking_uri=store).get_metric_history(run_id, "loss"))))
        return run_id

    log_record = tracking.log_record
    monkeypatch.setattr(tracking, "log_record", observed)
    result = cli("--plugin", "plugins.mlflow_tracking", "run", "--methods", "resnet", "--seeds", "0",
                 "--set", "resnet.epochs=2", "--experiment", "mlflow-smoke", "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 0, result.output
    assert seen == [("RUNNING", 1), ("RUNNING", 2)], "the curve is logged live, one epoch at a time"
    assert "warning" not in result.output.lower(), result.output  # the observer raised nothing

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("mlflow-smoke")
    assert experiment is not None, "the MLflow experiment is the harness experiment"
    [run] = client.search_runs([experiment.experiment_id])
    (trial_dir,) = (runs / "mlflow-smoke").glob("resnet-*")
    assert run.info.run_name == trial_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["harness.status"] == "ok"

    params = run.data.params
    assert params["method"] == "resnet" and params["dataset"] == "synthetic" and params["seed"] == "0"
    assert params["config.epochs"] == "2" and params["dataset.size"] == "16" and "config.lr" in params

    record = json.loads((trial_dir / "result.json").read_text())
    assert run.data.metrics["macro_f1"] == pytest.approx(record["metrics"]["macro_f1"])
    curve = json.loads((trial_dir / "curve.json").read_text())
    for key in ("loss", "val_macro_f1"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [r["epoch"] for r in curve]  # once each: not logged again at the end
        assert [m.value for m in history] == pytest.approx([r[key] for r in curve])
    assert len(curve) == 2

    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"predictions.parquet", "curve.json", "result.json"} <= artefacts


def test_without_mlflow_the_trial_stands_and_the_warning_says_how_to_install(tmp_path, cli, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    runs = tmp_path / "runs"
    result = cli("--plugin", "plugins.mlflow_tracking", "run", "--methods", "constant", "--plugin",
                 "tests.failing_plugin", "--seeds", "0", "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 0, result.output
    [path] = runs.rglob("result.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    assert "pip install -e \".[mlflow]\"" in record["observer_errors"][0]


def test_a_run_left_running_by_a_dead_attempt_is_marked_killed(tmp_path, monkeypatch):
    """A trial's process died after its first live record (its run stays RUNNING); the next attempt, in a new
    process, marks that run KILLED and logs to a run of its own."""
    pytest.importorskip("mlflow", reason=MISSING)
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    import plugins.mlflow_tracking as tracking

    store = (tmp_path / "mlruns").as_uri()
    trial = SimpleNamespace(key="resnet-toy-s0-abc", method="resnet", dataset="toy", sampler="uniform", seed=0,
                            profile="smoke", experiment="stale")
    first = tracking.log_record(trial, {"epoch": 1, "loss": 1.0}, tmp_path, (), uri=store)
    monkeypatch.setattr(tracking, "LIVE", {})  # a new process: the first attempt's open run is forgotten
    second = tracking.log_record(trial, {"epoch": 1, "loss": 0.9}, tmp_path, (), uri=store)
    client = MlflowClient(tracking_uri=store)
    assert first != second
    assert client.get_run(first).info.status == "KILLED"
    assert client.get_run(first).data.tags["harness.status"] == "interrupted"
    assert client.get_run(second).info.status == "RUNNING"

