"""Nothing silently wrong, the run side (issue 14): results tied to the data they came from, a runs folder that
guards itself, one writer per trial, and errors instead of tracebacks. Each test asserts the message the user
sees and that no finished result was lost or rewritten. docs/trust.md lists every case and its test.

The methods are the test plugins' (``constant``: the first class; ``waits``, ``disk-full``, ``no-fingerprint``
in tests/trust_plugin.py), so that nothing here trains a network."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness import HarnessError, MethodSpec, hookimpl
from harness.contract.result import TrialResult
from harness.registry import load_plugins
from harness.run.latency import LatencySettings
from harness.run.runner import RunSettings, run_trial
from harness.run.trial import Experiment, expand
from harness.store import ResultStore, StoreError, TrialSkipped, child, write_result
from tests.conftest import REPO, TINY

SMOKE = ("--profile", "smoke", "--no-onnx", "--threads", "1")
PLUGINS = ("--plugin", "tests.failing_plugin", "--plugin", "tests.trust_plugin")


def _records(root: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["key"]: json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))}


def _result_bytes(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("result.json")}


def _superseded(trial_dir: Path) -> list[Path]:
    return sorted(trial_dir.glob("superseded/*/result.superseded.json"))


def _run_synthetic(cli, runs: Path, *extra: str, methods: str = "constant", seeds: str = "0"):
    return cli(*PLUGINS, "run", "--methods", methods, "--seeds", seeds, "--runs-dir", str(runs), *SMOKE, *TINY,
               *extra)


# ------------------------------------------------------------------------------------ 1. results tied to data


def _npz(root: Path, *, fix_label: bool = False) -> Path:
    """A tiny PneumoniaMNIST-format file (2 classes, 28 x 28 grey); ``fix_label`` changes one test label."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    if fix_label:
        arrays["test_labels"][0, 0] = 1 - arrays["test_labels"][0, 0]
    (root / "pneumoniamnist").mkdir(parents=True, exist_ok=True)
    path = root / "pneumoniamnist" / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    return path


def test_changed_data_reruns_the_trial_says_why_and_keeps_the_old_result(tmp_path, cli):
    data, runs = tmp_path / "data", tmp_path / "runs"
    _npz(data)
    args = (*PLUGINS, "run", "--methods", "constant", "--datasets", "pneumoniamnist", "--runs-dir", str(runs), *SMOKE)
    assert cli(*args, "--data-dir", str(data)).exit_code == 0
    ((key, first),) = _records(runs).items()
    trial_dir = runs / "pneumoniamnist" / key
    old_bytes = (trial_dir / "result.json").read_bytes()
    assert first["data_fingerprint"]

    # the same files in another folder are the same data: reused
    shutil.copytree(data, tmp_path / "copy")
    same = cli(*args, "--data-dir", str(tmp_path / "copy"))
    assert same.exit_code == 0 and "done already, skipped" in same.output
    assert (trial_dir / "result.json").read_bytes() == old_bytes

    # a label fixed in the .npz: dry-run says the trial would run again and why, then the run does it
    _npz(data, fix_label=True)
    dry = cli(*args, "--data-dir", str(data), "--dry-run")
    assert dry.exit_code == 0 and f"stale       {key}" in dry.output
    assert "would run again: the data changed since its result" in dry.output
    assert (trial_dir / "result.json").read_bytes() == old_bytes  # a dry run changes nothing
    rerun = cli(*args, "--data-dir", str(data))
    assert rerun.exit_code == 0, rerun.output
    new = _records(runs)[key]
    assert new["data_fingerprint"] != first["data_fingerprint"]
    assert (f"runs again: the data changed since its result (data fingerprint {first['data_fingerprint']} then, "
            f"{new['data_fingerprint']} now)") in rerun.output
    assert "1 ok, 0 skipped" in rerun.output
    (kept,) = _superseded(trial_dir)  # the old result is kept, byte for byte, where no table counts it
    assert kept.read_bytes() == old_bytes and (kept.parent / "predictions.parquet").exists()
    assert len(_records(runs)) == 1


