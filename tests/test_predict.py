"""``harness predict``: a stored trial applied to a folder of images and to a split of its own dataset, and the
clear errors when there is nothing to predict on or nothing to predict with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from tests.conftest import TINY

SMOKE = ("--profile", "smoke", "--no-onnx", *TINY)
CLASSES = 7  # synthetic


def _run(runner_args: list[str], env: dict[str, str | None] | None = None):
    from harness.cli import main
    from harness.run.runner import cached_plugins

    cached_plugins.cache_clear()
    return CliRunner().invoke(main, runner_args, catch_exceptions=False, env=env)


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> Path:
    """One smoke resnet trial on tiny synthetic data, shared by the module's tests (read-only)."""
    root = tmp_path_factory.mktemp("predict")
    env = {"HARNESS_CACHE_DIR": str(root / "cache"), "HARNESS_PLUGINS": None, "HARNESS_BLOCK_PLUGINS": None,
           "HARNESS_DATA_DIR": None}  # as tests/conftest.py's _isolated_env (None: unset)
    result = _run(["run", "--methods", "resnet", "--runs-dir", str(root / "runs"), *SMOKE], env=env)
    assert result.exit_code == 0, result.output
    (folder,) = [p.parent for p in (root / "runs").rglob("result.json")]
    assert json.loads((folder / "result.json").read_text())["status"] == "ok"
    return folder


def _probs(frame: pl.DataFrame) -> np.ndarray:
    return frame.select([f"prob_{k}" for k in range(CLASSES)]).to_numpy()


def _image_folder(folder: Path) -> list[str]:
    """Eight PNGs (RGB, grey, odd sizes, one a level down) plus files that are not images; their relative ids."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ids = []
    (folder / "sub").mkdir(parents=True)
    for i in range(8):
        h, w = (16, 16) if i < 4 else (20 + i, 31)
        if i % 3 == 0:
            image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
        else:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
        name = f"sub/img{i}.png" if i == 7 else f"img{i}.png"
        image.save(folder / name)
        ids.append(name)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")
    return sorted(ids)


def test_predict_on_a_folder_of_png_images(trial, tmp_path, cli):
    images = tmp_path / "scans"
    ids = _image_folder(images)
    out = tmp_path / "out" / "scans.parquet"
    out.parent.mkdir()
    result = cli("predict", str(trial), "--images", str(images), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"{len(ids)} image(s) from folder" in result.output and "Written:" in result.output
    frame = pl.read_parquet(out)
    assert frame.height == len(ids)
    assert sorted(frame["image_id"].to_list()) == ids
    probs = _probs(frame)
    assert np.abs(probs.sum(axis=1) - 1).max() < 1e-5 and (probs >= 0).all()
    assert (frame["pred"].to_numpy() == probs.argmax(axis=1)).all()
    classes = json.loads((trial / "result.json").read_text())["classes"]
    assert frame["pred_class"].to_list() == [classes[i] for i in frame["pred"].to_list()]
    assert "label" not in frame.columns
    # CSV too, the same predictions
    csv = tmp_path / "scans.csv"
    assert cli("predict", str(trial), "--images", str(images), "--out", str(csv)).exit_code == 0
    again = pl.read_csv(csv)
    assert again["image_id"].to_list() == frame["image_id"].to_list()
    assert again["pred"].to_list() == frame["pred"].to_list()
    assert np.allclose(_probs(again), probs, atol=1e-6)


def test_predict_on_the_test_split_gives_the_trials_own_predictions(trial, tmp_path, cli):
    out = tmp_path / "test.parquet"
    result = cli("predict", str(trial), "--split", "test", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "the same labels as the trial's predictions.parquet" in result.output
    assert "macro_f1" in result.output
    frame = pl.read_parquet(out)
    stored = pl.read_parquet(trial / "predictions.parquet")
    assert frame.height == stored.height == 35
    assert frame["pred"].to_list() == stored["pred"].to_list()
    assert frame["label"].to_list() == stored["label"].to_list()
    assert np.allclose(_probs(frame), _probs(stored), atol=1e-5)
    if "image_id" in stored.columns:
        assert frame["image_id"].to_list() == [str(v) for v in stored["image_id"].to_list()]
    assert np.abs(_probs(frame).sum(axis=1) - 1).max() < 1e-5


def test_a_folder_without_images_is_a_clear_error(trial, tmp_path, cli):
    empty = tmp_path / "empty"
    (empty / "deeper").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    out = tmp_path / "x.csv"
    result = cli("predict", str(trial), "--images", str(empty), "--out", str(out))
    assert result.exit_code == 2
    assert "error:" in result.output and "no image files found" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_file_that_is_not_an_image_is_named(trial, tmp_path, cli):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "scan.png").write_bytes(b"this is not a PNG")
    result = cli("predict", str(trial), "--images", str(folder), "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == 2
    assert "scan.png is not a readable image" in result.output and "Traceback" not in result.output


def test_a_trial_without_a_model_is_a_clear_error(tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--no-save-model",
                 "--runs-dir", str(runs), *SMOKE)
    assert result.exit_code == 0, result.output
    (folder,) = [p.parent for p in runs.rglob("result.json")]
    images = tmp_path / "scans"
    _image_folder(images)
    for how in (("--images", str(images)), ("--split", "test")):
        result = cli("--plugin", "tests.failing_plugin", "predict", str(folder), *how, "--out",
                     str(tmp_path / "x.parquet"))
        assert result.exit_code == 2, result.output
        assert "has no saved model" in result.output and "--no-save-model" in result.output
        assert "Traceback" not in result.output


def test_usage_errors(trial, tmp_path, cli):
    images = tmp_path / "scans"
    _image_folder(images)
    neither = cli("predict", str(trial), "--out", str(tmp_path / "x.csv"))
    assert neither.exit_code == 2 and "give either --images FOLDER or --split" in neither.output
    both = cli("predict", str(trial), "--images", str(images), "--split", "test", "--out", str(tmp_path / "x.csv"))
    assert both.exit_code == 2 and "give either --images FOLDER or --split" in both.output
    suffix = cli("predict", str(trial), "--images", str(images), "--out", str(tmp_path / "x.xlsx"))
    assert suffix.exit_code == 2 and "expected a .parquet or .csv file name" in suffix.output
    not_a_trial = cli("predict", str(tmp_path), "--images", str(images), "--out", str(tmp_path / "x.csv"))
    assert not_a_trial.exit_code == 2 and "is not a trial folder" in not_a_trial.output
