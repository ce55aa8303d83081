"""``harness report``: the files it writes, the statistics in them, escaping, and the page in a real
headless Chromium. Trials are fake folders (result.json + predictions.parquet written directly): no
training, so the whole file runs in seconds."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from harness.report import json_for_script, write_report
from harness.results.stats import summarise

XSS = "<img src=x onerror=alert(1)>"
K = 3
N_TEST = 90
CLASSES = ["normal", "mild", "severe"]


def _labels() -> np.ndarray:
    return np.random.default_rng(123).integers(0, K, N_TEST)  # the same test set for every trial and seed


def write_trial(root: Path, method: str, seed: int, pred: np.ndarray, ms: float | None, *, dataset: str = "toy",
                sampler: str = "uniform", labels: np.ndarray | None = None, config: dict | None = None,
                artefact: bool = False, status: str = "ok") -> Path:
    labels = _labels() if labels is None else labels
    folder = root / f"{method}-{dataset}-{sampler}-s{seed}".replace("<", "_").replace(">", "_").replace(" ", "_")
    folder = folder.parent / re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name)
    folder.mkdir(parents=True)
    probs = np.full((len(labels), K), 0.1)
    probs[np.arange(len(labels)), pred] = 0.8
    frame = {"index": np.arange(len(labels)), "label": labels, "pred": pred}
    frame.update({f"prob_{k}": probs[:, k] for k in range(K)})
    pl.DataFrame(frame).write_parquet(folder / "predictions.parquet")
    result = {
        "schema": 1, "key": folder.name, "experiment": root.name, "method": method, "dataset": dataset,
        "sampler": sampler, "seed": seed, "profile": "cpu", "status": status, "num_classes": K, "classes": CLASSES,
        "config": config or {"lr": 0.001}, "git_commit": "abc123def", "harness_version": "0.1.0",
        "hardware": {"processor": "Test CPU", "cpu_count": 2, "device": "cpu", "torch": "2.x", "python": "3.11"},
        "params": 1000 + seed, "fit_seconds": 1.0, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        "metrics": {"macro_f1": f1_score(labels, pred, average="macro", labels=range(K), zero_division=0),
                    "accuracy": accuracy_score(labels, pred),
                    "balanced_accuracy": balanced_accuracy_score(labels, pred)},
        "latency": {} if ms is None else {"ms_per_image_b1": ms, "ms_per_image_b64": ms / 10},
    }
    (folder / "result.json").write_text(json.dumps(result))
    if artefact:
        from PIL import Image

        (folder / "artefacts").mkdir()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "artefacts" / "samples.png")
        (folder / "artefacts" / "notes.txt").write_text("not an image")
    return folder


def _noisy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < accuracy, labels, rng.integers(0, K, len(labels)))


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """Three seeds of: a perfect but slow method, a good fast one, a poor one, and the XSS-named one."""
    root = tmp_path / "runs" / "exp"
    y = _labels()
    for seed in range(3):
        write_trial(root, "oracle", seed, y.copy(), 5.0 + seed * 0.1, artefact=seed == 0)
        write_trial(root, "fastnet", seed, _noisy(y, 0.8, 10 + seed), 0.5)
        write_trial(root, "weak", seed, _noisy(y, 0.3, 20 + seed), 2.0)
        write_trial(root, XSS, seed, _noisy(y, 0.5, 30 + seed), 1.0, config={"note": "</script><b>x</b>"})
    write_trial(root, "broken", 0, y.copy(), 1.0, status="failed")
    (root / "experiment.json").write_text(json.dumps({"command": "harness run --seeds 0,1,2",
                                                      "commands": ["harness run --seeds 0,1,2"]}))
    return root


def _f1(labels, pred):
    return f1_score(labels, pred, average="macro", labels=range(K), zero_division=0)


# ---------------------------------------------------------------- statistics end to end


def test_summary_statistics_match_scipy_and_sklearn(runs):
    summary = summarise(runs, replicates=400)
    board = summary.board
    assert board["method"].to_list() == ["oracle", "fastnet", XSS, "weak"]
    y = _labels()
    fast_preds = [_noisy(y, 0.8, 10 + s) for s in range(3)]
    row = board.filter(pl.col("method") == "fastnet").row(0, named=True)
    f1s = np.array([_f1(y, p) for p in fast_preds])
    low, high = stats.t.interval(0.95, 2, loc=f1s.mean(), scale=stats.sem(f1s))
    assert row["macro_f1_mean"] == pytest.approx(f1s.mean())
    assert (row["macro_f1_ci_low"], row["macro_f1_ci_high"]) == pytest.approx((low, high))
    # paired against the top (oracle, perfect on every image): the difference is real
    assert row["top_method"] == "oracle"
    assert row["f1_diff"] == pytest.approx(f1s.mean() - 1.0)
    assert row["f1_significant"] and row["f1_p_value"] < 0.05 and row["f1_diff_ci_high"] < 0
    wrong = sum(int(np.sum(p != y)) for p in fast_preds)
    assert (row["mcnemar_b"], row["mcnemar_c"]) == (0, wrong)
    assert row["mcnemar_p_value"] == pytest.approx(stats.binomtest(0, wrong, 0.5).pvalue)
    assert row["paired_seeds"] == 3
    # paired t-test over seeds of the per-seed Macro-F1 differences (the top's F1 is 1 on every seed)
    assert row["f1_seed_diffs"] == pytest.approx((f1s - 1.0).tolist())
    assert row["f1_seed_p_value"] == pytest.approx(stats.ttest_rel(f1s, np.ones(3)).pvalue)
    assert row["f1_seed_significant"] == (row["f1_seed_p_value"] < 0.05)
    # confusion matrix and per-class recall pooled over seeds
    cm = sum(confusion_matrix(y, p, labels=range(K)) for p in fast_preds)
    assert row["confusion_matrix"] == cm.tolist()
    assert row["per_class_recall"] == pytest.approx((np.diag(cm) / cm.sum(1)).tolist())
    top = board.row(0, named=True)
    assert top["is_top"] and top["f1_p_value"] is None
    # Pareto: oracle (best F1) and fastnet (fastest) are on the front; weak (slower, worse than fastnet) is not
    front = dict(zip(board["method"].to_list(), board["pareto"].to_list()))
    assert front == {"oracle": True, "fastnet": True, XSS: False, "weak": False}


def test_a_gap_that_flips_between_seeds_is_not_significant_over_seeds(tmp_path):
    """Better on two seeds by a lot, worse on the third: the test-image bootstrap pools the seeds and calls
    the gap significant; the t-test over seeds does not, and the report shows both."""
    root = tmp_path / "flip"
    y = _labels()
    for seed, (acc_a, acc_b) in enumerate([(0.95, 0.5), (0.95, 0.5), (0.55, 0.75)]):
        write_trial(root, "a", seed, _noisy(y, acc_a, 40 + seed), 1.0)
        write_trial(root, "b", seed, _noisy(y, acc_b, 50 + seed), 1.0)
    board = summarise(root, replicates=400).board
    assert board["method"].to_list() == ["a", "b"]
    row = board.row(1, named=True)
    assert row["f1_significant"] and row["f1_p_value"] < 0.05
    assert not row["f1_seed_significant"] and row["f1_seed_p_value"] > 0.05
    assert row["f1_seed_diffs"][2] > 0 > row["f1_seed_diffs"][0]
    out = tmp_path / "flip-report"
    write_report(root, out, replicates=400)
    table = [line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = [c.strip() for c in next(line for line in table if line.startswith("| 2 |")).strip("|").split("|")]
    assert len(cells) == len(header)
    assert cells[header.index("p (bootstrap)")].endswith("*")
    seed_cell = cells[header.index("p (seeds)")]
    assert not seed_cell.endswith("*") and float(seed_cell) == pytest.approx(row["f1_seed_p_value"], abs=0.006)
    page = (out / "index.html").read_text()
    assert f"paired t-test over seeds p = {seed_cell} — not significant" in page
    assert "Macro-F1 minus the top&#x27;s, per paired seed: " + ", ".join(
        f"{d:+.3f}" for d in row["f1_seed_diffs"]) in page


def test_no_seed_test_with_one_paired_seed_or_constant_differences(tmp_path):
    y = _labels()
    one = tmp_path / "one"
    for seed in range(2):
        write_trial(one, "a", seed, y.copy(), 1.0)
    write_trial(one, "b", 0, _noisy(y, 0.6, 60), 1.0)
    write_report(one, tmp_path / "one-report", replicates=100)
    page = (tmp_path / "one-report" / "index.html").read_text()
    assert "no t-test over seeds (one paired seed)" in page
    const = tmp_path / "const"
    for seed in range(2):  # the same predictions on every seed: the differences do not vary
        write_trial(const, "a", seed, y.copy(), 1.0)
        write_trial(const, "b", seed, _noisy(y, 0.6, 61), 1.0)
    row = summarise(const, replicates=100).board.row(1, named=True)
    assert row["f1_seed_p_value"] is None and row["f1_seed_diffs"][0] == row["f1_seed_diffs"][1] < 0
    write_report(const, tmp_path / "const-report", replicates=100)
    assert "no t-test over seeds (the differences do not vary)" in (
        tmp_path / "const-report" / "index.html").read_text()


def test_a_seed_run_twice_is_paired_once_by_its_newest_trial(tmp_path):
    """Two experiments under one root with the same seeds: each seed is one pair, not two."""
    root = tmp_path / "runs"
    y = _labels()
    newest = {}
    for exp, finished in (("old", "2026-01-01T00:01:00+00:00"), ("new", "2026-02-01T00:01:00+00:00")):
        for seed in range(2):
            write_trial(root / exp, "a", seed, y.copy(), 1.0)
            pred = _noisy(y, 0.5 if exp == "old" else 0.7, 70 + seed + (10 if exp == "new" else 0))
            folder = write_trial(root / exp, "b", seed, pred, 1.0)
            for f in (folder, root / exp / f"a-toy-uniform-s{seed}"):
                record = json.loads((f / "result.json").read_text())
                record["finished"] = finished
                (f / "result.json").write_text(json.dumps(record))
            if exp == "new":
                newest[seed] = _f1(y, pred) - 1.0
    row = summarise(root, replicates=100).board.filter(pl.col("method") == "b").row(0, named=True)
    assert row["paired_seeds"] == 2
    assert row["f1_seed_diffs"] == pytest.approx([newest[0], newest[1]])
    write_report(root, tmp_path / "twice-report", replicates=100)
    text = (tmp_path / "twice-report" / "leaderboard.md").read_text()
    assert "## Warnings" in text and "b · uniform on toy has seed(s) 0, 1 more than once" in text


def test_a_row_pooling_different_settings_is_flagged(runs, tmp_path):
    """A rerun with another config into the same results folder: the report says the row mixes settings."""
    from harness.cli import main

    root = tmp_path / "mixed"
    y = _labels()
    for seed in range(2):
        write_trial(root / "default", "a", seed, y.copy(), 1.0)
        write_trial(root / "default", "b", seed, _noisy(y, 0.6, 80 + seed), 1.0, config={"lr": 0.001})
    write_trial(root / "tuned", "b", 0, _noisy(y, 0.7, 90), 1.0, config={"lr": 0.0003})
    out = tmp_path / "mixed-report"
    result = CliRunner().invoke(main, ["report", str(root), "--out", str(out), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    expected = "b · uniform on toy pools trials run with different settings: "
    assert "warning: " + expected in result.stderr
    assert "lr=0.001 (seeds 0,1)" in result.stderr and "lr=0.0003 (seeds 0)" in result.stderr
    assert expected in (out / "leaderboard.md").read_text()
    page = (out / "index.html").read_text()
    assert 'id="warnings"' in page and html.escape(expected) in page
    # the clean fixture has no warnings anywhere
    clean = tmp_path / "clean-report"
    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(clean), "--bootstrap", "100"])
    assert "warning" not in result.stderr
    assert "## Warnings" not in (clean / "leaderboard.md").read_text()
    assert 'id="warnings"' not in (clean / "index.html").read_text()


def test_identical_methods_are_not_significantly_different(tmp_path):
    root = tmp_path / "same"
    y = _labels()
    for seed in range(2):
        pred = _noisy(y, 0.6, seed)
        write_trial(root, "a", seed, pred, 1.0)
        write_trial(root, "b", seed, pred.copy(), 1.0)
    board = summarise(root, replicates=300).board
    second = board.row(1, named=True)
    assert second["f1_diff"] == 0.0 and second["f1_p_value"] == 1.0 and not second["f1_significant"]
    assert second["mcnemar_p_value"] == 1.0 and not second["accuracy_significant"]


def test_seeds_with_other_test_images_are_not_paired(tmp_path):
    root = tmp_path / "unpaired"
    y = _labels()
    write_trial(root, "a", 0, y.copy(), 1.0)
    write_trial(root, "b", 0, y[::-1].copy(), 1.0, labels=y[::-1].copy())  # another label order
    write_trial(root, "b", 1, y.copy(), 1.0)  # a has no seed 1
    summary = summarise(root, replicates=200)
    row = summary.board.filter(pl.col("method") == "b").row(0, named=True)
    assert row["paired_seeds"] == 0 and row["f1_p_value"] is None
    detail = summary.details[("toy", "b", "uniform")]
    assert detail.comparison["unpaired_seeds"] == [0, 1]


def test_each_dataset_has_its_own_top_and_front(tmp_path):
    root = tmp_path / "two"
    y = _labels()
    write_trial(root, "a", 0, y.copy(), 3.0, dataset="d1")
    write_trial(root, "b", 0, _noisy(y, 0.5, 1), 1.0, dataset="d1")
    write_trial(root, "a", 0, _noisy(y, 0.4, 2), 3.0, dataset="d2", sampler="-")
    write_trial(root, "b", 0, y.copy(), 4.0, dataset="d2", sampler="-")
    board = summarise(root, replicates=200).board
    rows = {(r["dataset"], r["method"]): r for r in board.iter_rows(named=True)}
    assert board["dataset"].to_list() == ["d1", "d1", "d2", "d2"]
    assert rows[("d1", "a")]["is_top"] and rows[("d1", "b")]["top_method"] == "a"
    assert rows[("d2", "b")]["is_top"] and rows[("d2", "a")]["top_method"] == "b"
    assert rows[("d1", "b")]["pareto"] and rows[("d1", "a")]["pareto"]  # faster / better within d1
    assert rows[("d2", "a")]["pareto"] and rows[("d2", "b")]["pareto"]
    assert rows[("d2", "a")]["f1_diff"] == pytest.approx(_f1(y, _noisy(y, 0.4, 2)) - 1.0)


def test_harness_run_writes_the_report_and_its_command(tmp_path, cli):
    from tests.conftest import TINY

    runs = tmp_path / "runs"
    result = cli("--plugin", "tests.failing_plugin", "run", "--methods", "constant", "--seeds", "0,1",
                 "--runs-dir", str(runs), "--profile", "smoke", "--no-onnx", *TINY)
    assert result.exit_code == 0, result.output
    report = runs / "synthetic" / "report"
    assert f"Report: {report / 'index.html'}" in result.output
    assert {"index.html", "leaderboard.md", "results.parquet"} <= {p.name for p in report.iterdir()}
    record = json.loads((runs / "synthetic" / "experiment.json").read_text())
    assert record["command"] == ("harness --plugin tests.failing_plugin run --methods constant --seeds 0,1 "
                                 "--profile smoke " + " ".join(TINY) + f" --runs-dir {runs} --no-onnx")
    md = (report / "leaderboard.md").read_text()
    assert record["command"] in md and "| 1 | constant | - | 2 |" in md


# ---------------------------------------------------------------- files


def test_report_writes_markdown_html_parquet(runs, tmp_path):
    out = tmp_path / "site"
    written = write_report(runs, out, replicates=300, report_command="harness report runs/exp --out site")
    assert {"leaderboard.md", "index.html", "results.parquet", "pareto-toy.svg"} <= set(written)
    md = (out / "leaderboard.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    assert [r.split(" | ")[1] for r in rows] == ["oracle", "fastnet", html.escape(XSS), "weak"]
    assert "±" in rows[1] and " *" in rows[1] and "◆" in rows[1] and "top" in rows[0]
    assert "harness run --seeds 0,1,2" in md and "abc123def" in md and "Test CPU" in md
    assert "![Macro-F1 against latency on toy](pareto-toy.svg)" in md
    assert XSS not in md
    frame = pl.read_parquet(out / "results.parquet")
    assert frame["method"].to_list() == ["oracle", "fastnet", XSS, "weak"]
    assert {"macro_f1_ci_low", "f1_p_value", "mcnemar_p_value", "pareto", "per_class_recall"} <= set(frame.columns)
    page = (out / "index.html").read_text()
    # self-contained: no URL is fetched (the only scheme is data: for embedded images)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page
    assert 'src="data:image/png;base64,' in page and "notes.txt" in page
    assert (out / "pareto-toy.svg").read_text().startswith('<svg xmlns="http://www.w3.org/2000/svg"')


def test_every_plugin_string_is_escaped(runs, tmp_path):
    out = tmp_path / "site"
    write_report(runs, out, replicates=200, title="<b>title</b>")
    page = (out / "index.html").read_text()
    assert XSS not in page and "</script><b>" not in page and "<b>title</b>" not in page
    assert html.escape(XSS) in page
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data
    assert XSS in [r["method"] for r in json.loads(data)["rows"]]
    assert json_for_script({"a": "</script>&"}) == '{"a": "\\u003c/script\\u003e\\u0026"}'
    assert json.loads(json_for_script({"a": "</script>&", "b": float("nan")})) == {"a": "</script>&", "b": None}


def test_single_seed_and_missing_latency(tmp_path):
    root = tmp_path / "one"
    y = _labels()
    write_trial(root, "a", 0, y.copy(), None)
    write_trial(root, "b", 0, _noisy(y, 0.5, 1), None)
    out = tmp_path / "site"
    write_report(root, out, replicates=200)
    frame = pl.read_parquet(out / "results.parquet")
    assert math.isnan(frame["macro_f1_ci_low"][0]) or frame["macro_f1_ci_low"][0] is None
    assert frame["pareto"].to_list() == [False, False]
    assert "No latency recorded." in (out / "pareto-toy.svg").read_text()
    assert "Command: not recorded" in (out / "leaderboard.md").read_text()


def test_empty_runs_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    written = write_report(tmp_path / "empty", tmp_path / "site")
    assert "No finished trials" in written["leaderboard.md"].read_text()
    assert "No finished trials" in written["index.html"].read_text()


def test_cli_report_and_recorded_command(runs, tmp_path):
    from harness.cli import _record_experiment, main
    from harness.run.trial import Experiment

    out = tmp_path / "site"
    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert f"Written: {out / 'index.html'}" in result.output
    assert f"harness report {runs} --out {out} --bootstrap 200" in (out / "leaderboard.md").read_text()

    root = tmp_path / "runs" / "rec"
    exp = Experiment(methods=("resnet",), datasets=("synthetic",), seeds=(0, 1), name="rec")
    for command in ("harness run --seeds 0,1", "harness run --methods 'x y'", "harness run --seeds 0,1"):
        _record_experiment(root, exp, command)
    record = json.loads((root / "experiment.json").read_text())
    assert record["command"] == "harness run --seeds 0,1"
    assert record["commands"] == ["harness run --methods 'x y'", "harness run --seeds 0,1"]
    assert record["seeds"] == [0, 1] and record["methods"] == ["resnet"]


def test_command_line_is_rebuilt_from_the_parsed_options():
    import click

    from harness.cli import _command_line

    seen = {}

    @click.group()
    @click.option("--plugin", "plugins", multiple=True)
    def cli(plugins):
        pass

    @cli.command()
    @click.argument("where")
    @click.option("--seeds", default="0")
    @click.option("--profile", default="cpu")
    @click.option("--no-onnx", is_flag=True)
    @click.option("--set", "overrides", multiple=True)
    @click.pass_context
    def run(ctx, where, seeds, profile, no_onnx, overrides):
        seen["command"] = _command_line(ctx)

    args = ["--plugin", "my.mod", "run", "runs dir", "--seeds", "0,1,2", "--no-onnx", "--set", "a.b=1",
            "--set", "c.d=<x>"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert seen["command"] == ("harness --plugin my.mod run 'runs dir' --seeds 0,1,2 --no-onnx --set a.b=1 "
                               "--set 'c.d=<x>'")


# ---------------------------------------------------------------- the page in a real browser

CHROMIUM = os.environ.get("HARNESS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HARNESS_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"headless browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER} "
                    "not found): run .ci/install-browser")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_in_headless_chromium(runs, tmp_path, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    out = tmp_path / "site"
    write_report(runs, out, replicates=200)
    browser.get((out / "index.html").resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    def methods():
        return [r.get_attribute("data-method") for r in browser.find_elements(By.CSS_SELECTOR, "#board-0 tbody tr")]

    assert methods() == ["oracle", "fastnet", XSS, "weak"]
    links = browser.find_elements(By.CSS_SELECTOR, "#board-0 tbody td:nth-child(2) a")
    assert [a.text for a in links] == ["oracle", "fastnet", XSS, "weak"]  # the payload is shown as text
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    assert browser.execute_script("return document.querySelectorAll('b').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (reading it raises when nothing ran alert())
    # the embedded artefact image decodes (data: URI allowed by the page's Content Security Policy)
    assert browser.execute_script(
        "var i = document.querySelector('.artefacts img'); return i.complete && i.naturalWidth") == 8
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure svg.plot circle")) >= 4

    headers = browser.find_elements(By.CSS_SELECTOR, "#board-0 thead th")
    method_header = next(h for h in headers if h.text.strip() == "method")
    method_header.click()
    assert methods() == sorted(["oracle", "fastnet", XSS, "weak"], key=str.lower)
    method_header.click()
    assert methods() == sorted(["oracle", "fastnet", XSS, "weak"], key=str.lower, reverse=True)
    rank_header = next(h for h in headers if h.text.strip().startswith("rank"))
    rank_header.click()
    assert methods() == ["oracle", "fastnet", XSS, "weak"]

    logs = browser.get_log("browser")
    errors = [entry for entry in logs if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors


def test_report_says_what_each_dataset_trained_on():
    from harness.report import _data_text

    whole = {"dataset": "retinamnist", "dataset_options": {"size": 28, "split": "official", "max_train": None},
             "n_train": 1080, "n_test": 400, "protocol": "official"}
    assert _data_text(whole) == "retinamnist (size=28, split=official): 1080 training / 400 test images"
    capped = {**whole, "dataset": "pneumoniamnist", "dataset_options": {"size": 28, "split": "official",
                                                                        "max_train": 1080},
              "protocol": "official, training split subsampled to 1080 of 4708"}
    assert _data_text(capped).endswith("max_train=1080, size=28, split=official): 1080 training / 400 test "
                                       "images; official, training split subsampled to 1080 of 4708")


def test_report_of_a_selection_ranks_and_tests_within_it(runs, tmp_path):
    from harness.cli import main

    out = tmp_path / "ablation"
    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(out), "--bootstrap", "200",
                                       "--methods", "fastnet,weak"])
    assert result.exit_code == 0, result.output
    board = pl.read_parquet(out / "results.parquet")
    assert board.sort("rank")["method"].to_list() == ["fastnet", "weak"]  # oracle left out: fastnet is top
    assert "Paired tests against the top method, **fastnet**" in (out / "leaderboard.md").read_text()
    assert "--methods fastnet,weak" in (out / "leaderboard.md").read_text()

    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(tmp_path / "none"), "--methods", "nope"])
    assert result.exit_code == 2 and "no finished trial" in result.output and "nope" in result.output
    assert not (tmp_path / "none").exists()