def test_fingerprint_checks_load_each_distinct_data_once(tmp_path, cli, monkeypatch):
    runs = tmp_path / "runs"
    extra = ("--plugin", "tests.contract_plugin")
    assert _run_synthetic(cli, runs, *extra, methods="constant,honest", seeds="0,1").exit_code == 0
    before = _result_bytes(runs)
    import harness.run.resume as resume

    loads = []
    real = resume.load_data

    def counting(trial, registry, settings):
        loads.append((trial.dataset, trial.seed))
        return real(trial, registry, settings)

    monkeypatch.setattr(resume, "load_data", counting)
    again = _run_synthetic(cli, runs, *extra, methods="constant,honest", seeds="0,1")
    assert again.exit_code == 0 and again.output.count("done already, skipped") == 4
    assert sorted(loads) == [("synthetic", 0), ("synthetic", 1)]  # 4 trials, 2 distinct data: 2 loads
    assert _result_bytes(runs) == before


def _rewrite(path: Path, **fields) -> bytes:
    result = TrialResult.read(path)
    for name, value in fields.items():
        setattr(result, name, value)
    write_result(path.parent, result)
    return path.read_bytes()


def test_result_without_fingerprint_is_kept_with_a_warning_every_time(tmp_path, cli):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    ((key, record),) = _records(runs).items()
    path = runs / "synthetic" / key / "result.json"
    written = _rewrite(path, data_fingerprint=None)  # as a runner before fingerprints wrote it
    for _ in range(2):
        again = _run_synthetic(cli, runs)
        assert again.exit_code == 0
        assert "done already, skipped" in again.output
        assert "warning: kept without a data check: its result was written without a data fingerprint" in again.output
        assert f"(the data now: {record['data_fingerprint']})" in again.output
        assert f"to re-run it, move {runs / 'synthetic' / key} out of the runs folder" in again.output
        assert "1 stored result(s) were reused without a data check" in again.output
        assert path.read_bytes() == written
    dry = _run_synthetic(cli, runs, "--dry-run")
    assert f"unverified  {key}" in dry.output and "skipped: kept without a data check" in dry.output


def test_result_without_fingerprint_whose_sizes_differ_is_rerun(tmp_path, cli):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    ((key, _),) = _records(runs).items()
    written = _rewrite(runs / "synthetic" / key / "result.json", data_fingerprint=None, n_train=999)
    again = _run_synthetic(cli, runs)
    assert again.exit_code == 0
    assert ("its result has no data fingerprint and its data differs from the data now (999 train / 35 test "
            "images, 7 classes then, 70 train / 35 test images, 7 classes now)") in again.output
    (kept,) = _superseded(runs / "synthetic" / key)
    assert kept.read_bytes() == written and _records(runs)[key]["data_fingerprint"]


def test_an_ok_result_without_a_headline_metric_runs_again(tmp_path, cli):
    """Written before "a trial without every headline metric is not ok" (e.g. with the metrics plugin blocked):
    such a result is not done, or it would be skipped forever."""
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    ((key, _),) = _records(runs).items()
    written = _rewrite(runs / "synthetic" / key / "result.json", metrics={})
    again = _run_synthetic(cli, runs)
    assert again.exit_code == 0
    assert "runs again: its result says ok but has no macro_f1, balanced_accuracy, mcc" in again.output
    (kept,) = _superseded(runs / "synthetic" / key)
    assert kept.read_bytes() == written and kept.parent.name.endswith("-incomplete")
    assert _records(runs)[key]["metrics"]["macro_f1"] is not None


