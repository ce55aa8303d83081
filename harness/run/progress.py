"""Progress of a sweep, shared by the local and Ray executors: a line after every finished trial with the trials
done / failed / left, the elapsed time and an estimate of the time left, and (local executor) a line per epoch.

``[3/30 done, 0 failed, 27 left] elapsed 12m04s, about 1h48m left``

The estimate is the mean time of the trials finished in this command x the trials left / the trials running at
once (:func:`estimate_left`); trials done before the command (skipped) count as done but not in the mean.

Output is plain lines, always, so logs and CI read the same as a terminal. On a terminal (``out.isatty()``) the
per-epoch line of the running trial is redrawn in place with a carriage return instead of adding a line per
epoch; never when the output is a file or a pipe (no ``\\r``, no escape codes there).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

SKIPPED_KEYS = ("epoch", "seconds", "lr", "stage")  # shown in their own place, or not at all (lr)


def format_duration(seconds: float) -> str:
    """``42s``, ``12m04s``, ``1h48m`` (hours drop the seconds)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def estimate_left(durations: Iterable[float], remaining: int, concurrency: int = 1) -> float | None:
    """Seconds left: mean of ``durations`` (finished trials) x ``remaining`` / ``concurrency`` (at most
    ``remaining`` trials run at once). None before any trial has finished."""
    durations = list(durations)
    if not durations:
        return None
    if remaining <= 0:
        return 0.0
    at_once = max(1, min(int(concurrency), remaining))
    return sum(durations) / len(durations) * remaining / at_once


def is_live(out: TextIO) -> bool:
    """Whether ``out`` is an interactive terminal (not a file, pipe, CI log or ``TERM=dumb``)."""
    try:
        tty = bool(out.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class SweepProgress:
    """Counts the trials of one command and prints their progress to ``out``.

    ``total`` trials, ``concurrency`` of them at once (1 for the local executor). Call :meth:`skipped` for a trial
    that needs no run (done before, or another process holds it), :meth:`finished` when a trial ends, and use
    :meth:`epoch_reporter` as a trial's per-epoch reporter. :meth:`say` prints any other line."""

    def __init__(self, total: int, *, concurrency: int = 1, out: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, shown: Iterable[str] = ()):
        self.total = total
        self.concurrency = max(1, int(concurrency))
        self.out = out or sys.stdout
        self.live = is_live(self.out) if live is None else live
        self.clock = clock
        self.shown = tuple(shown)  # the metrics whose val_ scores an epoch line shows (all val_ scores if empty)
        self.start = clock()
        self.done = 0  # ok, or done before (skipped)
        self.failed = 0
        self.durations: list[float] = []
        self._open = 0  # length of an epoch line drawn in place (live only) that the next line must end

    def __getstate__(self) -> dict[str, Any]:
        """Picklable without its stream (Ray Tune saves its callbacks with the experiment's state): a copy
        restored from a pickle prints to ``sys.stdout``."""
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = self.out or sys.stdout

    @property
    def left(self) -> int:
        return max(0, self.total - self.done - self.failed)

    def skipped(self, n: int = 1) -> None:
        self.done += n

    def finished(self, ok: bool, seconds: float) -> str:
        """Count a trial that ran for ``seconds``; print and return the progress line."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.durations.append(seconds)
        line = self.line()
        self.say(line)
        return line

    def line(self) -> str:
        elapsed = self.clock() - self.start
        text = (f"[{self.done}/{self.total} done, {self.failed} failed, {self.left} left] "
                f"elapsed {format_duration(elapsed)}")
        estimate = estimate_left(self.durations, self.left, self.concurrency)
        if estimate is not None and self.left:
            text += f", about {format_duration(estimate)} left"
        return text

    def say(self, text: str) -> None:
        """Print a line (ending an epoch line drawn in place first)."""
        self._close()
        print(text, file=self.out, flush=True)

    def _close(self) -> None:
        if self._open:
            print(file=self.out, flush=True)
            self._open = 0

    def epoch_line(self, values: dict[str, Any], total_epochs: int | None = None) -> str:
        """``    epoch 4/10  loss 0.53  val_macro_f1 0.41  (3.2s)``: one ``ctx.report`` record, short."""
        parts = []
        epoch = values.get("epoch")
        if epoch is not None:
            of = f"/{total_epochs}" if total_epochs and isinstance(epoch, int) and epoch <= total_epochs else ""
            parts.append(f"epoch {epoch}{of}")
        if values.get("stage"):
            parts.append(f"[{values['stage']}]")
        for key, value in values.items():
            if key in SKIPPED_KEYS:
                continue
            if key.startswith("val_") and self.shown and key[4:] not in self.shown:
                continue
            parts.append(f"{key} {_number(value)}")
        if isinstance(values.get("seconds"), (int, float)):
            parts.append(f"({format_duration(values['seconds'])})")
        return "    " + "  ".join(parts)

    def epoch_reporter(self, total_epochs: int | None = None) -> Callable[..., None]:
        """A reporter for ``run_trial``: prints each ``ctx.report`` record as an epoch line (redrawn in place on
        a terminal, one line per epoch otherwise)."""

        def report(**values: Any) -> None:
            text = self.epoch_line(values, total_epochs)
            if self.live:
                pad = max(0, self._open - len(text))
                self.out.write("\r" + text + " " * pad)
                self.out.flush()
                self._open = len(text)
            else:
                print(text, file=self.out, flush=True)

        return report

    def end_trial(self) -> None:
        """End an epoch line drawn in place (before output this class does not print)."""
        self._close()


def epochs_of(config: dict[str, Any]) -> int | None:
    """A trial's epoch count from its resolved config, when it is a budget in epochs (``epochs`` set and no
    ``steps`` budget); None otherwise (the epoch lines then show no total)."""
    epochs = config.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 and not config.get("steps"):
        return epochs
    return None


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
