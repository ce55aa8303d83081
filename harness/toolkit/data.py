"""Helpers for dataset plugins: finding files under the data directory, resizing, split protocols, the
per-class draws every built-in dataset offers, and the one place prepared splits are completed and cached.

What a dataset's ``load`` returns goes through :func:`finish` (directly, or through :func:`cached_splits`):

- it checks that no split is empty and every label names a class (a clear error otherwise);
- it gives every image an id: the dataset's own where the loader set ``Split.ids`` (file names, CSV ids),
  else a content hash (the first 16 hex digits of the SHA-1 of the image's pixels; a repeat within the
  dataset gets ``~2``, ``~3`` ...), so that runs are paired by image, not by row position;
- it records what a result should carry as ``DataSplits.warnings``: classes absent from a split, splits
  whose images differ in size, test images whose pixels are identical to a training or validation image;
- it computes ``DataSplits.fingerprint``: a SHA-256 over the class names and, per split, the image shape,
  each image's SHA-1 and the labels. Another label, another pixel or another class order changes it; the
  same prepared arrays give the same fingerprint whatever folder they were read from.

:func:`cached_splits` does this once, when the prepared arrays are built, and stores arrays, ids,
fingerprint and warnings under ``cache_dir/<dataset>/<key>/``; the next load memory-maps the arrays and
reads the rest from ``meta.json``, so a second load hashes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.contract.specs import DatasetOptions, DataSplits, Split, check_range
from harness.errors import HarnessError

SPLITS = ("train", "val", "test")
SUBSET_SEED = 0  # the per-class draws are part of the dataset, not of the trial: the same for every seed
CACHE_FORMAT = 2  # bumped when the cached layout changes (2: ids, fingerprint and warnings)


# ------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class PerClassOptions(DatasetOptions):
    """Options every built-in dataset takes on top of its own: fixed per-class draws for protocols such as
    IMPROVE's (100 training and 50 test images per class). Validation stays whole."""

    train_per_class: int | None = None  # keep N training images per class (fixed draw, seed 0); None: all
    test_per_class: int | None = None  # keep N test images per class (fixed draw, seed 0); None: all

    def __post_init__(self):
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None:
                check_range(name, value, low=1)


