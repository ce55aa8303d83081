"""``harness report`` and ``harness leaderboard``: the files they write, the statistics in them end to end,
pairing by image id, the warnings (unreadable results, pooled settings and versions, absent classes, refused
pairings), learning curves, rank bands, the cross-dataset analysis, private paths, escaping, and the page in a
real headless Chromium. Trials are fake folders written with the store's own writer (tests/factories.py): no
training, so the file runs in seconds."""

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
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, matthews_corrcoef

from harness.report import json_for_script, load_summary, redact, redact_command, write_report
from harness.results.stats import PairedSet, adjust_p, two_level_bootstrap
from harness.results.summary import Settings
from tests.factories import make_result, write_result

XSS = "<img src=x onerror=alert(1)>"
K = 3
N_TEST = 90
CLASSES = ["normal", "mild", "severe"]


def _labels() -> np.ndarray:
    return np.random.default_rng(123).integers(0, K, N_TEST)  # the same test set for every trial and seed


def write_trial(root: Path, method: str, seed: int, pred: np.ndarray, ms: float | None, *, dataset: str = "toy",
                sampler: str = "uniform", labels: np.ndarray | None = None, config: dict | None = None,
                artefact: bool = False, status: str = "ok", ids: list[str] | None = None,
                curve: list[dict] | None = None, **fields) -> Path:
    labels = _labels() if labels is None else labels
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{method}-{dataset}-{sampler}-s{seed}")
    folder = root / name
    folder.mkdir(parents=True)
    probs = np.full((len(labels), K), 0.1)
    probs[np.arange(len(labels)), pred] = 0.8
    frame = {"index": np.arange(len(labels))}
    if ids is not None:
        frame["image_id"] = np.asarray(ids)
    frame.update({"label": labels, "pred": pred})
    frame.update({f"prob_{k}": probs[:, k] for k in range(K)})
    pl.DataFrame(frame).write_parquet(folder / "predictions.parquet")
    if curve is not None:
        (folder / "curve.json").write_text(json.dumps(curve))
        fields["curve"] = "curve.json"
    metrics = {"macro_f1": f1_score(labels, pred, average="macro", labels=range(K), zero_division=0),
               "accuracy": accuracy_score(labels, pred), "balanced_accuracy": balanced_accuracy_score(labels, pred),
               "mcc": matthews_corrcoef(labels, pred)}
    result = make_result(method, dataset, sampler=sampler, seed=seed, status=status, key=folder.name,
                         experiment=root.name, classes=CLASSES, num_classes=K, config=config or {"lr": 0.001},
                         params=1000 + seed, n_test=len(labels),
                         metrics=metrics if status == "ok" else {},
                         latency={} if ms is None else {"ms_per_image_b1": ms, "ms_per_image_b64": ms / 10},
                         **fields)
    write_result(folder, result)
    if artefact:
        from PIL import Image

        (folder / "artefacts").mkdir()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "artefacts" / "samples.png")
        (folder / "artefacts" / "notes.txt").write_text("not an image")
    return folder


def _noisy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < accuracy, labels, rng.integers(0, K, len(labels)))


def _f1(labels, pred):
    return f1_score(labels, pred, average="macro", labels=range(K), zero_division=0)


def _summary(root, replicates=300, **kwargs):
    return load_summary(root, Settings(replicates=replicates, **kwargs))


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
    (root / "experiment.json").write_text(json.dumps({"command": "harness run --datasets toy --seeds 0,1,2",
                                                      "commands": ["harness run --datasets toy --seeds 0,1,2"]}))
    return root