def test_dataset_without_fingerprint_is_said_in_the_result_and_on_resume(tmp_path, cli):
    runs = tmp_path / "runs"
    args = (*PLUGINS, "run", "--methods", "constant", "--datasets", "no-fingerprint", "--runs-dir", str(runs), *SMOKE)
    assert cli(*args).exit_code == 0
    ((key, record),) = _records(runs).items()
    assert any("gave no data fingerprint" in w for w in record["warnings"])
    before = _result_bytes(runs)
    again = cli(*args)
    assert again.exit_code == 0 and "done already, skipped" in again.output
    assert "kept without a data check: dataset 'no-fingerprint' gives no data fingerprint" in again.output
    assert _result_bytes(runs) == before


def test_data_that_cannot_be_loaded_now_keeps_the_results_with_a_warning(tmp_path, cli):
    data, runs = tmp_path / "data", tmp_path / "runs"
    _npz(data)
    args = (*PLUGINS, "run", "--methods", "constant", "--datasets", "pneumoniamnist", "--runs-dir", str(runs), *SMOKE)
    assert cli(*args, "--data-dir", str(data)).exit_code == 0
    before = _result_bytes(runs)
    again = cli(*args, "--data-dir", str(tmp_path / "elsewhere"))
    assert again.exit_code == 0 and "done already, skipped" in again.output
    assert "kept without a data check: the data cannot be loaded now" in again.output
    assert "does not exist" in again.output
    assert _result_bytes(runs) == before


def test_dataset_warnings_reach_the_result(tmp_path, cli):
    runs = tmp_path / "runs"
    result = _run_synthetic(cli, runs, "--set", "synthetic.test_per_class=30")  # more than some classes have
    assert result.exit_code == 0, result.output
    ((_, record),) = _records(runs).items()
    assert any("test_per_class=30, but the test split has fewer images of" in w for w in record["warnings"]), record


# ------------------------------------------------------------------------------- 2. the runs folder is the user's


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs", "x\\y", " padded"])
def test_an_experiment_name_that_is_not_one_folder_is_refused(tmp_path, cli, name):
    runs = tmp_path / "runs"
    result = _run_synthetic(cli, runs, "--experiment", name)
    assert result.exit_code == 2
    assert f"experiment name (--experiment, or `experiment` in the experiment file) {name!r} cannot be a folder " \
           f"name in the runs folder" in result.output
    assert "Traceback" not in result.output
    assert {p.name for p in tmp_path.iterdir()} <= {"cache"}  # nothing written, in or out of runs


def test_an_experiment_file_naming_a_folder_outside_is_refused(tmp_path, cli):
    config = tmp_path / "exp.toml"
    config.write_text(f'experiment = "../../outside"\nruns_dir = "{tmp_path / "runs"}"\n')
    result = cli(*PLUGINS, "run", "--config", str(config), "--methods", "constant", *SMOKE, *TINY)
    assert result.exit_code == 2 and "'../../outside' cannot be a folder name" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "outside").exists()


def test_a_plugin_name_that_is_not_one_folder_is_not_registered():
    @__import__("dataclasses").dataclass(frozen=True)
    class Cfg:
        pass

    class Evil:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec(name="../evil", description="d", config=Cfg, fit="x:y"))
            register(MethodSpec(name="fine", description="d", config=Cfg, fit="x:y"))

    registry = load_plugins(objects=[("evil", Evil())]).build_registry()
    assert "../evil" not in registry.methods and "fine" in registry.methods and "resnet" in registry.methods
    (failure,) = [f for f in registry.failures if f.name == "evil"]
    assert "method name '../evil' cannot be a folder name in the runs folder: it contains a path separator" \
        in failure.error


def test_the_store_writes_only_below_its_root(tmp_path):
    store = ResultStore(tmp_path / "runs" / "exp")
    for key in ("../x", "a/../../b", ""):
        with pytest.raises(HarnessError, match="cannot be a folder name"):
            store.trial_dir(key)
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "linked").symlink_to(tmp_path)
    with pytest.raises(HarnessError, match="outside"):
        child(tmp_path / "runs" / "exp", "linked", "trial key")
    with pytest.raises(HarnessError, match="cannot be a folder name"):
        ResultStore.of(tmp_path / "runs", "../exp")


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_runs_dir_that_is_a_file_is_one_clear_error(tmp_path, cli, below):
    file = tmp_path / "results.txt"
    file.write_text("my notes\n")
    result = _run_synthetic(cli, file / below if below else file)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{file} is a file, not a folder; the results go in a folder" in result.output
    assert file.read_text() == "my notes\n"


