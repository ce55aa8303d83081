"""The Ray executor and ``harness tune`` on a real local Ray instance (2 CPUs, started once for the module):
same results as the local executor, resume, failure isolation, per-epoch reports reaching Tune, tuning
that writes a usable experiment file, and a clear fast error for an unreachable cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from harness import HarnessError
from harness.run.executors.ray import RayOptions, check_address
from tests.conftest import TINY

pytestmark = pytest.mark.slow

SMOKE = ("--profile", "smoke", "--no-onnx", *TINY)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(root.rglob("result.json")):
        record = json.loads(path.read_text())
        if "schema" in record:  # the harness's result.json, not Ray's
            out[record["key"]] = record
    return out


def test_ray_matches_local_resumes_and_reports_epochs(tmp_path, cli, ray_session, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --runs-dir: Ray runs trials in another working directory
    common = ("run", "--methods", "resnet", "--seeds", "0,1,2,3", *SMOKE)
    ray_args = (*common, "--executor", "ray", "--runs-dir", "runs", "--ray-storage", "ray-state")
    result = cli(*ray_args)
    assert result.exit_code == 0, result.output
    assert "4 to submit" in result.output
    by_ray = _records(tmp_path / "runs" / "synthetic")
    assert len(by_ray) == 4 and all(r["status"] == "ok" for r in by_ray.values())
    assert all(r["latency"]["threads"] == 1 for r in by_ray.values())  # torch threads = the CPU share
    assert all(r["model"]["bytes"] > 0 for r in by_ray.values())  # workers keep the models in the same store

    local = cli(*common, "--executor", "local", "--threads", "1", "--runs-dir", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    by_local = _records(tmp_path / "local" / "synthetic")
    assert set(by_local) == set(by_ray)
    for key, record in by_ray.items():
        assert record["metrics"] == by_local[key]["metrics"], key
        assert record["config"] == by_local[key]["config"]

    # the per-epoch reports reached Ray Tune (its own result files, outside the result store)
    experiments = list((tmp_path / "ray-state").iterdir())
    assert len(experiments) == 1
    tune_rows = [json.loads(line) for path in experiments[0].rglob("result.json")
                 for line in path.read_text().splitlines() if line.strip()]
    epoch_rows = [row for row in tune_rows if "epoch" in row]
    assert len(epoch_rows) == 4 and all(0 <= row["val_macro_f1"] <= 1 for row in epoch_rows)
    finals = {row["trial_key"]: row for row in tune_rows if "trial_key" in row}
    assert {k: v["test_macro_f1"] for k, v in finals.items()} == {
        k: r["metrics"]["macro_f1"] for k, r in by_ray.items()}

    # running the same command again submits nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("result.json")}
    again = cli(*ray_args)
    assert again.exit_code == 0, again.output
    assert "4 trial(s) done already, 0 to submit" in again.output and "0 ok, 4 skipped" in again.output
    assert list((tmp_path / "ray-state").iterdir()) == experiments
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("result.json")} == mtimes
    board = cli("leaderboard", str(tmp_path / "runs" / "synthetic"))
    assert board.exit_code == 0 and "| 1 | resnet | uniform | 4 |" in (
        tmp_path / "runs" / "synthetic" / "leaderboard.md").read_text()


def test_failing_trial_is_recorded_and_the_others_finish(tmp_path, cli, ray_session):
    runs = tmp_path / "runs"
    args = ("--plugin", "tests.failing_plugin", "run", "--methods", "always-fails,constant,resnet",
            "--seeds", "0", "--executor", "ray", "--runs-dir", str(runs), "--ray-storage", str(tmp_path / "ray"),
            *SMOKE)
    result = cli(*args)
    assert result.exit_code == 1, result.output
    by_method = {r["method"]: r for r in _records(runs).values()}
    assert set(by_method) == {"always-fails", "constant", "resnet"}
    assert by_method["always-fails"]["status"] == "failed"
    assert "RuntimeError: deliberate failure" in by_method["always-fails"]["error"]
    assert "RuntimeError" in by_method["always-fails"]["traceback"]
    assert by_method["constant"]["status"] == "ok" and by_method["resnet"]["status"] == "ok"
    assert "FAILED  always-fails" in result.output and "1 failed" in result.output
    assert "[2/3 done, 1 failed, 0 left] elapsed " in result.output  # the progress callback counted every trial
    # the next run resubmits only the failed trial
    again = cli(*args)
    assert again.exit_code == 1
    assert "2 trial(s) done already, 1 to submit" in again.output


def test_a_worker_that_dies_gets_a_failed_result_saying_what_is_known(tmp_path, cli, ray_session):
    """``dies`` ends its worker process inside fit (as the OOM killer would): no run_trial code records anything,
    so the driver writes the failed result, with Ray's error and where Ray's logs for the trial are."""
    runs = tmp_path / "runs"
    args = ("--plugin", "tests.failing_plugin", "--plugin", "tests.trust_plugin", "run", "--methods", "dies,constant",
            "--executor", "ray", "--runs-dir", str(runs), "--ray-storage", str(tmp_path / "ray"), *SMOKE)
    result = cli(*args)
    assert result.exit_code == 1, result.output
    by_method = {r["method"]: r for r in _records(runs).values()}
    assert by_method["constant"]["status"] == "ok"
    died = by_method["dies"]
    assert died["status"] == "failed" and died["started"] and died["finished"]
    assert died["error"].startswith("the Ray worker running this trial ended before it recorded a result: ")
    assert str(tmp_path / "ray") in died["notes"]["ray_trial_dir"]
    assert "FAILED  dies" in result.output and "ended before it recorded a result" in result.output
    again = cli(*args)
    assert "1 trial(s) done already, 1 to submit" in again.output  # a failed trial is retried, the ok one kept


def test_tune_writes_a_config_that_run_accepts(tmp_path, cli, ray_session):
    out = tmp_path / "best.toml"
    result = cli("tune", "--method", "resnet", "--dataset", "synthetic", "--samples", "2", "--profile", "smoke",
                 *TINY, "--out", str(out), "--run-seeds", "5", "--ray-storage", str(tmp_path / "ray"))
    assert result.exit_code == 0, result.output
    assert f"harness run --config {out}" in result.output
    data = tomllib.loads(out.read_text())
    assert data["methods"] == ["resnet"] and data["datasets"] == ["synthetic"] and data["profile"] == "smoke"
    tuned = data["overrides"]["resnet"]
    assert set(tuned) == {"lr", "weight_decay", "batch_size"}
    from plugins.baselines import SEARCH_SPACE  # every tuned value inside resnet's declared domains

    assert 1e-4 <= tuned["lr"] <= 1e-2 and 1e-5 <= tuned["weight_decay"] <= 1e-2
    assert tuned["batch_size"] in SEARCH_SPACE["batch_size"][1]
    assert data["overrides"]["synthetic"] == {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}

    # selection used validation scores only: Tune saw val_* numbers and never a test metric
    rows = [json.loads(line) for path in (tmp_path / "ray").rglob("result.json")
            for line in path.read_text().splitlines() if line.strip()]
    assert rows and not any(k.startswith("test_") for row in rows for k in row)
    finals = [row for row in rows if row.get("final")]
    assert finals and all({"val_macro_f1", "val_mcc", "val_balanced_accuracy"} <= set(row) for row in finals)  # ctx.score
    best = max(row["val_macro_f1"] for row in rows if "val_macro_f1" in row)
    assert f"= {best:.4f}" in result.output

    runs = tmp_path / "runs"
    run = cli("run", "--config", str(out), "--runs-dir", str(runs), "--no-onnx")
    assert run.exit_code == 0, run.output
    (record,) = _records(runs).values()
    assert record["status"] == "ok" and record["seed"] == 5 and record["experiment"] == "synthetic-resnet-tuned"
    assert record["config"]["lr"] == tuned["lr"] and record["config"]["batch_size"] == tuned["batch_size"]


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, cli, ray_session):
    """A driver joins the running cluster with --address, is interrupted (SIGINT, as Ctrl-C) after its
    first finished trial; the same command again runs only what is missing."""
    address = ray_session.get_runtime_context().gcs_address
    runs = tmp_path / "runs"
    args = ["--plugin", "tests.failing_plugin", "run", "--methods", "constant", "--seeds", "0,1,2,3,4,5",
            "--executor", "ray", "--address", address, "--max-concurrent", "1", "--runs-dir", str(runs),
            "--ray-storage", str(tmp_path / "ray"), *SMOKE]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["status"] == "ok" for r in _records(runs).values()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    done = {k: r for k, r in _records(runs).items() if r["status"] == "ok"}
    assert 1 <= len(done) < 6, output[-3000:]
    # Ctrl-C says how far the run got and the command that resumes it; no traceback
    assert f"interrupted: {len(done)} trial(s) finished in this run (0 failed), 0 were done before" in output, \
        output[-3000:]
    assert "Resume with:\n  harness --plugin tests.failing_plugin run --methods constant" in output
    assert "Traceback" not in output
    mtimes = {k: (runs / r["experiment"] / k / "result.json").stat().st_mtime_ns for k, r in done.items()}

    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert f"{len(done)} trial(s) done already, {6 - len(done)} to submit" in again.output
    records = _records(runs)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    assert {k: (runs / records[k]["experiment"] / k / "result.json").stat().st_mtime_ns for k in done} == mtimes


def test_unreachable_address_fails_fast_with_a_clear_message(tmp_path, cli):
    t0 = time.perf_counter()
    result = cli("run", "--methods", "resnet", "--executor", "ray", "--address", "127.0.0.1:1",
                 "--runs-dir", str(tmp_path / "runs"), *SMOKE)
    assert time.perf_counter() - t0 < 30
    assert result.exit_code == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in result.output and "ray start --head" in result.output
    assert not list(tmp_path.rglob("result.json"))


def test_ray_storage_inside_the_results_is_refused(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "resnet", "--executor", "ray", "--runs-dir", str(runs),
                 "--ray-storage", str(runs / "synthetic" / "ray"), *SMOKE)
    assert result.exit_code == 2 and "is inside the result folder" in result.output


@pytest.mark.parametrize("address", ["nonsense", "ray://host:port", "10.0.0.1:"])
def test_malformed_address(address):
    with pytest.raises(HarnessError, match="expected HOST:PORT"):
        check_address(address)


def test_ray_options_validation():
    assert RayOptions(cpus_per_trial=0.5).threads == 1 and RayOptions(cpus_per_trial=3).threads == 3
    assert RayOptions(gpus_per_trial=0.5).resources == {"cpu": 1.0, "gpu": 0.5}
    for bad in ({"cpus_per_trial": 0}, {"gpus_per_trial": -1}, {"max_concurrent": 0}):
        with pytest.raises(HarnessError):
            RayOptions(**bad)


def test_a_stopped_worker_prints_no_interrupt_traceback(capsys):
    """The worker hook drops a KeyboardInterrupt raised in a finaliser (how Ray's stop can land) and passes any
    other unraisable exception to the previous hook."""
    import types

    from harness.run.executors.ray import _quiet_stop_hook

    seen = []
    hook = _quiet_stop_hook(seen.append)
    assert _quiet_stop_hook(hook) is hook  # installed once per worker however many trials it runs
    hook(types.SimpleNamespace(exc_type=KeyboardInterrupt))
    other = types.SimpleNamespace(exc_type=ValueError)
    hook(other)
    assert seen == [other]
