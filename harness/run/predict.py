"""``harness predict``: apply a stored trial's kept model to a folder of images or to a dataset split.

The trial folder's ``model/`` is loaded back (:func:`harness.run.models.load_predictor`), the images are prepared
as the trial saw them (its image size and channels: uint8, centre-cropped to a square and resized bicubic, the
built-in readers' default ``fit="crop"``; a dataset split comes from the dataset plugin itself, so it is exactly
the trial's), and the predictor's outputs are written one row per image to Parquet or CSV:

``image_id`` (the path below the folder, or the dataset's id), ``label`` (a split only), ``pred``,
``pred_class``, ``prob_0 .. prob_{K-1}`` (the trial's class order, as in ``predictions.parquet``), and every
further per-image output the method gives (``uncertainty`` where it has one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.run import models
from harness.run.settings import RunSettings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
SPLITS = ("train", "val", "test")
FORMATS = {".parquet": "parquet", ".csv": "csv"}


@dataclass
class Predictions:
    """What :func:`predict_images` / :func:`predict_split` return: the table's columns and facts to print."""

    columns: dict[str, np.ndarray]
    source: str  # "folder DIR" or "dataset split NAME"
    metrics: dict[str, float | None] = field(default_factory=dict)  # a split: its metrics (the registered ones)
    matches_stored: bool | None = None  # the test split: identical labels to the trial's predictions.parquet

    def __len__(self) -> int:
        return len(self.columns["pred"])


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth, directory links not followed), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"--images {folder}: not a folder; expected a folder of image files "
                           f"({', '.join(IMAGE_SUFFIXES)})")
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    if not paths:
        raise HarnessError(f"--images {folder}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)} at any "
                           f"depth)")
    return paths


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (size, size, channels): converted to grey or RGB, centre-cropped to a square,
    resized bicubic; a clear error for a file that is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            w, h = image.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
            if image.size != (size, size):
                image = image.resize((size, size), Image.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HarnessError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); remove it from the "
                           f"folder or replace it") from None
    return array[..., None] if array.ndim == 2 else array


def open_trial(trial_dir: Path | str) -> models.StoredTrial:
    """The stored trial at ``trial_dir``, refusing up front one that kept no model (before any data is read)."""
    stored = models.stored_trial(trial_dir)
    if not (models.model_dir(stored.folder) / models.MODULE_FILE).exists():
        raise HarnessError(f"{stored.folder} has no saved model ({models.MODEL_DIR}/{models.MODULE_FILE} is missing; "
                           f"trial status {stored.result.status}): it ran with --no-save-model, failed, or was written by a harness "
                           f"that kept no models; re-run it without --no-save-model to predict with it")
    return stored


def check_out(out: Path | str) -> Path:
    """``out`` when it names a ``.parquet`` or ``.csv`` file (checked before any work is done)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise HarnessError(f"--out {out}: expected a .parquet or .csv file name")
    return out


def input_shape(stored: models.StoredTrial, settings: RunSettings) -> tuple[int, int]:
    """(size, channels) of the images the trial's model takes: from ``predictor.json`` (models kept since
    ``input_shape`` was recorded), else the trial's ``size`` option and its dataset plugin's channels."""
    meta = models.read_meta(stored.folder)
    if meta.get("input_shape"):
        h, _, c = meta["input_shape"]
        return int(h), int(c)
    size = stored.trial.options.get("size")
    from harness.run.runner import cached_plugins

    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    if size is None or stored.trial.dataset not in registry.datasets:
        raise HarnessError(f"{stored.folder}: cannot tell the image size and channels the model takes (its "
                           f"predictor.json predates input_shape and dataset {stored.trial.dataset!r} is not "
                           f"registered here); install the dataset's plugin")
    return int(size), int(registry.get("datasets", stored.trial.dataset).channels)


def _table(stored: models.StoredTrial, outputs: dict[str, np.ndarray], ids: np.ndarray,
           labels: np.ndarray | None) -> dict[str, np.ndarray]:
    probs = np.asarray(outputs.pop("probs"), dtype=np.float64)
    classes = list(stored.result.classes)
    if classes and probs.shape[1] != len(classes):
        raise HarnessError(f"{stored.folder}: the model gives {probs.shape[1]} class probabilities, the trial had "
                           f"{len(classes)} classes ({', '.join(classes)})")
    pred = probs.argmax(axis=1).astype(np.int64)
    columns: dict[str, np.ndarray] = {"image_id": np.asarray(ids).astype(str)}
    if labels is not None:
        columns["label"] = np.asarray(labels, dtype=np.int64)
    columns["pred"] = pred
    columns["pred_class"] = np.asarray([classes[i] for i in pred] if classes else pred.astype(str))
    for k in range(probs.shape[1]):
        columns[f"prob_{k}"] = probs[:, k]
    for key, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 1 and len(value) == len(pred):
            columns[key] = value
    return columns


def predict_images(folder: Path | str, trial_dir: Path | str, settings: RunSettings,
                   device: str = "cpu") -> Predictions:
    """The stored trial's predictions for every image file under ``folder``."""
    stored = open_trial(trial_dir)
    size, channels = input_shape(stored, settings)
    paths = list_images(Path(folder))
    images = np.stack([read_image(p, size, channels) for p in paths])
    outputs = _predict(stored, images, device)
    ids = [p.relative_to(folder).as_posix() for p in paths]
    return Predictions(_table(stored, outputs, np.asarray(ids), None), f"folder {folder}")