def test_a_read_only_runs_folder_is_one_clear_error(tmp_path, cli, monkeypatch):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    before = _result_bytes(runs)
    import harness.store as store

    def read_only(*args, **kwargs):  # as root, chmod does not stop writes: the file system's answer, simulated
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(store.tempfile, "mkstemp", read_only)
    result = _run_synthetic(cli, runs, seeds="0,1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (f"cannot write in {runs / 'synthetic'}: Read-only file system [errno 30]; the folder is read-only for "
            f"you: make it writable, or pass a --runs-dir you can write to") in result.output
    assert _result_bytes(runs) == before


def test_a_full_disk_stops_the_run_naming_the_file_and_loses_nothing(tmp_path, cli, monkeypatch):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    before = _result_bytes(runs)
    real_replace = os.replace

    def full_for_seed_1(src, dst, *args, **kwargs):
        if str(dst).endswith("result.json") and "-s1-" in str(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_for_seed_1)
    result = _run_synthetic(cli, runs, seeds="0,1,2")
    monkeypatch.setattr(os, "replace", real_replace)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: cannot write" in result.output and "-s1-" in result.output
    assert "No space left on device [errno 28]; the disk (or your quota) is full" in result.output
    assert "stopped: 0 trial(s) finished in this run (0 failed), 1 were done before, 2 not finished" in result.output
    assert "Resume with:\n  harness --plugin tests.failing_plugin" in result.output
    assert _result_bytes(runs) == before  # seed 0 untouched; seed 1 has no result; seed 2 never started
    assert not list(runs.rglob("*.tmp")) and not any("-s2-" in p.name for p in (runs / "synthetic").iterdir())
    resumed = _run_synthetic(cli, runs, seeds="0,1,2")
    assert resumed.exit_code == 0 and "2 ok, 1 skipped" in resumed.output


def test_a_full_disk_inside_a_method_stops_the_run(tmp_path, cli):
    runs = tmp_path / "runs"
    result = _run_synthetic(cli, runs, methods="disk-full,constant")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "No space left on device [errno 28]; the disk (or your quota) is full" in result.output
    assert "checkpoint.pt" in result.output
    records = _records(runs)
    assert [r["method"] for r in records.values()] == ["disk-full"]  # recorded; constant never started
    assert "No space left on device" in next(iter(records.values()))["error"]


# ------------------------------------------------------------------------------------- 3. one writer per trial


