"""Executors: how the trials of an experiment are run. Each calls ``harness.run.runner.run_trial``.

- ``local``: in-process, one trial after another (:mod:`harness.run.executors.local`).
"""

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