# ------------------------------------------------------------------------------------------ locating


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


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` is ``root`` or below it (both taken as they are: resolve them first)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def file_fingerprint(paths: Iterable[Path], root: Path | None = None,
                     dataset: str = "") -> list[tuple[str, int, int]]:
    """(name, size, mtime in ns) for each file: what a cache key is made of. With ``root``, a file that is a
    symbolic link must resolve inside ``root`` (a ``.jpg`` linking to ``/etc/passwd`` is refused)."""
    real_root = os.path.realpath(root) if root is not None else None
    out = []
    for path in paths:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            if real_root is not None and not is_inside(target, real_root):
                raise HarnessError(
                    f"dataset {dataset!r}: {path} is a link to {target}, outside the data root {root}. Image "
                    f"files must be inside the dataset's folder; copy the image into {root} or remove the link."
                )
            st = os.stat(path)
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return out


# ------------------------------------------------------------------------------------ pixels, splits


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


def per_class_indices(labels: np.ndarray, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Sorted indices of at most ``n`` images of each class: a fixed draw per class (the draw of one class
    does not depend on the others), every image of a class that has fewer."""
    labels = np.asarray(labels)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > n:
            idx = np.random.default_rng([seed, int(c)]).permutation(idx)[:n]
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def per_class_selection(labels: dict[str, np.ndarray], classes: tuple[str, ...], options,
                        dataset: str) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """What ``options.train_per_class`` / ``test_per_class`` keep: indices into the train and test splits
    (only the splits an option applies to), the text added to the protocol, and a warning for each class
    that has fewer images than asked (all of them are kept)."""
    keep, notes, messages = {}, [], []
    for split, option in (("train", "train_per_class"), ("test", "test_per_class")):
        n = getattr(options, option, None)
        if n is None:
            continue
        y = np.asarray(labels[split])
        keep[split] = per_class_indices(y, n)
        counts = np.bincount(y, minlength=len(classes))
        short = [f"{classes[c]} ({counts[c]})" for c in range(len(classes)) if 0 < counts[c] < n]
        notes.append(f"{split}: {n} per class of {len(y)} (fixed draw, seed {SUBSET_SEED})")
        if short:
            messages.append(f"dataset {dataset!r}: {option}={n}, but the {split} split has fewer images of "
                            f"{', '.join(short)}: all of those are kept.")
    return keep, "; ".join(notes), messages


def take_per_class(data: DataSplits, options) -> tuple[DataSplits, list[str]]:
    """``data`` with ``options.train_per_class`` / ``test_per_class`` applied (for loaders that hold the
    splits as arrays); the protocol says what was kept."""
    keep, note, messages = per_class_selection({s: getattr(data, s).labels for s in SPLITS}, data.classes,
                                               options, data.name)
    if not keep:
        return data, []
    changed = {}
    for s, idx in keep.items():
        split = getattr(data, s)
        ids = None if split.ids is None else np.asarray(split.ids)[idx]
        changed[s] = Split(np.asarray(split.images[idx]), split.labels[idx], ids)
    return dataclasses.replace(data, **changed, protocol=f"{data.protocol}; {note}"), messages


# --------------------------------------------------------------------------- ids, checks, fingerprint


def image_digests(images: np.ndarray) -> list[bytes]:
    """SHA-1 of each image's pixels (uint8, row-major)."""
    images = np.ascontiguousarray(images)
    return [hashlib.sha1(image).digest() for image in images]


def content_ids(digests: list[bytes], taken: set[str]) -> np.ndarray:
    """Short content-hash ids (16 hex digits); an id already in ``taken`` gets ``~2``, ``~3`` ... (updated)."""
    out = []
    for digest in digests:
        base = candidate = digest.hex()[:16]
        k = 1
        while candidate in taken:
            k += 1
            candidate = f"{base}~{k}"
        taken.add(candidate)
        out.append(candidate)
    return np.asarray(out, dtype=str)


def _list(names, limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def finish(data: DataSplits, warnings_: Iterable[str] = ()) -> DataSplits:
    """Check ``data`` and complete it with ids, warnings (``warnings_`` first, then those ``data`` carries,
    then what the checks find) and its fingerprint (see the module docstring).

    Raises ``HarnessError`` for an empty split, a label outside the classes or an id listed twice."""
    where = f"dataset {data.name!r}, protocol {data.protocol!r}"
    for s in SPLITS:
        split = getattr(data, s)
        if len(split) == 0:
            raise HarnessError(f"{where}: the {s} split is empty ({len(data.train)} train / {len(data.val)} val / "
                               f"{len(data.test)} test images); every split needs images. Add images, or choose "
                               f"another split protocol or per-class option.")
        if split.labels.min() < 0 or split.labels.max() >= len(data.classes):
            raise HarnessError(f"{where}: {s} labels range over {split.labels.min()}..{split.labels.max()}; expected "
                               f"0..{len(data.classes) - 1} (classes {_list(data.classes)}).")
        if split.ids is not None and len(split.ids) != len(split):
            raise HarnessError(f"{where}: the {s} split has {len(split)} images but {len(split.ids)} ids.")

    digests = {s: image_digests(getattr(data, s).images) for s in SPLITS}
    taken: set[str] = set()
    splits, seen = {}, {}
    for s in SPLITS:
        split = getattr(data, s)
        if split.ids is None:
            ids = content_ids(digests[s], taken)
        else:
            ids = np.asarray([str(i) for i in split.ids], dtype=str)
            for i in ids.tolist():
                if i in seen:
                    raise HarnessError(f"{where}: image id {i!r} is listed twice ({seen[i]} and {s}); ids must be "
                                       f"unique so that runs can be paired by image.")
                seen[i] = s
            taken.update(ids.tolist())
        splits[s] = Split(split.images, split.labels.astype(np.int64), ids)

    found = [*warnings_, *data.warnings]
    present = {s: set(np.unique(getattr(data, s).labels).tolist()) for s in SPLITS}
    nowhere = [c for i, c in enumerate(data.classes) if not any(i in p for p in present.values())]
    if nowhere:
        found.append(f"dataset {data.name!r}: {len(nowhere)} class(es) have no images: {', '.join(nowhere)}; they stay "
                     f"in the class list so labels keep their meaning.")
    for s in SPLITS:
        absent = [c for i, c in enumerate(data.classes) if i not in present[s] and c not in nowhere]
        if absent:
            found.append(f"{where}: class(es) absent from the {s} split: {', '.join(absent)}"
                         + ("; Macro-F1 and balanced accuracy count them by convention." if s == "test" else "."))
    shape = {s: tuple(getattr(data, s).images.shape[1:]) for s in SPLITS}
    for s in ("val", "test"):
        if shape[s] != shape["train"]:
            found.append(f"{where}: {s} images are {'x'.join(map(str, shape[s]))}, training images are "
                         f"{'x'.join(map(str, shape['train']))}.")
    seen_pixels = {d: s for s in ("train", "val") for d in digests[s]}
    copies = [i for i, d in zip(splits["test"].ids, digests["test"]) if d in seen_pixels]
    if copies:
        found.append(f"{where}: {len(copies)} of {len(data.test)} test images are pixel-identical to a training or "
                     f"validation image (test ids {_list(copies)}).")

    h = hashlib.sha256(b"harness-data-fingerprint-1")
    h.update(json.dumps(list(data.classes)).encode())
    for s in SPLITS:
        h.update(f"|{s}|{shape[s]}|{len(digests[s])}|".encode())
        h.update(b"".join(digests[s]))
        h.update(np.ascontiguousarray(splits[s].labels, dtype="<i8").tobytes())
    return dataclasses.replace(data, **splits, fingerprint=h.hexdigest()[:24], warnings=tuple(found))


def announce(data: DataSplits) -> DataSplits:
    """Show ``data.warnings`` on the console (``warnings.warn``); they are recorded in the result too."""
    for message in data.warnings:
        warnings.warn(message, UserWarning, stacklevel=3)
    return data


# ---------------------------------------------------------------------------------------------- cache


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_splits(cache_dir: Path, dataset: str, key: str, build: Callable[[], DataSplits],
                  warnings_: Iterable[str] = ()) -> DataSplits:
    """Prepared splits from ``cache_dir/dataset/key`` (memory-mapped), or ``build()`` them, :func:`finish` them
    (with ``warnings_`` added) and store arrays, ids, fingerprint and warnings there. The warnings are shown
    on every load."""
    folder = Path(cache_dir) / dataset / key
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != CACHE_FORMAT:
                raise KeyError("format")
            splits = {
                s: Split(np.load(folder / f"{s}_images.npy", mmap_mode="r"), np.load(folder / f"{s}_labels.npy"),
                         np.load(folder / f"{s}_ids.npy"))
                for s in SPLITS
            }
            return announce(DataSplits(**splits, classes=tuple(meta["classes"]), name=meta["name"],
                                       protocol=meta["protocol"], fingerprint=meta["fingerprint"],
                                       warnings=tuple(meta["warnings"])))
        except (OSError, ValueError, KeyError, HarnessError):
            shutil.rmtree(folder, ignore_errors=True)
    data = finish(build(), warnings_)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        for s in SPLITS:
            split = getattr(data, s)
            np.save(tmp / f"{s}_images.npy", np.ascontiguousarray(split.images))
            np.save(tmp / f"{s}_labels.npy", split.labels.astype(np.int64))
            np.save(tmp / f"{s}_ids.npy", np.asarray(split.ids, dtype=str))
        (tmp / "meta.json").write_text(json.dumps(
            {"format": CACHE_FORMAT, "classes": list(data.classes), "name": data.name, "protocol": data.protocol,
             "fingerprint": data.fingerprint, "warnings": list(data.warnings)}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return announce(data)