def predict_split(trial_dir: Path | str, split: str, settings: RunSettings, device: str = "cpu") -> Predictions:
    """The stored trial's predictions for a split of its own dataset (same options, seed and protocol), with the
    registered metrics of that split; for ``test``, whether they match the trial's stored predictions."""
    from harness.run.runner import cached_plugins, compute_metrics, load_data

    if split not in SPLITS:
        raise HarnessError(f"--split must be one of {', '.join(SPLITS)}; found {split!r}")
    stored = open_trial(trial_dir)
    _, registry = cached_plugins(tuple(settings.plugins), tuple(settings.blocked))
    data = load_data(stored.trial, registry, settings)
    part = getattr(data, split)
    outputs = _predict(stored, part.images, device)
    ids = part.ids if part.ids is not None else np.arange(len(part)).astype(str)
    columns = _table(stored, dict(outputs), ids, part.labels)
    probs = np.stack([columns[f"prob_{k}"] for k in range(data.num_classes)], axis=1)
    metrics, _ = compute_metrics(registry, part.labels.astype(np.int64), probs)
    matches = None
    stored_file = Path(trial_dir) / "predictions.parquet"
    if split == "test" and stored_file.exists():
        import polars as pl

        before = pl.read_parquet(stored_file)
        matches = len(before) == len(part) and bool((before["pred"].to_numpy() == columns["pred"]).all())
    return Predictions(columns, f"{stored.trial.dataset} {split} split", metrics, matches)


def _predict(stored: models.StoredTrial, images: np.ndarray, device: str) -> dict[str, np.ndarray]:
    from harness.contract.specs import check_probabilities

    predictor = stored.predictor(device)
    outputs = predictor.predict(images)
    if "probs" not in outputs:
        raise HarnessError(f"{stored.folder}: the predictor returned no 'probs' (keys: {', '.join(outputs)})")
    check_probabilities(outputs["probs"], method=stored.trial.method, rows=len(images),
                        num_classes=outputs["probs"].shape[1], split="given")
    return outputs


def write(predictions: Predictions, out: Path | str) -> Path:
    """Write the table to ``out`` (``.parquet`` or ``.csv``, by its suffix) atomically."""
    import polars as pl

    from harness.store import atomic_write_bytes, atomic_write_parquet

    out = check_out(out)
    kind = FORMATS[out.suffix.lower()]
    frame = pl.DataFrame(predictions.columns)
    if kind == "parquet":
        atomic_write_parquet(out, frame)
    else:
        atomic_write_bytes(out, frame.write_csv().encode())
    return out


def summary(predictions: Predictions) -> dict[str, Any]:
    """Counts per predicted class (for the command's closing line)."""
    names, counts = np.unique(predictions.columns["pred_class"], return_counts=True)
    return dict(zip(names.tolist(), counts.tolist()))