def _table(text: str, first_cell: str) -> tuple[list[str], list[str]]:
    """The header and the row starting with ``first_cell`` of the first Markdown table in ``text``."""
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = next(line for line in table if line.startswith(f"| {first_cell} |"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
    return header, cells


# ---------------------------------------------------------------- statistics end to end


def test_summary_statistics_match_scipy_sklearn_and_the_primary_test(runs):
    summary = _summary(runs, replicates=400)
    board = summary.board
    assert board["method"].to_list() == ["oracle", "fastnet", XSS, "weak"]
    y = _labels()
    fast_preds = [_noisy(y, 0.8, 10 + s) for s in range(3)]
    row = board.filter(pl.col("method") == "fastnet").row(0, named=True)
    f1s = np.array([_f1(y, p) for p in fast_preds])
    low, high = stats.t.interval(0.95, 2, loc=f1s.mean(), scale=stats.sem(f1s))
    assert row["macro_f1_mean"] == pytest.approx(f1s.mean())
    assert (row["macro_f1_ci_low"], row["macro_f1_ci_high"]) == pytest.approx((low, high))
    # the primary test: the two-level bootstrap of the same paired sets, then Holm over the table's 3 comparisons
    assert row["top_method"] == "oracle" and row["pairing"] == "position and label"
    expected = two_level_bootstrap([PairedSet(y, p, y.copy()) for p in fast_preds], K,
                                   ("macro_f1", "balanced_accuracy", "mcc"), replicates=400)
    assert row["diff"] == pytest.approx(f1s.mean() - 1.0) == pytest.approx(expected["macro_f1"]["diff"])
    assert row["p_value"] == pytest.approx(expected["macro_f1"]["p_value"])
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
        (expected["macro_f1"]["low"], expected["macro_f1"]["high"]))
    assert row["mcc_diff"] == pytest.approx(expected["mcc"]["diff"])
    raw = board.filter(~pl.col("is_top"))["p_value"].to_list()
    assert board.filter(~pl.col("is_top"))["p_adjusted"].to_list() == pytest.approx(adjust_p(raw, "holm"))
    assert row["significant"] == (row["p_adjusted"] < 0.05)
    # secondary: the t-test over seeds, and McNemar on each seed (never pooled)
    assert row["seed_diffs"] == pytest.approx((f1s - 1.0).tolist())
    assert row["seed_p_value"] == pytest.approx(stats.ttest_rel(f1s, np.ones(3)).pvalue)
    wrong = [int(np.sum(p != y)) for p in fast_preds]
    assert row["mcnemar_p_values"] == pytest.approx([stats.binomtest(0, w, 0.5).pvalue for w in wrong])
    # confusion matrix and per-class recall pooled over seeds
    cm = sum(confusion_matrix(y, p, labels=range(K)) for p in fast_preds)
    assert row["confusion_matrix"] == cm.tolist()
    assert row["per_class_recall"] == pytest.approx((np.diag(cm) / cm.sum(1)).tolist())
    top = board.row(0, named=True)
    assert top["is_top"] and top["p_value"] is None and top["band"] == 1
    front = dict(zip(board["method"].to_list(), board["pareto"].to_list()))
    assert front == {"oracle": True, "fastnet": True, XSS: False, "weak": False}


def test_a_gap_that_flips_between_seeds_is_not_significant(tmp_path):
    """Better on two seeds by a lot, worse on the third: the secondary seed test and the primary test agree
    that the seeds do not support the gap, and nothing is starred; the row shares band 1 with the top."""
    root = tmp_path / "flip"
    y = _labels()
    for seed, (acc_a, acc_b) in enumerate([(0.95, 0.5), (0.95, 0.5), (0.55, 0.75)]):
        write_trial(root, "a", seed, _noisy(y, acc_a, 40 + seed), 1.0)
        write_trial(root, "b", seed, _noisy(y, acc_b, 50 + seed), 1.0)
    summary = _summary(root, replicates=400)
    row = summary.board.row(1, named=True)
    assert not row["significant"] and row["p_value"] > 0.05 and row["band"] == 1
    assert row["diff_ci_low"] < 0 < row["diff_ci_high"]
    assert row["seed_diffs"][2] > 0 > row["seed_diffs"][0]
    out = tmp_path / "flip-report"
    write_report(root, out, summary=summary)
    header, cells = _table((out / "leaderboard.md").read_text(), "2")
    assert len(cells) == len(header)
    assert not cells[header.index("p (adjusted)")].endswith("*")
    assert float(cells[header.index("p (seeds)")]) == pytest.approx(row["seed_p_value"], abs=0.006)
    text = (out / "leaderboard.md").read_text()
    assert "These 2 are statistically tied (band 1): a (uniform), b (uniform)." in text
    page = (out / "index.html").read_text()
    assert "not significant at 0.05" in page and "(secondary)" in page


def test_one_paired_seed_is_marked_and_constant_differences_have_no_seed_test(tmp_path):
    y = _labels()
    one = tmp_path / "one"
    for seed in range(2):
        write_trial(one, "a", seed, y.copy(), 1.0)
    write_trial(one, "b", 0, _noisy(y, 0.6, 60), 1.0)
    summary = _summary(one, replicates=200)
    row = summary.board.row(1, named=True)
    assert row["paired_seeds"] == 1 and row["significant"]
    write_report(one, tmp_path / "one-report", summary=summary)
    header, cells = _table((tmp_path / "one-report" / "leaderboard.md").read_text(), "2")
    assert cells[header.index("p (adjusted)")].endswith("¹ *")
    page = (tmp_path / "one-report" / "index.html").read_text()
    assert "not computable (one paired seed)" in page and "covers the test images only" in page
    const = tmp_path / "const"
    for seed in range(2):  # the same predictions on every seed: the differences do not vary
        write_trial(const, "a", seed, y.copy(), 1.0)
        write_trial(const, "b", seed, _noisy(y, 0.6, 61), 1.0)
    summary = _summary(const, replicates=200)
    row = summary.board.row(1, named=True)
    assert row["seed_p_value"] is None and row["seed_diffs"][0] == row["seed_diffs"][1] < 0
    write_report(const, tmp_path / "const-report", summary=summary)
    assert "not computable (the differences do not vary)" in (tmp_path / "const-report" / "index.html").read_text()


def test_a_seed_run_twice_is_paired_once_by_its_newest_trial(tmp_path):
    root = tmp_path / "runs"
    y = _labels()
    newest = {}
    for exp, finished in (("old", "2026-01-01T00:01:00+00:00"), ("new", "2026-02-01T00:01:00+00:00")):
        for seed in range(2):
            write_trial(root / exp, "a", seed, y.copy(), 1.0, finished=finished)
            pred = _noisy(y, 0.5 if exp == "old" else 0.7, 70 + seed + (10 if exp == "new" else 0))
            write_trial(root / exp, "b", seed, pred, 1.0, finished=finished)
            if exp == "new":
                newest[seed] = _f1(y, pred) - 1.0
    summary = _summary(root, replicates=100)
    row = summary.board.filter(pl.col("method") == "b").row(0, named=True)
    assert row["paired_seeds"] == 2
    assert row["seed_diffs"] == pytest.approx([newest[0], newest[1]])
    write_report(root, tmp_path / "twice-report", summary=summary)
    text = (tmp_path / "twice-report" / "leaderboard.md").read_text()
    assert "## Warnings" in text and "b · uniform on toy has seed(s) 0, 1 more than once" in text


def test_identical_methods_are_not_significantly_different(tmp_path):
    root = tmp_path / "same"
    y = _labels()
    for seed in range(2):
        pred = _noisy(y, 0.6, seed)
        write_trial(root, "a", seed, pred, 1.0)
        write_trial(root, "b", seed, pred.copy(), 1.0)
    second = _summary(root).board.row(1, named=True)
    assert second["diff"] == 0.0 and second["p_value"] == 1.0 and not second["significant"]
    assert second["mcnemar_p_values"] == [1.0, 1.0]


def test_rank_bands_on_constructed_results(tmp_path):
    """Three methods near the top on every seed, two far below it and close to each other: bands 1, 1, 1, 2, 2,
    and the page says which are tied."""
    root = tmp_path / "bands"
    y = _labels()
    rng = np.random.default_rng(0)
    base = {"t1": 0.93, "t2": 0.92, "t3": 0.91, "low1": 0.45, "low2": 0.44}
    for seed in range(3):
        shared = rng.random(N_TEST)  # the same image difficulty for every method: realistic, correlated errors
        for method, acc in base.items():
            noise = np.clip(shared + rng.normal(0, 0.05, N_TEST), 0, 1)
            pred = np.where(noise < acc, y, (y + 1) % K)
            write_trial(root, method, seed, pred, 1.0)
    summary = _summary(root, replicates=400)
    bands = dict(zip(summary.board["method"].to_list(), summary.board["band"].to_list()))
    assert bands == {"t1": 1, "t2": 1, "t3": 1, "low1": 2, "low2": 2}
    low1 = summary.details[("toy", "low1", "uniform")].comparison
    assert low1["significant"] and low1["band_leader"] == ("low1", "uniform")
    write_report(root, tmp_path / "bands-report", summary=summary)
    assert "These 3 are statistically tied (band 1): t1 (uniform), t2 (uniform), t3 (uniform)." in (
        tmp_path / "bands-report" / "leaderboard.md").read_text()


# ---------------------------------------------------------------- pairing by image identity


def test_pairing_is_by_image_id_and_refuses_other_test_sets(tmp_path):
    root = tmp_path / "ids"
    y = _labels()
    ids = [f"img{i:03d}" for i in range(N_TEST)]
    perm = np.random.default_rng(1).permutation(N_TEST)
    a, b = _noisy(y, 0.9, 1), _noisy(y, 0.6, 2)
    write_trial(root, "a", 0, a, 1.0, ids=ids)
    # b's predictions file lists the same images in another order: paired by id, the same as in order
    write_trial(root, "b", 0, b[perm], 1.0, ids=[ids[i] for i in perm], labels=y[perm])
    shuffled = _summary(root).board.row(1, named=True)
    aligned_root = tmp_path / "aligned"
    write_trial(aligned_root, "a", 0, a, 1.0, ids=ids)
    write_trial(aligned_root, "b", 0, b, 1.0, ids=ids)
    aligned = _summary(aligned_root).board.row(1, named=True)
    assert shuffled["pairing"] == "image id" and shuffled["diff"] == pytest.approx(aligned["diff"])
    assert shuffled["p_value"] == pytest.approx(aligned["p_value"])
    # c was tested on other images (same labels, same count): refused, with a message naming both trials
    other = [f"other{i:03d}" for i in range(N_TEST)]
    write_trial(root, "c", 0, a.copy(), 1.0, ids=other)
    summary = _summary(root)
    row = summary.board.filter(pl.col("method") == "c").row(0, named=True)
    top = summary.board.row(0, named=True)["method"]
    assert row["paired_seeds"] == 0 and row["p_value"] is None and row["band"] is None
    refusal = [w for w in summary.warnings if "were tested on different images" in w]
    assert refusal and "90 of 90 image ids" in refusal[0] and "c-toy-uniform-s0" in refusal[0] + top
    from harness.errors import HarnessError
    from harness.results.summary import load_trial, pair

    t_a = load_trial(root / "a-toy-uniform-s0", summary.runs.records[0])
    t_c = load_trial(root / "c-toy-uniform-s0", summary.runs.records[0])
    with pytest.raises(HarnessError, match="tested on different images"):
        pair(t_c, t_a)


def test_runs_without_image_ids_pair_by_position_and_label_and_refuse_other_labels(tmp_path):
    root = tmp_path / "unpaired"
    y = _labels()
    write_trial(root, "a", 0, y.copy(), 1.0)
    write_trial(root, "b", 0, y[::-1].copy(), 1.0, labels=y[::-1].copy())  # another label order
    write_trial(root, "b", 1, y.copy(), 1.0)  # a has no seed 1
    summary = _summary(root, replicates=200)
    row = summary.board.filter(pl.col("method") == "b").row(0, named=True)
    assert row["paired_seeds"] == 0 and row["p_value"] is None
    detail = summary.details[("toy", "b", "uniform")]
    assert detail.comparison["unpaired_seeds"] == [0, 1]
    assert any("labels that differ position by position" in w for w in summary.warnings)


# ---------------------------------------------------------------- warnings


def test_a_class_absent_from_the_test_split_is_reported_next_to_macro_f1(tmp_path):
    root = tmp_path / "absent"
    y = _labels()
    y[y == 2] = 1  # no test image of class 2 ("severe")
    for seed in range(2):
        write_trial(root, "a", seed, _noisy(y, 0.9, seed), 1.0, labels=y)
    summary = _summary(root, replicates=100)
    row = summary.board.row(0, named=True)
    assert row["absent_classes"] == ["severe"]
    assert any("severe have no test images" in w and "at most 0.667" in w for w in summary.warnings)
    write_report(root, tmp_path / "absent-report", summary=summary)
    text = (tmp_path / "absent-report" / "leaderboard.md").read_text()
    header, cells = _table(text, "1")
    assert cells[header.index("Macro-F1")].endswith(" †")
    assert "no test images of class(es) severe" in (tmp_path / "absent-report" / "index.html").read_text()


def test_a_corrupt_or_malformed_result_is_named_and_counted_as_missing(runs, tmp_path):
    from harness.cli import main

    corrupt = runs / "fastnet-toy-uniform-s2" / "result.json"
    corrupt.write_text(corrupt.read_text()[:40])  # truncated
    malformed = runs / "weak-toy-uniform-s1" / "result.json"
    record = json.loads(malformed.read_text())
    record["metrics"] = ["not", "a", "dict"]
    malformed.write_text(json.dumps(record))
    (runs / "fastnet-toy-uniform-s2" / "trial.json").write_text(json.dumps(
        {"method": "fastnet", "dataset": "toy", "sampler": "uniform", "seed": 2}))
    (runs / "oracle-toy-uniform-s1" / "predictions.parquet").write_bytes(b"PAR1 truncated")
    summary = _summary(runs, replicates=100)
    rows = {r["method"]: r for r in summary.board.iter_rows(named=True)}
    assert rows["fastnet"]["seeds"] == 2 and rows["fastnet"]["unreadable"] == 1
    assert any("oracle-toy-uniform-s1/predictions.parquet cannot be read" in w for w in summary.warnings)
    assert rows["fastnet"]["paired_seeds"] == 1  # oracle's seed 1 is out of the paired tests, seed 2 unreadable
    assert any(str(corrupt) in w and "not valid JSON" in w and "fastnet · uniform on toy, seed 2" in w
               for w in summary.warnings)
    assert any(str(malformed) in w and "'metrics'" in w for w in summary.warnings)
    result = CliRunner().invoke(main, ["leaderboard", str(runs), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "not valid JSON" in result.stderr
    assert "| 2 | 2 (1 unreadable) |" not in (runs / "leaderboard.md").read_text()  # band column comes first
    assert "2 (1 unreadable)" in (runs / "leaderboard.md").read_text()


def test_pooled_settings_and_versions_warn_everywhere(runs, tmp_path):
    """A rerun with another config into the same results folder (made its own row, and said so), and a trial of
    another harness version: the report, `harness report` and `harness leaderboard` all say so (one rule
    everywhere)."""
    from harness.cli import main

    root = tmp_path / "mixed"
    y = _labels()
    for seed in range(2):
        write_trial(root / "default", "a", seed, y.copy(), 1.0)
        write_trial(root / "default", "b", seed, _noisy(y, 0.6, 80 + seed), 1.0, config={"lr": 0.001})
    write_trial(root / "tuned", "b", 0, _noisy(y, 0.7, 90), 1.0, config={"lr": 0.0003})
    write_trial(root / "newer", "a", 2, y.copy(), 1.0, harness_version="0.2.0")
    out = tmp_path / "mixed-report"
    result = CliRunner().invoke(main, ["report", str(root), "--out", str(out), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    expected = "b · uniform on toy ran with different settings, so it is 2 rows, each one setting's seeds: "
    assert "warning: " + expected in result.stderr
    assert "b [lr=0.001] (seeds 0,1;" in result.stderr and "b [lr=0.0003] (seeds 0;" in result.stderr
    assert "a · uniform on toy pools results of harness versions 0.1.0, 0.2.0" in result.stderr
    assert expected in (out / "leaderboard.md").read_text()
    page = (out / "index.html").read_text()
    assert 'id="warnings"' in page and html.escape(expected) in page
    board = CliRunner().invoke(main, ["leaderboard", str(root), "--bootstrap", "100"])
    assert "warning: " + expected in board.stderr and "harness versions 0.1.0, 0.2.0" in board.stderr
    assert expected in (root / "leaderboard.md").read_text()
    clean = tmp_path / "clean-report"
    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(clean), "--bootstrap", "100"])
    assert "warning" not in result.stderr
    assert "## Warnings" not in (clean / "leaderboard.md").read_text()
    assert 'id="warnings"' not in (clean / "index.html").read_text()


# ---------------------------------------------------------------- learning curves and notes


def _curve(values):
    return [{"epoch": i + 1, "loss": 1.0 / (i + 1), "val_macro_f1": v} for i, v in enumerate(values)]


def test_still_improving_fires_on_a_rising_curve_not_on_a_flat_one():
    from harness.contract.curves import still_improving

    rising = _curve([0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75])
    flat = _curve([0.2, 0.5, 0.6, 0.62, 0.62, 0.61, 0.62, 0.62, 0.62, 0.625])
    noisy_end = _curve([0.2, 0.5, 0.6, 0.62, 0.62, 0.61, 0.62, 0.62, 0.40, 0.41])  # a late dip is no rise
    assert still_improving(rising, "val_macro_f1")["improving"]
    assert still_improving(rising, "val_macro_f1")["rise"] == pytest.approx(0.75 - 0.65)
    assert not still_improving(flat, "val_macro_f1")["improving"]
    assert not still_improving(noisy_end, "val_macro_f1")["improving"]
    assert still_improving(flat, "val_macro_f1", margin=0.0)["improving"]  # 0.625 > 0.62 by 0.005
    assert still_improving(_curve([0.5]), "val_macro_f1") is None  # one epoch: cannot tell
    assert still_improving([{"epoch": 1, "loss": 1.0}], "val_macro_f1") is None


def test_end_of_curve_is_where_the_curve_ends_not_its_best_check():
    from harness.contract.curves import end_of_curve

    overfitting = _curve([0.2, 0.5, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25])  # mark at epoch 8.2: 9, 10
    assert end_of_curve(overfitting, "val_macro_f1") == pytest.approx((0.3 + 0.25) / 2)
    sparse = [{"epoch": e, "loss": 0.1} for e in range(1, 11)] + [{"epoch": 5, "val_macro_f1": 0.4}]
    assert end_of_curve(sparse, "val_macro_f1") == pytest.approx(0.4)  # no check after the mark: the last one
    assert end_of_curve([{"epoch": 1, "loss": 1.0}], "val_macro_f1") is None


def test_a_multi_stage_curve_is_judged_on_its_last_stage():
    """DiffMIC logs its DCG prior's validation score in its warm-up stage: a chain still rising below that
    prior is still improving, and where the curve ends is the chain's score, not the prior's."""
    from harness.contract.curves import end_of_curve, still_improving

    warmup = [{"epoch": e, "stage": "dcg_warmup", "val_macro_f1": 0.45} for e in range(1, 6)]
    rising = [{"epoch": 5 + i, "stage": "joint", "val_macro_f1": v}
              for i, v in enumerate([0.2, 0.25, 0.3, 0.32, 0.34, 0.36, 0.38, 0.40, 0.41, 0.43], 1)]
    flag = still_improving(warmup + rising, "val_macro_f1")
    assert flag["improving"] and flag["before"] == pytest.approx(0.40) and flag["from_epoch"] == pytest.approx(13.2)
    assert end_of_curve(warmup + rising, "val_macro_f1") == pytest.approx((0.41 + 0.43) / 2)
    flat_chain = [dict(r, val_macro_f1=0.3) for r in rising]
    assert not still_improving(warmup + flat_chain, "val_macro_f1")["improving"]
    assert still_improving(warmup + flat_chain, "val_macro_f1")["before"] == pytest.approx(0.3)  # not the prior's
    # IOIS / prototype diffusion: a named generator stage, then the classifier logged without a stage name
    generator = [{"epoch": e, "stage": "generator", "loss": 1.0 / e} for e in range(1, 41)]
    classifier = [{k: v for k, v in r.items() if k != "stage"} for r in rising]
    flag = still_improving(generator + classifier, "val_macro_f1")  # the generator's 40 epochs set no span
    assert flag["improving"] and flag["from_epoch"] == pytest.approx(13.2)
    # a stage that comes back (A, B, A) is judged from its last start
    again = [dict(r, stage="dcg_warmup") for r in rising]
    assert still_improving(warmup + flat_chain + again, "val_macro_f1")["from_epoch"] == pytest.approx(13.2)


def test_plateau_is_the_smallest_budget_within_tolerance_of_the_best():
    from harness.contract.curves import plateau

    assert plateau({200: 0.30, 400: 0.335, 800: 0.34, 1600: 0.339}, 0.01) == 400
    assert plateau({200: 0.30, 400: float("nan"), 800: 0.34}, 0.0) == 800
    assert plateau({200: float("nan")}, 0.01) is None and plateau({}, 0.01) is None


def test_curves_notes_and_trial_warnings_are_in_the_report(tmp_path):
    root = tmp_path / "curves"
    y = _labels()
    for seed in range(2):
        write_trial(root, "riser", seed, _noisy(y, 0.8, seed), 1.0,
                    curve=_curve([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9 + seed * 0.01]),
                    notes={"val_prior_macro_f1": 0.57, "generator_key": "<b>k</b>"})
        write_trial(root, "flat", seed, _noisy(y, 0.7, 10 + seed), 1.0,
                    curve=_curve([0.2, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]),
                    warnings=["dataset.split is 'official'; the paper used 'diffmic'"] if seed == 0 else [])
    summary = _summary(root, replicates=100)
    rows = {r["method"]: r for r in summary.board.iter_rows(named=True)}
    assert (rows["riser"]["still_improving"], rows["riser"]["curves"]) == (2, 2)
    assert rows["flat"]["still_improving"] == 0
    out = tmp_path / "curves-report"
    write_report(root, out, summary=summary)
    text = (out / "leaderboard.md").read_text()
    header, cells = _table(text, "1")
    assert cells[header.index("curves")] == "↗ 2/2" and "still improving" in text
    assert "- flat · uniform on toy, seed 0: dataset.split is 'official'; the paper used 'diffmic'" in text
    page = (out / "index.html").read_text()
    assert page.count('class="plot curve"') >= 4  # validation and loss curves of both methods
    assert "val_prior_macro_f1" in page and "0.57" in page and "&lt;b&gt;k&lt;/b&gt;" in page
    assert "still improving" in page and "levelled off" in page


# ---------------------------------------------------------------- across datasets


def test_cross_dataset_friedman_nemenyi_and_the_critical_difference_diagram(tmp_path):
    sp = pytest.importorskip("scikit_posthocs")
    import pandas as pd

    root = tmp_path / "cross"
    y = _labels()
    skill = {"a": 0.9, "b": 0.75, "c": 0.6, XSS: 0.5}
    for d, dataset in enumerate(("d1", "d2", "d3")):
        for m, acc in skill.items():
            write_trial(root, m, 0, _noisy(y, acc - 0.05 * d * (m == "b"), 7 * d + len(m)), 1.0, dataset=dataset)
    write_trial(root, "only-d1", 0, y.copy(), 1.0, dataset="d1")
    summary = _summary(root, replicates=100)
    cross = summary.cross
    assert cross["datasets"] == ["d1", "d2", "d3"] and cross["left_out"] == [("only-d1", "uniform")]
    scores = summary.board.filter(pl.col("method") != "only-d1").pivot(on="method", index="dataset",
                                                                         values="macro_f1_mean")
    matrix = scores.select(cross["names"]).to_numpy()
    assert cross["statistic"] == pytest.approx(stats.friedmanchisquare(*matrix.T).statistic)
    nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(matrix, columns=cross["names"])).to_numpy()
    assert np.allclose(cross["nemenyi"], nemenyi)
    out = tmp_path / "cross-report"
    written = write_report(root, out, summary=summary)
    svg = written["critical-difference.svg"].read_text()
    assert svg.lstrip().startswith("<svg") and XSS not in svg and html.escape(XSS, quote=False) in svg
    text = (out / "leaderboard.md").read_text()
    assert "## Across datasets" in text and "![Critical-difference diagram](critical-difference.svg)" in text
    page = (out / "index.html").read_text()
    assert 'id="cross"' in page and 'class="plot cd"' in page and XSS not in page


# ---------------------------------------------------------------- plots, paths, files


def test_pareto_plot_with_twenty_methods_has_no_overlapping_labels(tmp_path):
    from harness.report.svg import pareto_svg, place_labels

    rows = [{"method": f"method-{i}", "sampler": "uniform", "macro_f1_mean": 0.5 + 0.001 * (i % 3),
             "ms_per_image_b1_mean": 10.0 + 0.01 * i, "pareto": i == 0} for i in range(20)]
    svg = pareto_svg(rows, "crowded")
    assert all(f"{i + 1}</tspan> method-{i} (uniform)" in svg for i in range(20))  # the legend names each
    anchors = [(100.0, 200.0)] * 20  # the worst case: every point in the same place
    boxes = [(x, y - 10, x + 16, y + 2) for x, y in place_labels(anchors, [16.0] * 20, bounds=(0, 1000))]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_published_pages_carry_no_private_paths(tmp_path):
    root = tmp_path / "private"
    y = _labels()
    for m in ("a", "b"):
        write_trial(root, m, 0, _noisy(y, 0.8, len(m)), 1.0, dataset="imagefolder",
                    dataset_options={"root": "/home/alice/secret-data/derm", "size": 64},
                    warnings=["images under /home/alice/secret-data/derm are larger than the training images"])
    (root / "experiment.json").write_text(json.dumps({"commands": [
        "harness run --datasets imagefolder --data-dir /home/alice/data --runs-dir /home/alice/runs "
        "--set imagefolder.root=/home/alice/secret-data/derm"]}))
    out = tmp_path / "private-report"
    write_report(root, out, settings=Settings(replicates=100),
                 report_command=f"harness report {root} --out {out}")
    for name in ("leaderboard.md", "index.html"):
        text = (out / name).read_text()
        assert "/home/alice" not in text and str(tmp_path) not in text, name
        assert "--data-dir $DATA_DIR --runs-dir $RUNS_DIR" in text
        assert "harness report $RUNS_DIR --out $OUT_DIR" in text
        assert "root=&lt;…&gt;/derm" in text or "root=<…>/derm" in text
    assert redact("see /tmp/x/y.json, then ~/z") == "see <…>/y.json, then <…>/z"
    assert redact_command("harness run --data-dir=/srv/d --seeds 0") == "harness run --data-dir=$DATA_DIR --seeds 0"
    assert redact_command("harness report runs/exp --out site") == "harness report runs/exp --out $OUT_DIR"


def test_harness_run_writes_the_leaderboard_and_report_from_one_read(tmp_path, cli, monkeypatch):
    import harness.store
    from tests.conftest import TINY

    reads = []
    real = harness.store.load_runs
    monkeypatch.setattr(harness.store, "load_runs", lambda *a, **k: reads.append(a) or real(*a, **k))
    import harness.report

    monkeypatch.setattr(harness.report, "load_runs", harness.store.load_runs)
    runs = tmp_path / "runs"
    result = cli("--plugin", "tests.failing_plugin", "run", "--methods", "constant", "--seeds", "0,1",
                 "--runs-dir", str(runs), "--profile", "smoke", "--no-onnx", "--threads", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert len(reads) == 1
    report = runs / "synthetic" / "report"
    assert f"Report: {report / 'index.html'}" in result.output
    assert {"index.html", "leaderboard.md", "results.parquet"} <= {p.name for p in report.iterdir()}
    md = (report / "leaderboard.md").read_text()
    assert "| 1 | 1 | constant | - | 2 |" in md and "$RUNS_DIR" in md
    assert (runs / "synthetic" / "leaderboard.md").read_text().split("## How to read this")[0].split("\n", 1)[1] \
        == md.split("## How to read this")[0].split("\n", 1)[1].replace(
            "![Macro-F1 against latency on synthetic](pareto-synthetic.svg)\n\n", "")


def test_report_writes_markdown_html_parquet(runs, tmp_path):
    out = tmp_path / "site"
    written = write_report(runs, out, settings=Settings(replicates=300),
                           report_command="harness report runs/exp --out site")
    assert {"leaderboard.md", "index.html", "results.parquet", "pareto-toy.svg"} <= set(written)
    text = (out / "leaderboard.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    assert [r.split(" | ")[2] for r in rows] == ["oracle", "fastnet", html.escape(XSS), "weak"]
    assert "±" in rows[1] and " *" in rows[1] and "◆" in rows[1] and "top" in rows[0]
    assert "harness run --datasets toy --seeds 0,1,2" in text and "abc123def" in text and "Test CPU" in text
    assert "![Macro-F1 against latency on toy](pareto-toy.svg)" in text
    assert XSS not in text
    frame = pl.read_parquet(out / "results.parquet")
    assert frame["method"].to_list() == ["oracle", "fastnet", XSS, "weak"]
    assert {"macro_f1_ci_low", "p_value", "p_adjusted", "band", "mcnemar_p_values", "pareto",
            "per_class_recall", "still_improving"} <= set(frame.columns)
    page = (out / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page
    assert 'src="data:image/png;base64,' in page and "notes.txt" in page
    assert (out / "pareto-toy.svg").read_text().startswith('<svg xmlns="http://www.w3.org/2000/svg"')


def test_every_plugin_string_is_escaped_in_the_report_and_the_runs_leaderboard(runs, tmp_path):
    from harness.cli import main

    out = tmp_path / "site"
    write_report(runs, out, settings=Settings(replicates=200), title="<b>title</b>")
    page = (out / "index.html").read_text()
    assert XSS not in page and "</script><b>" not in page and "<b>title</b>" not in page
    assert html.escape(XSS) in page
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data
    assert XSS in [r["method"] for r in json.loads(data)["rows"]]
    assert json_for_script({"a": "</script>&"}) == '{"a": "\\u003c/script\\u003e\\u0026"}'
    assert json.loads(json_for_script({"a": "</script>&", "b": float("nan")})) == {"a": "</script>&", "b": None}
    # the runs folder's leaderboard.md: a method name with a pipe and a newline does not break the table
    y = _labels()
    piped = tmp_path / "piped"
    write_trial(piped, "a|b\nc", 0, y.copy(), 1.0)
    write_trial(piped, XSS, 0, _noisy(y, 0.5, 1), 1.0)
    assert CliRunner().invoke(main, ["leaderboard", str(piped), "--bootstrap", "100"]).exit_code == 0
    text = (piped / "leaderboard.md").read_text()
    assert XSS not in text and html.escape(XSS) in text and "a\\|b c" in text
    header, cells = _table(text, "1")
    assert len(cells) == len(header)


def test_single_seed_and_missing_latency(tmp_path):
    root = tmp_path / "one"
    y = _labels()
    write_trial(root, "a", 0, y.copy(), None)
    write_trial(root, "b", 0, _noisy(y, 0.5, 1), None)
    out = tmp_path / "site"
    write_report(root, out, settings=Settings(replicates=200))
    frame = pl.read_parquet(out / "results.parquet")
    assert frame["macro_f1_ci_low"][0] is None or math.isnan(frame["macro_f1_ci_low"][0])
    assert frame["pareto"].to_list() == [False, False]
    assert "No latency recorded." in (out / "pareto-toy.svg").read_text()
    assert "Command: not recorded" in (out / "leaderboard.md").read_text()


def test_empty_runs_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    written = write_report(tmp_path / "empty", tmp_path / "site")
    assert "No finished trials" in written["leaderboard.md"].read_text()
    assert "No finished trials" in written["index.html"].read_text()


def test_a_schema1_runs_folder_reports_the_same_tables(tmp_path):
    """tests/data/runs-schema1 was written by the schema-1 runner: it reports, with the same means as its records."""
    src = Path(__file__).parent / "data" / "runs-schema1"
    summary = _summary(src / "synthetic", replicates=100)
    row = summary.board.row(0, named=True)
    records = [json.loads(p.read_text()) for p in (src / "synthetic").rglob("result.json")]
    ok = [r for r in records if r["status"] == "ok"]
    assert [r["method"] for r in ok] == ["constant"] * 2 and {r["method"] for r in records} == {"constant", "always-fails"}
    assert row["method"] == "constant" and row["seeds"] == 2 and summary.board.height == 1  # no ok trial: no row
    assert row["macro_f1_mean"] == pytest.approx(np.mean([r["metrics"]["macro_f1"] for r in ok]))
    write_report(src / "synthetic", tmp_path / "site", summary=summary)
    assert "| 1 | 1 | constant | - | 2 |" in (tmp_path / "site" / "leaderboard.md").read_text()


def test_cli_report_and_recorded_command(runs, tmp_path):
    from harness.cli import main

    out = tmp_path / "site"
    result = CliRunner().invoke(main, ["report", str(runs), "--out", str(out), "--bootstrap", "200",
                                       "--correction", "bh"])
    assert result.exit_code == 0, result.output
    assert f"Written: {out / 'index.html'}" in result.output
    text = (out / "leaderboard.md").read_text()
    assert "harness report $RUNS_DIR --out $OUT_DIR --bootstrap 200 --correction bh" in text
    assert "Benjamini-Hochberg (bh)" in text
    frame = pl.read_parquet(out / "results.parquet")
    raw = frame.filter(~pl.col("is_top"))["p_value"].to_list()
    assert frame.filter(~pl.col("is_top"))["p_adjusted"].to_list() == pytest.approx(adjust_p(raw, "bh"))


def test_a_page_embeds_images_only_while_it_stays_under_its_size_limit(runs, monkeypatch):
    """The page embeds artefact images with what the rest of it leaves of MAX_PAGE_BYTES; past that they are
    listed, not embedded, so a board with many rows stays under 1 MB."""
    import harness.report.html as page
    from harness.report.provenance import provenance

    summary = _summary(runs, replicates=100)
    prov = provenance(summary)
    full = page.to_html(summary, prov, "t")
    assert "data:image/png;base64," in full and len(full.encode()) < page.MAX_PAGE_BYTES
    bare = len(page._page(summary, prov, "t", 0).encode())
    monkeypatch.setattr(page, "MAX_PAGE_BYTES", bare + 100)  # no room left for an image
    tight = page.to_html(summary, prov, "t")
    assert "data:image" not in tight and "samples.png (" in tight and "not embedded" in tight


def test_reproduce_lists_the_commands_that_made_the_shown_rows():
    from harness.report.provenance import could_have_run

    shown = {("resnet", "retinamnist", "uniform"), ("diffmic", "retinamnist", "uniform")}
    base = "harness run --datasets retinamnist --data-dir ../shared/data --seeds 0,1,2"
    assert could_have_run(f"{base} --methods resnet,focal", shown)
    assert could_have_run(f"{base} --methods=diffmic", shown)
    assert not could_have_run(f"{base} --methods resnet50,vit", shown)  # another board's rows
    assert not could_have_run(f"{base} --methods resnet --samplers sqrt,balanced", shown)
    assert not could_have_run("harness run --methods resnet --datasets pneumoniamnist", shown)
    assert could_have_run("harness run --config benchmarks/configs/iois-table.toml --methods vit", shown)  # unreadable
    assert could_have_run("harness run --datasets retinamnist", shown)  # every method
    assert not could_have_run("harness run --methods resnet --experiment retinamnist", shown)  # ran on synthetic
    assert not could_have_run("harness run --methods resnet --datasets retinamnist", {("resnet", "retinamnist", "sqrt")})
    no_sampler = {("iois", "retinamnist", "-")}  # a method that takes no sampler runs whatever --samplers says
    assert could_have_run("harness run --methods iois --datasets retinamnist --samplers sqrt", no_sampler)
    assert could_have_run("harness tune --methods resnet", shown)  # not harness run: kept
    assert could_have_run("harness run --methods 'resnet", shown)  # not a command line: kept


def test_reproduce_leaves_out_the_other_experiments_of_a_runs_folder(runs):
    from harness.report.provenance import provenance

    (runs / "experiment.json").write_text(json.dumps({"name": "exp", "commands": ["harness run --datasets toy --seeds 0,1,2"]}))
    other = runs.parent / "other"
    write_trial(other, "weak", 0, _noisy(_labels(), 0.3, 40), 2.0)
    (other / "experiment.json").write_text(json.dumps({"name": "other", "commands": ["harness run --datasets toy --experiment other"]}))
    chosen = provenance(load_summary(runs.parent, Settings(replicates=100), {"experiment": {"exp"}}))["commands"]
    assert chosen == ["harness run --datasets toy --seeds 0,1,2"]
    both = provenance(_summary(runs.parent, replicates=100))["commands"]
    assert both == ["harness run --datasets toy --seeds 0,1,2", "harness run --datasets toy --experiment other"]


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
    write_report(runs, out, settings=Settings(replicates=200))
    browser.get((out / "index.html").resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    def methods():
        return [r.get_attribute("data-method") for r in browser.find_elements(By.CSS_SELECTOR, "#board-0 tbody tr")]

    assert methods() == ["oracle", "fastnet", XSS, "weak"]
    links = browser.find_elements(By.CSS_SELECTOR, "#board-0 tbody td:nth-child(3) a")
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
    from harness.report.provenance import data_text

    whole = {"dataset": "retinamnist", "dataset_options": {"size": 28, "split": "official", "max_train": None},
             "n_train": 1080, "n_test": 400, "protocol": "official"}
    assert data_text(whole) == "retinamnist (size=28, split=official): 1080 training / 400 test images"
    capped = {**whole, "dataset": "pneumoniamnist", "dataset_options": {"size": 28, "split": "official",
                                                                        "max_train": 1080},
              "protocol": "official, training split subsampled to 1080 of 4708"}
    assert data_text(capped).endswith("max_train=1080, size=28, split=official): 1080 training / 400 test "
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


def test_trials_of_one_method_with_different_settings_are_separate_rows(tmp_path, cli):
    """Two experiments of ``resnet`` under one runs folder (another backbone, another learning rate) are two
    rows named by what differs, never one row that averages them as if they were six seeds of one method."""
    from harness.results import leaderboard
    from harness.store import load_runs

    labels = _labels()
    for seed in range(3):
        write_trial(tmp_path / "a", "resnet", seed, _noisy(labels, 0.9, seed), 1.0,
                    config={"backbone": "resnet18", "lr": 0.002})
        write_trial(tmp_path / "b", "resnet", seed, _noisy(labels, 0.4, seed), 1.0,
                    config={"backbone": "resnet10t", "lr": 0.002})
        write_trial(tmp_path / "a", "focal", seed, _noisy(labels, 0.7, seed), 1.0)
    runs = load_runs(tmp_path)
    board = leaderboard.build(runs)
    rows = {r["method"]: r for r in board.iter_rows(named=True)}
    assert set(rows) == {"resnet [backbone=resnet18]", "resnet [backbone=resnet10t]", "focal"}
    assert all(r["seeds"] == 3 and r["trials"] == 3 for r in rows.values())
    assert rows["resnet [backbone=resnet18]"]["macro_f1_mean"] > rows["resnet [backbone=resnet10t]"]["macro_f1_mean"]
    only = load_runs(tmp_path / "a")  # one experiment alone keeps the plain name
    assert set(only.table["method"].to_list()) == {"resnet", "focal"}
    result = cli("report", str(tmp_path), "--out", str(tmp_path / "report"), "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "resnet [backbone=resnet18]" in page and "resnet [backbone=resnet10t]" in page
    result = cli("report", str(tmp_path), "--experiments", "a", "--out", str(tmp_path / "only-a"), "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "only-a" / "leaderboard.md").read_text()  # one experiment of the folder: the plain names
    assert "resnet [" not in page and "| resnet |" in page.replace("**", "")


def test_an_unfinished_trial_is_not_counted_as_failed(tmp_path):
    """A trial stopped by Ctrl-C (or running again while the report is made) is ``unfinished``, a trial that raised
    is ``failed``: the seeds cell says which."""
    from harness.report.format import seeds_cell
    from harness.results import leaderboard
    from harness.store import load_runs

    labels = _labels()
    write_trial(tmp_path / "a", "resnet", 0, _noisy(labels, 0.9, 0), 1.0)
    write_trial(tmp_path / "a", "resnet", 1, _noisy(labels, 0.9, 1), 1.0, status="interrupted")
    write_trial(tmp_path / "a", "resnet", 2, _noisy(labels, 0.9, 2), 1.0, status="failed")
    (row,) = leaderboard.build(load_runs(tmp_path)).iter_rows(named=True)
    assert (row["seeds"], row["failed"], row["unfinished"]) == (1, 1, 1)
    assert seeds_cell(row) == "1 (1 failed, 1 unfinished)"
