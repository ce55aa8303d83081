"""Dataset loads (issue 17, item 2), through the harness's own path (``harness.run.trial.load_data``).

``synthetic`` is generated, never cached (its plugin says so: ids and the fingerprint are computed from the
arrays on every load), so its figure is the generation at the given size. ``retinamnist`` (the real MedMNIST
file, 28 px) is timed from the prepared-splits cache (memory-mapped ``.npy``) after one warm-up load builds
it; it is skipped unless ``HARNESS_TEST_DATA`` or ``../shared/data`` next to the repository holds
``retinamnist/retinamnist.npz``.
"""

from __future__ import annotations

import pytest
from conftest import shared_data_dir


def _loader(registry, dataset: str, profile: str, data_dir=None, overrides=None):
    from harness.run.settings import RunSettings
    from harness.run.trial import Experiment, expand, load_data

    (trial,) = expand(Experiment(methods=("resnet",), datasets=(dataset,), profile=profile,
                                 overrides=overrides or {}, name="bench"), registry)
    settings = RunSettings(data_dir=data_dir, threads=1, device="cpu")
    return lambda: load_data(trial, registry, settings)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_synthetic_load(benchmark, registry, profile):
    """Synthetic at its ``smoke`` profile (16 px, 140/70/140) and its ``cpu`` default (28 px)."""
    benchmark.group = "dataset load"
    data = benchmark.pedantic(_loader(registry, "synthetic", profile), rounds=5, warmup_rounds=1, iterations=1)
    assert len(data.train) > 0


def test_retinamnist_load_from_cache(benchmark, registry):
    """RetinaMNIST, 28 px, official splits (1080/120/400), from the harness cache."""
    root = shared_data_dir()
    if not (root / "retinamnist" / "retinamnist.npz").exists():
        pytest.skip(f"real MedMNIST data not found at {root} (set HARNESS_TEST_DATA to the shared/data folder)")
    benchmark.group = "dataset load"
    load = _loader(registry, "retinamnist", "cpu", data_dir=root)
    load()  # builds the cache
    data = benchmark.pedantic(load, rounds=10, warmup_rounds=1, iterations=1)
    assert len(data.test) > 0
