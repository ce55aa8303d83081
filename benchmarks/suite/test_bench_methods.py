"""Per registered method: a smoke ``fit`` and one inference batch (issue 17, item 1).

"Training step": a single optimiser step is not reachable through the public contract (``fit(data, config,
ctx) -> Predictor`` owns its loop), so ``test_fit_smoke`` times a **full smoke fit** through the harness's one
fit path (``harness.run.runner.fit_trial``: seeding, loading the data, resolving the ``smoke`` profile,
``method.fit``), on the synthetic dataset shrunk to 16 px and 70 / 35 / 35 images. ``test_predict_batch``
times ``Predictor.predict`` on one batch of 32 test images from a predictor fitted once per method.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import method_names

DATA = {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}
BATCH = 32
_fitted: dict[str, object] = {}  # method -> Fitted, shared by the two benchmarks of a method


def _fit(name: str, registry, root: Path):
    from harness.contract.result import TrialResult
    from harness.run.runner import fit_trial
    from harness.run.settings import RunSettings
    from harness.run.trial import Experiment, expand

    (trial,) = expand(Experiment(methods=(name,), datasets=("synthetic",), profile="smoke",
                                 overrides={"synthetic": DATA}, name="bench"), registry)
    trial_dir = Path(tempfile.mkdtemp(dir=root, prefix=f"{name}-"))
    settings = RunSettings(runs_dir=root, threads=1, device="cpu")
    result = TrialResult(key=trial_dir.name, method=name, dataset="synthetic", sampler=trial.sampler, seed=0,
                         profile="smoke", status="ok")
    return fit_trial(trial, settings, registry=registry, trial_dir=trial_dir, reporter=lambda **_: None,
                     result=result)


@pytest.fixture(scope="module")
def fit_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fits")


def fitted(name: str, registry, root: Path):
    if name not in _fitted:
        _fitted[name] = _fit(name, registry, root)
    return _fitted[name]


@pytest.mark.parametrize("method", method_names())
def test_fit_smoke(benchmark, method, registry, fit_root):
    """A full smoke fit (not a single step: see the module docstring); median of 3 rounds, no warm-up round
    (the first fit of a session also pays lazy imports: the median leaves it out)."""
    benchmark.group = "method: smoke fit (full)"
    out = benchmark.pedantic(_fit, args=(method, registry, fit_root), rounds=3, iterations=1)
    _fitted[method] = out


@pytest.mark.parametrize("method", method_names())
def test_predict_batch(benchmark, method, registry, fit_root):
    """``Predictor.predict`` on one batch of 32 uint8 test images (16 px), after one warm-up call."""
    benchmark.group = "method: inference batch of 32"
    f = fitted(method, registry, fit_root)
    images = f.data.test.images[:BATCH]
    probs = benchmark.pedantic(f.predictor.predict, args=(images,), rounds=5, warmup_rounds=1, iterations=1)["probs"]
    assert probs.shape == (len(images), f.data.num_classes)
