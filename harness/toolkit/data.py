"""Helpers for dataset plugins: finding files under the data directory, resizing, stratified splits,
and the on-disk cache of prepared arrays (decoded and resized once, memory-mapped after)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from harness.contract.specs import DataSplits, Split
from harness.errors import HarnessError

SPLITS = ("train", "val", "test")


def require_data_dir(data_dir: Path | None, dataset: str, obtain: str) -> Path:
    if data_dir is None:
        raise HarnessError(
            f"dataset {dataset!r} reads files from a data directory, and none was given. "
            f"Pass --data-dir DIR or set HARNESS_DATA_DIR. {obtain}"
        )
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise HarnessError(f"data directory {data_dir} does not exist (dataset {dataset!r}). {obtain}")
    return data_dir


def find_file(data_dir: Path | None, dataset: str, filenames: Iterable[str], obtain: str) -> Path:
    """The first of ``filenames`` found in ``DIR/<dataset>/`` or directly in ``DIR``."""
    root = require_data_dir(data_dir, dataset, obtain)
    looked = []
    for name in filenames:
        for candidate in (root / dataset / name, root / name):
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate
    raise HarnessError(
        f"dataset {dataset!r}: file not found. Looked for: {', '.join(looked)}. {obtain}"
    )


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) images to size x size (bicubic; a no-op at the native size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        arr = np.asarray(pil.resize((size, size), Image.BICUBIC))
        out[i] = arr[..., None] if arr.ndim == 2 else arr
    return out


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices split per class in the given fractions (which sum to 1), shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    cumulative = np.cumsum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(cumulative * len(idx)).astype(int)
        start = 0
        for p, end in enumerate(bounds):
            parts[p].extend(idx[start:end].tolist())
            start = end
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def grouped_stratified_split(labels: np.ndarray, groups, fractions: tuple[float, ...],
                             seed: int) -> list[np.ndarray]:
    """Indices split in the given fractions so that all images of one group (a lesion, a patient) land in
    the same part. Stratified by each group's most common label: the groups of each class are shuffled with
    ``seed`` and cut where their cumulative image count crosses the fractions."""
    labels = np.asarray(labels, dtype=np.int64)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse)
    counts = np.zeros((len(sizes), int(labels.max(initial=0)) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    group_label = counts.argmax(1)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(fractions) / np.sum(fractions)
    part = np.zeros(len(sizes), dtype=np.int64)
    for c in np.unique(group_label):
        g = rng.permutation(np.flatnonzero(group_label == c))
        midpoints = (np.cumsum(sizes[g]) - sizes[g] / 2) / sizes[g].sum()
        part[g] = np.minimum(np.searchsorted(cumulative, midpoints, side="right"), len(fractions) - 1)
    image_part = part[inverse]
    return [np.flatnonzero(image_part == p).astype(np.int64) for p in range(len(fractions))]


def file_fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(name, size, mtime in ns) for each file: what the cache key is made of."""
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return out


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_splits(cache_dir: Path, dataset: str, key: str, build: Callable[[], DataSplits]) -> DataSplits:
    """Load prepared splits from ``cache_dir/dataset/key`` (memory-mapped), or build and store them."""
    folder = Path(cache_dir) / dataset / key
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            splits = {
                s: Split(np.load(folder / f"{s}_images.npy", mmap_mode="r"), np.load(folder / f"{s}_labels.npy"))
                for s in SPLITS
            }
            return DataSplits(**splits, classes=tuple(meta["classes"]), name=meta["name"], protocol=meta["protocol"])
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)
    data = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        for s in SPLITS:
            split = getattr(data, s)
            np.save(tmp / f"{s}_images.npy", np.ascontiguousarray(split.images))
            np.save(tmp / f"{s}_labels.npy", split.labels.astype(np.int64))
        (tmp / "meta.json").write_text(json.dumps(
            {"classes": list(data.classes), "name": data.name, "protocol": data.protocol}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return data
