"""``harness bench``: kept models re-timed one at a time into bench.json and the result's ``bench`` field, and
the leaderboard and report using those figures and saying where each latency comes from."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tests.conftest import TINY

SMOKE = ("--profile", "smoke", "--no-onnx", *TINY)
QUICK = ("--no-onnx", "--budget", "0.05", "--repeats", "2", "--batch", "8", "--threads", "1")


def _folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("result.json"))


def test_bench_writes_bench_json_and_the_leaderboard_and_report_use_it(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "resnet", "--seeds", "0,1", "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 0, result.output
    first, second = _folders(runs)
    trial_latency = json.loads((first / "result.json").read_text())["latency"]["ms_per_image_b1"]
    assert "(trial)" in result.output  # the terminal table says where its latency comes from

    # one of two seeds benched: bench.json, the result's bench field, a "bench+trial" row
    benched = cli("bench", str(first), *QUICK)
    assert benched.exit_code == 0, benched.output
    history = json.loads((first / "bench.json").read_text())["runs"]
    assert len(history) == 1
    record = json.loads((first / "result.json").read_text())
    bench = record["bench"]
    assert bench["source"] == "bench" and bench["ms_per_image_b1"] > 0 and bench["threads"] == 1
    assert bench["ms_per_image_b1"] == history[0]["ms_per_image_b1"]
    assert record["latency"]["ms_per_image_b1"] == trial_latency  # the in-trial figure is kept as it was
    assert not (second / "bench.json").exists()
    board = cli("leaderboard", str(runs / "synthetic"))
    assert board.exit_code == 0, board.output
    assert "(bench+trial)" in board.output

    # the whole experiment: every row from the bench, the report says so
    again = cli("bench", str(runs / "synthetic"), *QUICK)
    assert again.exit_code == 0, again.output
    assert len(json.loads((first / "bench.json").read_text())["runs"]) == 2  # appended, never overwritten
    assert json.loads((second / "result.json").read_text())["bench"]["ms_per_image_b1"] > 0
    from harness.store import load_runs

    table = load_runs(runs / "synthetic").table
    assert table["latency_source"].to_list() == ["bench", "bench"]
    benched_ms = [json.loads((f / "result.json").read_text())["bench"]["ms_per_image_b1"] for f in (first, second)]
    assert sorted(table["latency.ms_per_image_b1"].to_list()) == sorted(benched_ms)

    out = tmp_path / "report"
    report = cli("report", str(runs / "synthetic"), "--out", str(out))
    assert report.exit_code == 0, report.output
    markdown = (out / "leaderboard.md").read_text()
    assert "(bench)" in markdown and "re-timed by `harness bench`" in markdown
    assert "(bench+trial)" not in markdown and "timed inside the trial" not in markdown
    html = (out / "index.html").read_text()
    assert "(bench)" in html and "re-timed by" in html
    frame = pl.read_parquet(runs / "synthetic" / "leaderboard.parquet")  # written by `harness leaderboard` above
    assert frame["latency_source"].to_list() == ["bench+trial"]


def test_bench_refuses_a_trial_without_a_model_with_a_clear_message(tmp_path, cli):
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--no-save-model",
                 "--runs-dir", str(tmp_path), *SMOKE)
    assert result.exit_code == 0, result.output
    (folder,) = _folders(tmp_path)
    benched = cli("--plugin", "tests.failing_plugin", "bench", str(folder), *QUICK)
    assert benched.exit_code != 0
    assert "no kept model" in benched.output and "Traceback" not in benched.output
    assert not (folder / "bench.json").exists()


def test_a_kept_latency_module_is_what_the_bench_times_and_the_full_module_too(tmp_path):
    """A predictor naming a cheaper latency_module (DiffMIC's one chain per image) keeps it next to the module,
    so `harness bench` times what the trial timed (ms_per_image_*) and the full module (full_ms_per_image_*)."""
    import numpy as np
    import torch

    from harness.contract.specs import Predictor
    from harness.run.latency import LatencySettings, measure
    from harness.run.models import LATENCY_MODULE_FILE, load_predictor, save_predictor

    torch.manual_seed(0)
    full = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4), torch.nn.Softmax(dim=1))
    cheap = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4), torch.nn.Softmax(dim=1))
    save_predictor(Predictor(full, exportable=False, latency_module=cheap), tmp_path, input_shape=(8, 8, 3))
    assert (tmp_path / "model" / LATENCY_MODULE_FILE).exists()
    loaded = load_predictor(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    x = loaded.to_tensor(images)
    with torch.inference_mode():
        assert torch.equal(loaded.latency_module(x), cheap(x)) and torch.equal(loaded.module(x), full(x))
    timed = measure(loaded, images, LatencySettings(onnx=False, budget_s=0.01, warmup=1))
    assert timed["ms_per_image_b1"] > 0 and timed["full_ms_per_image_b1"] > 0
    # a predictor without one keeps no file and loads without one
    save_predictor(Predictor(full, exportable=False), tmp_path / "plain")
    assert load_predictor(tmp_path / "plain").latency_module is None
    assert not (tmp_path / "plain" / "model" / LATENCY_MODULE_FILE).exists()