def _spawn(runs: Path, flag: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "harness.cli", *PLUGINS, "run", "--methods", "waits", "--set",
            f"waits.flag={flag}", "--runs-dir", str(runs), *SMOKE, *TINY, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear: {proc.communicate()[0][-3000:]}")
        time.sleep(0.05)


@pytest.mark.slow  # a second Python process (imports torch)
def test_a_second_process_skips_a_trial_in_progress_and_says_so(tmp_path, cli):
    runs, flag = tmp_path / "runs", tmp_path / "go"
    first = _spawn(runs, flag)
    try:
        _wait_for(Path(f"{flag}.started"), first)
        second = cli(*PLUGINS, "run", "--methods", "waits", "--set", f"waits.flag={flag}", "--runs-dir", str(runs),
                     *SMOKE, *TINY)
        assert second.exit_code == 0, second.output
        assert f"in progress in another process (pid {first.pid} on " in second.output
        assert "0 ok, 0 skipped (done before), 0 failed, 1 left to another process" in second.output
        assert Path(f"{flag}.started").read_text() == str(first.pid)  # the second never started the method
        assert not _records(runs)
    finally:
        flag.touch()
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output[-3000:]
    (record,) = _records(runs).values()
    assert record["status"] == "ok"


@pytest.mark.slow  # a second Python process (imports torch)
def test_a_killed_run_leaves_no_lock_behind(tmp_path, cli):
    runs, flag = tmp_path / "runs", tmp_path / "go"
    first = _spawn(runs, flag, "--set", "waits.seconds=2")
    _wait_for(Path(f"{flag}.started"), first)
    first.kill()  # kill -9: no handler runs; the kernel releases the flock
    first.communicate(timeout=60)
    again = cli(*PLUGINS, "run", "--methods", "waits", "--set", f"waits.flag={flag}", "--set", "waits.seconds=2",
                "--runs-dir", str(runs), *SMOKE, *TINY)
    assert again.exit_code == 0 and "in progress" not in again.output
    (record,) = _records(runs).values()
    assert record["status"] == "ok"


def _trial_and_settings(tmp_path):
    from tests import failing_plugin

    manager = load_plugins(objects=[("failing", failing_plugin)])
    registry = manager.build_registry()
    exp = Experiment(methods=("constant",), datasets=("synthetic",), profile="smoke",
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}})
    (trial,) = expand(exp, registry)
    return trial, RunSettings(runs_dir=tmp_path, latency=LatencySettings(onnx=False), threads=1), registry, manager


def test_run_trial_refuses_a_trial_held_or_finished_by_another_process(tmp_path):
    from harness.run.resume import ResumeCheck

    trial, settings, registry, manager = _trial_and_settings(tmp_path)
    store = ResultStore.of(tmp_path, trial.experiment)
    with store.lock(trial.key), pytest.raises(TrialSkipped, match=f"in progress in another process \\(pid {os.getpid()}"):
        run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    decision = ResumeCheck(settings, registry).decide(trial)
    assert decision.state == "todo"
    first = run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)  # "elsewhere"
    written = store.result_path(trial.key).read_bytes()
    with pytest.raises(TrialSkipped, match="finished by another process meanwhile"):
        run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None, decision=decision)
    assert store.result_path(trial.key).read_bytes() == written and first.ok


def test_running_a_finished_trial_again_keeps_the_first_result(tmp_path):
    trial, settings, registry, manager = _trial_and_settings(tmp_path)
    run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    trial_dir = tmp_path / trial.experiment / trial.key
    written = (trial_dir / "result.json").read_bytes()
    run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    (kept,) = _superseded(trial_dir)
    assert kept.read_bytes() == written and kept.parent.name.endswith("-rerun")


# ------------------------------------------------------------------------------------- 4. errors, not tracebacks


@pytest.mark.parametrize("content, problem", [
    ('{"key": "x", "method": "constant", "dat', "is not valid JSON"),
    ('{"key": "K", "method": "constant", "dataset": "synthetic", "status": "ok", "metrics": [1]}',
     "field 'metrics' must be a dict"),
    ("[]", "expected a JSON object"),
])
def test_a_malformed_result_is_named_kept_and_its_trial_runs_again(tmp_path, cli, content, problem):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    ((key, _),) = _records(runs).items()
    path = runs / "synthetic" / key / "result.json"
    path.write_text(content.replace("K", key))
    again = _run_synthetic(cli, runs)
    assert again.exit_code == 0 and "Traceback" not in again.output
    assert f"runs again: its result cannot be read ({path}" in again.output and problem in again.output
    (kept,) = _superseded(path.parent)
    assert kept.read_text() == content.replace("K", key) and kept.parent.name.endswith("-unreadable")
    assert _records(runs)[key]["status"] == "ok"


