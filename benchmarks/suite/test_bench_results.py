"""The leaderboard and statistics over 10,000 stored results (issue 17, item 4).

Once per session, 10,000 fake ok trials are written with the store's own writer (``fakes.py``): 50 datasets x
20 methods x 10 seeds, 50 test images of 3 classes each, with ``predictions.parquet``. Then, separately:
``harness.store.load_runs`` (every ``result.json`` read and parsed into the table), ``leaderboard.build`` (the
grouped means, SDs and t intervals) and ``summarise`` (leaderboard + the paired two-level bootstrap against each
dataset's top, rank bands, Holm, confusion matrices, Pareto flags; 200 bootstrap resamples instead of the
default 2,000 to keep the suite short).
"""

from __future__ import annotations

import pytest

SHAPE = {"datasets": 50, "methods": 20, "seeds": 10, "images": 50, "classes": 3}


@pytest.fixture(scope="session")
def big_runs(tmp_path_factory):
    from fakes import fake_runs

    root = tmp_path_factory.mktemp("results") / "runs"
    assert fake_runs(root, **SHAPE) == 10_000
    return root


@pytest.fixture(scope="session")
def loaded(big_runs):
    from harness.store import load_runs

    return load_runs(big_runs)


def test_load_runs_10k(benchmark, big_runs):
    from harness.store import load_runs

    benchmark.group = "results: 10,000 stored trials"
    runs = benchmark.pedantic(load_runs, args=(big_runs,), rounds=3, iterations=1)
    assert len(runs.records) == 10_000 and not runs.unreadable


def test_leaderboard_build_10k(benchmark, loaded):
    from harness.results import leaderboard

    benchmark.group = "results: 10,000 stored trials"
    board = benchmark.pedantic(leaderboard.build, args=(loaded,), rounds=2, iterations=1)
    assert board.height == SHAPE["datasets"] * SHAPE["methods"]


def test_summary_statistics_10k(benchmark, loaded):
    from harness.results.summary import Settings, summarise

    benchmark.group = "results: 10,000 stored trials"
    summary = benchmark.pedantic(summarise, args=(loaded, Settings(replicates=200)), rounds=1, iterations=1)
    assert summary.board.height == SHAPE["datasets"] * SHAPE["methods"]
