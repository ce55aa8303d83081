"""Sweep progress (harness/run/progress.py): the estimate's arithmetic, and plain lines when the output is not a
terminal (no escape codes, no carriage-return redraws), from the local executor through the CLI."""

from __future__ import annotations

import io

import pytest

from harness.run.executors.ray import SKIPPED, TrialCounter
from harness.run.progress import SweepProgress, epochs_of, estimate_left, format_duration
from tests.conftest import TINY

SMOKE = ("--profile", "smoke", "--no-onnx", "--threads", "1", *TINY)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_estimate_is_mean_trial_time_times_left_over_concurrency():
    assert estimate_left([], 5) is None  # nothing finished: no estimate
    assert estimate_left([10.0, 20.0], 3) == pytest.approx(45.0)  # 15 s a trial x 3 left
    assert estimate_left([10.0, 20.0], 3, concurrency=2) == pytest.approx(22.5)
    assert estimate_left([10.0], 1, concurrency=4) == pytest.approx(10.0)  # 1 left runs alone, not in a quarter
    assert estimate_left([10.0], 0) == 0.0


def test_durations_read_as_people_write_them():
    assert format_duration(42) == "42s"
    assert format_duration(724) == "12m04s"
    assert format_duration(6480) == "1h48m"
    assert format_duration(-3) == "0s"


def test_progress_line_counts_done_failed_left_and_estimates():
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress(30, out=out, clock=clock)
    for _ in range(3):
        clock.now += 240
        progress.finished(True, 240.0)
    clock.now += 4  # 724 s in all
    assert progress.line() == "[3/30 done, 0 failed, 27 left] elapsed 12m04s, about 1h48m left"
    progress.finished(False, 240.0)
    assert out.getvalue().splitlines()[-1].startswith("[3/30 done, 1 failed, 26 left]")
    progress.skipped(26)  # done before this command: counted as done, not in the mean
    assert progress.line() == "[29/30 done, 1 failed, 0 left] elapsed 12m04s"

    parallel = SweepProgress(10, concurrency=4, out=io.StringIO(), clock=clock)
    parallel.finished(True, 100.0)
    assert parallel.line().endswith("about 3m45s left")  # 100 s x 9 left / 4 at once


def test_epoch_lines_plain_off_a_terminal_and_redrawn_on_one():
    record = {"epoch": 4, "loss": 0.5312, "lr": 1e-3, "val_macro_f1": 0.41, "val_ece": 0.2, "seconds": 3.2}
    out = io.StringIO()
    plain = SweepProgress(2, out=out, shown=("macro_f1",))
    assert not plain.live  # a StringIO is not a terminal
    report = plain.epoch_reporter(total_epochs=10)
    report(**record)
    report(**{**record, "epoch": 5})
    plain.say("    ok")
    assert out.getvalue() == ("    epoch 4/10  loss 0.5312  val_macro_f1 0.41  (3s)\n"
                              "    epoch 5/10  loss 0.5312  val_macro_f1 0.41  (3s)\n    ok\n")

    term = io.StringIO()
    live = SweepProgress(2, out=term, live=True)
    report = live.epoch_reporter()
    report(epoch=1, loss=0.5)
    report(epoch=2, loss=0.25)
    live.say("    ok")
    assert term.getvalue() == "\r    epoch 1  loss 0.5\r    epoch 2  loss 0.25\n    ok\n"


def test_progress_pickles_without_its_stream():  # Ray Tune pickles its callbacks with the experiment state
    import pickle
    import sys

    progress = SweepProgress(3, out=io.StringIO())
    progress.finished(True, 2.0)
    copy = pickle.loads(pickle.dumps(progress))
    assert copy.out is sys.stdout and (copy.done, copy.durations) == (1, [2.0])


def test_epoch_total_only_for_an_epoch_budget():
    assert epochs_of({"epochs": 10, "steps": 0}) == 10
    assert epochs_of({"epochs": 10, "steps": 108}) is None  # a step budget: the epoch count is not known
    assert epochs_of({"lr": 0.1}) is None


def test_ray_trials_count_once_when_they_end():
    out = io.StringIO()
    progress = SweepProgress(4, concurrency=2, out=out)
    counter = TrialCounter(progress)
    counter.result("a", {"epoch": 1, "loss": 0.3})  # a per-epoch report: not an end
    counter.result("a", {"trial_status": "ok", "time_total_s": 10.0})
    counter.result("a", {"trial_status": "ok", "time_total_s": 10.0})  # reported twice: counted once
    counter.result("b", {"trial_status": SKIPPED})
    counter.error("c", 4.0)
    assert (progress.done, progress.failed, progress.left) == (2, 1, 1)
    assert out.getvalue().splitlines()[-1].startswith("[2/4 done, 1 failed, 1 left]")


def test_cli_progress_is_plain_text_when_not_a_terminal(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "constant,always-fails", "--plugin", "tests.failing_plugin", "--seeds", "0,1",
                 "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 1, result.output  # the failing method's trials failed, the others ran
    assert "\x1b" not in result.output and "\r" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[") and " done, " in line]
    assert len(lines) == 4 and lines[-1].startswith("[2/4 done, 2 failed, 0 left] elapsed ")
    assert all(" left] elapsed " in line for line in lines) and "about" in lines[0]

    trained = cli("run", "--methods", "resnet", "--seeds", "0", "--runs-dir", str(runs), *SMOKE)
    assert trained.exit_code == 0, trained.output
    assert "\x1b" not in trained.output and "\r" not in trained.output
    assert "    epoch 1/1  loss " in trained.output and "val_macro_f1" in trained.output
    assert "[1/1 done, 0 failed, 0 left]" in trained.output
