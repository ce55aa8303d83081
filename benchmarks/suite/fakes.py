"""Fake stored trials for the results and report benchmarks, written as ``harness run`` writes them: a
``TrialResult`` through the store's own writer (``harness.store.write_result``, atomic) and a
``predictions.parquet`` next to it (the pattern of tests/test_report.py's ``write_trial``).

Every method of a dataset is scored on the same test labels (so the paired tests pair them); method m is
right on a fraction 0.3 + 0.6 m / (M - 1) of the images, plus noise per seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.contract.result import TrialResult
from harness.results.stats import confusion, metric_from_confusion
from harness.store import write_result

METRICS = ("macro_f1", "balanced_accuracy", "mcc", "accuracy")


def write_trial(root: Path, dataset: str, method: str, seed: int, labels: np.ndarray, pred: np.ndarray,
                classes: int, ms: float) -> Path:
    import polars as pl

    folder = root / f"{method}-{dataset}-uniform-s{seed}"
    folder.mkdir(parents=True)
    probs = np.full((len(labels), classes), 0.1 / classes)
    probs[np.arange(len(labels)), pred] += 0.9
    frame = {"index": np.arange(len(labels)), "label": labels, "pred": pred}
    frame.update({f"prob_{k}": probs[:, k] for k in range(classes)})
    pl.DataFrame(frame).write_parquet(folder / "predictions.parquet")
    cm = confusion(labels, pred, classes)
    write_result(folder, TrialResult(
        key=folder.name, method=method, dataset=dataset, sampler="uniform", seed=seed, status="ok",
        experiment=root.name, profile="cpu", num_classes=classes, classes=[f"c{k}" for k in range(classes)],
        config={"lr": 1e-3}, git_commit="bench", harness_version="0.1.0", params=1_000_000, fit_seconds=1.0,
        total_seconds=2.0, n_train=100, n_test=len(labels), protocol="official",
        data_fingerprint="0123456789abcdef",
        metrics={m: float(metric_from_confusion(m, cm)) for m in METRICS},
        latency={"ms_per_image_b1": ms, "ms_per_image_b64": ms / 10},
    ))
    return folder


def fake_runs(root: Path, *, datasets: int, methods: int, seeds: int, images: int, classes: int) -> int:
    """``datasets x methods x seeds`` ok trials under ``root``; returns how many."""
    rng = np.random.default_rng(0)
    for d in range(datasets):
        labels = rng.integers(0, classes, images)
        for m in range(methods):
            skill = 0.3 + 0.6 * m / max(methods - 1, 1)
            ms = float(rng.uniform(0.5, 50))
            for seed in range(seeds):
                pred = np.where(rng.random(images) < skill, labels, rng.integers(0, classes, images))
                write_trial(root, f"data{d}", f"method{m:02d}", seed, labels, pred, classes, ms * (1 + 0.05 * seed))
    return datasets * methods * seeds