@pytest.mark.slow  # a second Python process (imports torch)
def test_an_unreadable_experiment_record_is_kept_not_overwritten(tmp_path, cli):
    runs = tmp_path / "runs"
    assert _run_synthetic(cli, runs).exit_code == 0
    record = runs / "synthetic" / "experiment.json"
    record.write_text('{"commands": ["harness run --my-own-notes"')  # truncated by hand
    again = _run_synthetic(cli, runs)
    assert again.exit_code == 0
    assert f"warning: {record} could not be read (JSONDecodeError" in again.output
    (kept,) = list(record.parent.glob("experiment.json.unreadable-*"))
    assert kept.read_text() == '{"commands": ["harness run --my-own-notes"'
    assert len(json.loads(record.read_text())["commands"]) == 1


def test_two_commands_on_one_experiment_both_keep_their_command_line(tmp_path):
    import threading

    from harness.store import update_experiment_record

    root = tmp_path / "exp"
    root.mkdir()
    inside, release = threading.Event(), threading.Event()

    def slow(record):
        inside.set()
        release.wait(10)
        return {"commands": [*record.get("commands", []), "first"]}

    first = threading.Thread(target=update_experiment_record, args=(root, slow))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=update_experiment_record,
                              args=(root, lambda r: {"commands": [*r.get("commands", []), "second"]}))
    second.start()
    time.sleep(0.2)
    assert second.is_alive()  # waits for the first writer instead of reading the record under it
    release.set()
    first.join(10)
    second.join(10)
    assert json.loads((root / "experiment.json").read_text())["commands"] == ["first", "second"]


