"""What every executor returns (RunSummary) and its progress line, shared by the local and Ray executors."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunSummary:
    """What an executor did: trials skipped (already done), run ok, and failed."""

    skipped: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def progress_metrics(result, settings) -> str:
    """``macro_f1 0.412  balanced_accuracy 0.398 ...``: the settings' shown metrics of a finished trial."""
    return "  ".join(f"{k} {result.metrics[k]:.3f}" for k in settings.shown_metrics
                     if result.metrics.get(k) is not None)
