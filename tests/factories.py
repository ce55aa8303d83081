"""Test factories: results are built as :class:`harness.contract.result.TrialResult`, never as dicts by hand.

    result = make_result(method="resnet", seed=1, metrics={"macro_f1": 0.5})
    write_result(root / result.key, result)      # the store's own atomic write
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.contract.result import TrialResult


def make_result(method: str = "resnet", dataset: str = "toy", *, sampler: str = "uniform", seed: int = 0,
                status: str = "ok", experiment: str = "test", key: str | None = None, **fields: Any) -> TrialResult:
    """A complete, plausible result; any field can be given (``metrics=``, ``latency=``, ``config=`` ...)."""
    values: dict[str, Any] = {
        "profile": "cpu",
        "config": {"lr": 0.001},
        "dataset_options": {"size": 28, "split": "official"},
        "harness_version": "0.1.0",
        "git_commit": "abc123def",
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        "hardware": {"processor": "Test CPU", "cpu_count": 2, "device": "cpu", "torch": "2.x", "python": "3.11"},
        "metrics": {"macro_f1": 0.5, "balanced_accuracy": 0.5, "accuracy": 0.5} if status == "ok" else {},
        "params": 1000,
        "fit_seconds": 1.0,
        "total_seconds": 2.0,
        "num_classes": 3,
        "classes": ["a", "b", "c"],
        "n_train": 70,
        "n_test": 35,
        "protocol": "official",
        "data_fingerprint": "0123456789abcdef",
    }
    if status != "ok":
        values["error"] = "RuntimeError: deliberate failure"
    values.update(fields)
    return TrialResult(key=key or f"{method}-{dataset}-{sampler}-s{seed}", method=method, dataset=dataset,
                       sampler=sampler, seed=seed, status=status, experiment=experiment, **values)


def write_result(folder: Path, result: TrialResult) -> Path:
    """Write ``result`` to ``folder/result.json`` the way the runner does; returns the folder."""
    from harness.store import write_result as store_write

    store_write(Path(folder), result)
    return Path(folder)
