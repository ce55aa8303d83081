"""What every executor returns (RunSummary) and its progress line, shared by the local and Ray executors."""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_FAILED = 1  # a trial failed (the others ran)
EXIT_STOPPED = 2  # the command stopped on an error (e.g. the runs folder cannot be written): as a HarnessError
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


@dataclass
class RunSummary:
    """What an executor did: trials skipped (already done), run ok, and failed; trials another process holds
    (``busy``), results kept without a data check (``unverified``), and whether the command stopped early
    (``stopped``: why; ``interrupted``: by Ctrl-C) with ``not_run`` trials left."""

    skipped: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)  # key -> who holds it, or that it finished elsewhere
    unverified: list[str] = field(default_factory=list)  # also in ``skipped``
    rerun: dict[str, str] = field(default_factory=dict)  # key -> why a stored result did not count as done
    stopped: str | None = None
    interrupted: bool = False
    not_run: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped:
            return EXIT_STOPPED
        return EXIT_FAILED if self.failed else 0


def progress_metrics(result, settings) -> str:
    """``macro_f1 0.412  balanced_accuracy 0.398 ...``: the settings' shown metrics of a finished trial."""
    return "  ".join(f"{k} {result.metrics[k]:.3f}" for k in settings.shown_metrics
                     if result.metrics.get(k) is not None)
