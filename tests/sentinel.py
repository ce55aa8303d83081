"""Helpers for the tests that check a method never reads the held-out splits: splits whose validation and test
pixels are a value no training pixel has, and a recorder of a function's calls."""

from __future__ import annotations

import numpy as np

from harness import DataSplits, Split


def sentinel_splits(train_counts=(16, 8, 6), held_out_per_class: int = 3, size: int = 16) -> DataSplits:
    """Train pixels in [0, 200] (``train_counts`` images per class); every validation and test pixel is 255."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(train_counts)), train_counts)
    train = Split(rng.integers(0, 201, (len(labels), size, size, 3), dtype=np.uint8), labels)
    held_out = np.tile(np.arange(len(train_counts)), held_out_per_class)
    val = Split(np.full((len(held_out), size, size, 3), 255, np.uint8), held_out)
    test = Split(np.full((len(held_out), size, size, 3), 255, np.uint8), held_out.copy())
    return DataSplits(train=train, val=val, test=test, classes=tuple("abcdefghij"[: len(train_counts)]),
                      name="sentinel")


def record_calls(monkeypatch, module, name: str) -> list[dict]:
    """Wrap ``module.name`` so each call's arguments are recorded (and the call goes through)."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append({"args": args, "kwargs": kwargs})
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls
