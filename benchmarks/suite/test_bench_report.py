"""A full ``harness report`` on a 20-method leaderboard (issue 17, item 5).

Fake results written once with the store's writer (``fakes.py``): 20 methods x 3 seeds on one dataset, a
small test set of 200 images of 5 classes. The command is the CLI's own (``harness report RUNS --out DIR``
through click, in-process: the Python start-up and imports are not in the figure), with its defaults
(2,000 bootstrap resamples, Holm): read the folder, the statistics and rank bands, Markdown, HTML, Parquet
and the Pareto SVG. Each round writes into a fresh output folder.
"""

from __future__ import annotations

import itertools

import pytest


@pytest.fixture(scope="module")
def runs_20(tmp_path_factory):
    from fakes import fake_runs

    root = tmp_path_factory.mktemp("report") / "runs"
    assert fake_runs(root, datasets=1, methods=20, seeds=3, images=200, classes=5) == 60
    return root


def test_harness_report_20_methods(benchmark, runs_20, tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    benchmark.group = "report: harness report, 20 methods x 3 seeds"
    runner, counter = CliRunner(), itertools.count()

    def report():
        return runner.invoke(main, ["report", str(runs_20), "--out", str(tmp_path / f"site{next(counter)}")])

    result = benchmark.pedantic(report, rounds=3, warmup_rounds=1, iterations=1)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site0" / "index.html").exists() and (tmp_path / "site0" / "leaderboard.md").exists()
