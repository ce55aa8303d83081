"""Executors: how the trials of an experiment are run. Each calls ``harness.run.runner.run_trial``.

- ``local``: in-process, one trial after another (:mod:`harness.run.executors.local`).
- ``ray``: one Ray Tune trial per trial, in parallel (:mod:`harness.run.executors.ray`; Ray is imported only
  when something is submitted).

:data:`EXECUTORS` is the table ``harness run --executor NAME`` looks names up in: each entry is a function
``(trials, settings, options, out) -> RunSummary``, where ``options`` are the executor's own options
(:class:`harness.run.executors.ray.RayOptions` for Ray; ignored by ``local``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.errors import HarnessError
from harness.run.executors.base import RunSummary, progress_metrics

__all__ = ["EXECUTORS", "RunSummary", "get_executor", "progress_metrics"]


def _local(trials, settings, options, out) -> RunSummary:
    from harness.run.executors.local import run_local

    return run_local(trials, settings, out=out)


def _ray(trials, settings, options, out) -> RunSummary:
    from harness.run.executors.ray import run_ray

    return run_ray(trials, settings, options, out=out)


EXECUTORS: dict[str, Callable[[list, Any, Any, Any], RunSummary]] = {"local": _local, "ray": _ray}


def get_executor(name: str) -> Callable[[list, Any, Any, Any], RunSummary]:
    if name not in EXECUTORS:
        raise HarnessError(f"unknown executor {name!r}; expected one of {', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[name]