def test_ctrl_c_says_what_finished_and_the_command_that_resumes(tmp_path, cli):
    runs, flag = tmp_path / "runs", tmp_path / "go"
    args = [sys.executable, "-m", "harness.cli", *PLUGINS, "run", "--methods", "constant,waits", "--set",
            f"waits.flag={flag}", "--runs-dir", str(runs), *SMOKE, *TINY]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _wait_for(Path(f"{flag}.started"), proc)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    assert "interrupted: 1 trial(s) finished in this run (0 failed), 0 were done before, 1 not finished." in output
    assert f"Finished results are kept in {runs / 'synthetic'}. Resume with:" in output
    by_method = {r["method"]: r for r in _records(runs).values()}
    assert by_method["constant"]["status"] == "ok" and by_method["waits"]["status"] == "interrupted"
    before = (runs / "synthetic" / by_method["constant"]["key"] / "result.json").read_bytes()

    command = output.split("Resume with:\n", 1)[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[0] == "harness"
    flag.touch()
    resumed = cli(*words[1:])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.count("done already, skipped") == 1 and "1 ok, 1 skipped" in resumed.output
    assert (runs / "synthetic" / by_method["constant"]["key"] / "result.json").read_bytes() == before


def _duplicate_plugin(tmp_path, monkeypatch) -> str:
    (tmp_path / "dup_plugin.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from harness import MethodSpec, hookimpl

        @dataclass(frozen=True)
        class C:
            pass

        @hookimpl
        def register_methods(register):
            register(MethodSpec(name="constant", description="a second constant", config=C, fit="x:y",
                                uses_sampler=False))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "dup_plugin"


def test_a_duplicate_plugin_name_is_listed_so_that_one_can_be_blocked(tmp_path, cli, monkeypatch):
    dup = _duplicate_plugin(tmp_path, monkeypatch)
    plugins = ("--plugin", "tests.failing_plugin", "--plugin", dup)
    listed = cli(*plugins, "plugins")
    assert listed.exit_code == 0
    assert ("CONFLICT: method 'constant' is registered by dup_plugin and tests.failing_plugin; block one with "
            "--block-plugin NAME") in listed.output
    methods = cli(*plugins, "list", "methods")
    assert methods.exit_code == 0
    lines = [line for line in methods.output.splitlines() if line.strip().startswith("constant ")]
    assert len(lines) == 2 and all("CONFLICT" in line for line in lines)
    assert any("[plugin: dup_plugin]" in line for line in lines)
    as_json = json.loads(cli(*plugins, "plugins", "--json").stdout)
    assert as_json["conflicts"] == [{"kind": "method", "name": "constant",
                                     "plugins": ["dup_plugin", "tests.failing_plugin"]}]

    runs = tmp_path / "runs"
    refused = cli(*plugins, "run", "--methods", "constant", "--runs-dir", str(runs), *SMOKE, *TINY)
    assert refused.exit_code == 2 and "method name 'constant' is registered by 2 plugins" in refused.output
    assert "Block all but one of them (--block-plugin NAME" in refused.output and not runs.exists()
    blocked = cli(*plugins, "--block-plugin", dup, "run", "--methods", "constant", "--runs-dir", str(runs), *SMOKE,
                  *TINY)
    assert blocked.exit_code == 0, blocked.output
    other = cli(*plugins, "run", "--methods", "always-fails", "--runs-dir", str(runs), *SMOKE, *TINY)
    assert other.exit_code == 1 and "registered by 2 plugins" not in other.stdout  # other names still run


def test_an_unwritable_result_inside_a_trial_is_not_reported_as_a_method_failure(tmp_path, monkeypatch):
    """A StoreError while the trial writes its predictions stops the command (raised), after recording the
    trial's failure when that can still be written."""
    trial, settings, registry, manager = _trial_and_settings(tmp_path)
    import harness.run.runner as runner

    def no_space(*args, **kwargs):
        raise StoreError("cannot write predictions.parquet: No space left on device [errno 28]")

    monkeypatch.setattr(runner, "_write_predictions", no_space)
    with pytest.raises(StoreError, match="No space left"):
        run_trial(trial, settings, registry=registry, manager=manager, reporter=lambda **_: None)
    record = TrialResult.read(tmp_path / trial.experiment / trial.key / "result.json")
    assert record.status == "failed" and "No space left" in record.error


def test_every_test_docs_trust_names_exists():
    """docs/trust.md lists each case with its test: a renamed or deleted test must not leave the list lying."""
    import re

    text = (REPO / "docs" / "trust.md").read_text()
    named, missing = 0, []
    for row in text.splitlines():
        last = None
        for match in re.finditer(r"`(?:(test_\w+\.py))?::(\w+)`", row):
            file = match.group(1) or last
            last = file
            named += 1
            if not re.search(rf"^def {match.group(2)}\(", (REPO / "tests" / file).read_text(), re.M):
                missing.append(f"{file}::{match.group(2)}")
    assert named >= 54 and not missing, missing


def test_ctrl_c_records_started_trials_as_interrupted_and_leaves_waiting_ones_unrecorded(tmp_path):
    """A Ray sweep stopped by Ctrl-C: a trial that had started (its trial.json written) is recorded as
    ``interrupted``; one still waiting for a slot has no result at all, so a report does not show it as a failed
    seed (it is listed as not run, and the same command runs it)."""
    from harness.run.runner import record_unfinished
    from harness.store import TRIAL_FILE, atomic_write_json

    trial, settings, _, _ = _trial_and_settings(tmp_path)
    store = ResultStore.of(tmp_path, trial.experiment)
    error = "stopped (Ctrl-C) before it finished"
    since = "2026-12-01T10:00:00+00:00"  # when the command started
    assert record_unfinished(trial, settings, status="interrupted", error=error, started_since=since) is None
    assert store.read(trial.key)[0] is None
    trial_dir = tmp_path / trial.experiment / trial.key
    trial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(trial_dir / TRIAL_FILE, {**trial.to_dict(), "started": "2026-12-01T09:00:00+00:00"})
    assert record_unfinished(trial, settings, status="interrupted", error=error, started_since=since) is None  # an
    # earlier command's attempt that left no result is not this command's
    atomic_write_json(trial_dir / TRIAL_FILE, {**trial.to_dict(), "started": "2026-12-01T10:00:05+00:00"})
    written = record_unfinished(trial, settings, status="interrupted", error=error, started_since=since)
    assert written is not None and store.read(trial.key)[0].status == "interrupted"
