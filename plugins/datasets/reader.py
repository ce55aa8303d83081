"""Shared machinery of the image-file datasets registered in ``plugins/datasets/papers.py``.

A layout parser (``_aptos_table``, ``_ham_table``, ...) reads the publisher's metadata into a ``Table``:
one row per image with its file (``None`` when listed but absent), label, group (lesion / patient) and
official split. ``prepare`` then drops or reports missing files, draws the split protocol's indices, and
returns ``DataSplits`` through two on-disk caches under ``request.cache_dir/<dataset>/``:

- ``pool-<key>.npy``: every image of the table decoded and resized once (key: the files' paths, sizes and
  modification times, and the decoding options); shared by all protocols and split seeds;
- ``<key>/``: the splits of one protocol and seed (``harness.toolkit.data.cached_splits``), memory-mapped on the
  next load, so a second load reads only the metadata, stats the files and maps the arrays.

Any changed image or metadata file changes both keys.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import DataSplits, HarnessError, Split
from harness.toolkit.data import (
    cache_key,
    cached_splits,
    file_fingerprint,
    grouped_stratified_split,
    require_data_dir,
    stratified_split,
)
from plugins.datasets import papers as P

CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
FITS = ("crop", "stretch", "pad")
PROTOCOL_FRACTIONS = {"diffmic": (0.7, 0.3), "iois": (0.7, 0.1, 0.2), "grouped": (0.7, 0.1, 0.2)}


@dataclass
class Table:
    """The rows of a dataset as its metadata lists them."""

    name: str
    classes: tuple[str, ...]
    files: list[Path | None]  # None: listed in the metadata, absent on disk
    labels: np.ndarray  # int64, index into classes
    ids: list[str]  # what the metadata calls each image (for messages)
    sources: list[Path]  # metadata files (part of the cache key)
    where: str  # where images were looked for (for the "missing" message)
    groups: list[str] | None = None  # lesion / patient id per row
    official: list[str] | None = None  # "train" / "val" / "test" per row
    notes: dict = field(default_factory=dict)  # extra key parts (e.g. the parsed task)


# ------------------------------------------------------------------------------------------ locating


def locate_root(data_dir, name: str, markers: tuple[str, ...], layout: str, obtain: str,
                subdirs: tuple[str, ...] = ()) -> Path:
    """The first of ``DATA_DIR/<name>[/<subdir>]`` and ``DATA_DIR[/<subdir>]`` holding one of ``markers``."""
    base = require_data_dir(data_dir, name, f"{obtain}\nExpected layout:\n{layout}")
    candidates = []
    for top in (base / name, base):
        candidates += [top / sub for sub in subdirs] + [top]
    for candidate in candidates:
        if any((candidate / marker).exists() for marker in markers):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise HarnessError(
        f"dataset {name!r}: {markers[0]} not found. Looked in: {looked}.\n"
        f"Expected the publisher's layout:\n{layout}\n{obtain}"
    )


def first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).exists():
            return root / n
    return None


def read_csv(path: Path, required: tuple[str, ...], layout: str) -> list[dict[str, str]]:
    """Rows of a CSV (or tab-separated ``.tab``) file, checking that the ``required`` columns exist."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}. Expected a CSV file with columns "
                           f"{', '.join(required)}.") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in columns]
    if missing:
        raise HarnessError(f"{path}: expected columns {', '.join(required)}; missing {', '.join(missing)} "
                           f"(found: {', '.join(columns) or 'no header'}). Expected layout:\n{layout}")
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def check_id(value: str, csv_path: Path, row: int, column: str) -> str:
    """An image id from a CSV must be a plain file name: no folders, no ``..``."""
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise HarnessError(f"{csv_path}, row {row}: {column} {value!r} is not a plain image name (it would "
                           f"escape the data root {csv_path.parent}); expected a name like ISIC_0024306.")
    return value


def safe_join(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that leave ``root``."""
    joined = os.path.normpath(os.path.join(root, relative))
    inside = os.path.normpath(root)
    if os.path.isabs(relative) or not (joined == inside or joined.startswith(inside + os.sep)):
        raise HarnessError(f"{where}: path {relative!r} escapes the data root {root}; expected a "
                           f"path relative to it (like CheXpert-v1.0-small/train/patient00001/study1/"
                           f"view1_frontal.jpg).")
    return Path(joined)


def index_images(folders: list[Path]) -> dict[str, Path]:
    """File stem -> path for the image files directly inside ``folders`` (the first folder wins)."""
    out: dict[str, Path] = {}
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS and stem not in out and entry.is_file():
                out[stem] = Path(entry.path)
    return out


def walk_images(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def class_label(value: str, classes: tuple[str, ...], csv_path: Path, row: int, column: str) -> int:
    if value not in classes:
        raise HarnessError(f"{csv_path}, row {row}: {column} {value!r} is not a known class; expected one of "
                           f"{', '.join(classes)}.")
    return classes.index(value)


# ------------------------------------------------------------------------------------------ decoding


def to_channels(image, channels: int) -> np.ndarray:
    """A PIL image as uint8 (H, W, channels): palette, grayscale, RGBA (alpha dropped), CMYK and 16-bit
    images (scaled by 255/65535) are all converted."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 16-bit -> 8-bit
        elif mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], channels, axis=2)
    if channels == 1:
        return np.asarray(image.convert("L"))[..., None]
    if mode in ("L", "1", "LA", "I"):
        gray = np.asarray(image.convert("L"))
        return np.repeat(gray[..., None], channels, axis=2)
    rgb = np.asarray(image.convert("RGB"))
    if channels == 3:
        return rgb
    raise HarnessError(f"cannot convert {mode} images to {channels} channels; expected 1 or 3")


def crop_retina(array: np.ndarray, tolerance: int = 7) -> np.ndarray:
    """Crop a fundus photograph's black border to the bounding box of the pixels brighter than ``tolerance``."""
    gray = array.max(axis=2)
    rows = np.flatnonzero((gray > tolerance).any(axis=1))
    cols = np.flatnonzero((gray > tolerance).any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return array
    return array[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def fit_square(array: np.ndarray, size: int, fit: str) -> np.ndarray:
    from PIL import Image

    h, w = array.shape[:2]
    if fit == "crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        array = array[top: top + side, left: left + side]
        h = w = side
    squeeze = array.shape[2] == 1
    pil = Image.fromarray(array[..., 0] if squeeze else array)
    if fit == "pad" and h != w:
        scale = size / max(h, w)
        inner = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        canvas = Image.new(pil.mode, (size, size))
        canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        pil = canvas
    elif pil.size != (size, size):
        pil = pil.resize((size, size), Image.BICUBIC)
    out = np.asarray(pil)
    return out[..., None] if squeeze else out


def decode_image(path: Path, size: int, channels: int, fit: str = "crop", crop_border: bool = False) -> np.ndarray:
    """One image file as uint8 (size, size, channels); a clear error for unreadable or truncated files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if not crop_border and image.format == "JPEG":
                image.draft(image.mode, (size, size))  # decode big JPEGs at a reduced scale (still >= size)
            image.load()
            array = to_channels(image, channels)
    except FileNotFoundError:
        raise HarnessError(f"image {path} disappeared while loading; expected an image file there.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HarnessError(f"image {path} is corrupt or truncated ({type(exc).__name__}: {exc}); expected a "
                           f"readable image file. Re-download it, or delete it and use skip_missing=true.") from None
    if crop_border:
        array = crop_retina(array)
    return fit_square(array, size, fit)


def decode_all(paths: list[Path], out: np.ndarray, chunk: int = 256, **kwargs) -> None:
    """Decode ``paths`` into ``out`` (PIL releases the GIL while decoding: a few threads help)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), chunk):
            batch = paths[start: start + chunk]
            for i, image in enumerate(pool.map(lambda p: decode_image(p, **kwargs), batch)):
                out[start + i] = image


def decoded_pool(cache_dir: Path, name: str, key: str, paths: list[Path], shape: tuple[int, int, int],
                 decode_kwargs: dict) -> np.ndarray:
    """All images decoded once into ``cache_dir/name/pool-<key>.npy`` (memory-mapped after)."""
    folder = Path(cache_dir) / name
    target = folder / f"pool-{key}.npy"
    if target.exists():
        try:
            pool = np.load(target, mmap_mode="r")
            if pool.shape == (len(paths), *shape):
                return pool
        except (OSError, ValueError):
            pass
        target.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".pool-{key}.", suffix=".npy")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        decode_all(paths, out, **decode_kwargs)
        out.flush()
        del out
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return np.load(target, mmap_mode="r")


# --------------------------------------------------------------------------------------------- splits


def check_options(name: str, options, protocols: tuple[str, ...]) -> None:
    if options.split not in protocols:
        raise HarnessError(f"dataset {name!r} has no split protocol {options.split!r}; expected one of "
                           f"{', '.join(protocols)}.")
    if options.fit not in FITS:
        raise HarnessError(f"dataset {name!r}: fit must be one of {', '.join(FITS)}; found {options.fit!r}")
    if not 8 <= int(options.size) <= 1024:
        raise HarnessError(f"dataset {name!r}: size must be between 8 and 1024 px; found {options.size}")
    if not 0 < options.val_fraction < 1:
        raise HarnessError(f"dataset {name!r}: val_fraction must be in (0, 1); found {options.val_fraction}")


def _split(labels: np.ndarray, groups, fractions, seed) -> list[np.ndarray]:
    if groups is not None:
        return grouped_stratified_split(labels, groups, fractions, seed)
    return stratified_split(labels, fractions, seed)


def _move_one(parts: dict[str, np.ndarray], target: str, labels: np.ndarray, groups, seed: int) -> None:
    """A split left empty by rounding (every class too small for a share) gets one image (one group) of the
    most frequent class of train, chosen with ``seed``."""
    train = parts["train"]
    c = np.bincount(labels[train]).argmax()
    pick = np.random.default_rng([seed, 31]).choice(train[labels[train] == c])
    moved = train[groups[train] == groups[pick]] if groups is not None else np.asarray([pick])
    if len(moved) < len(train):
        parts["train"] = np.setdiff1d(train, moved)
        parts[target] = np.sort(moved)


def split_indices(table: Table, protocol: str, seed: int, val_fraction: float) -> dict[str, np.ndarray]:
    """Row indices of train / val / test under ``protocol``."""
    labels = table.labels
    groups = np.asarray(table.groups) if table.groups is not None else None
    official = np.asarray(table.official) if table.official is not None else None
    if protocol == "official":
        if official is None:
            raise HarnessError(f"dataset {table.name!r} has no official split")
        parts = {s: np.flatnonzero(official == s) for s in ("train", "val", "test")}
    else:
        pool = np.flatnonzero(official == "train") if official is not None else np.arange(len(labels))
        if protocol == "grouped" and groups is None:
            raise HarnessError(f"dataset {table.name!r}: split=grouped needs a lesion or patient id per image, "
                               f"which this copy's metadata does not provide.")
        sub_groups = groups[pool] if protocol == "grouped" else None
        cut = _split(labels[pool], sub_groups, PROTOCOL_FRACTIONS[protocol], seed)
        if len(cut) == 2:
            parts = {"train": pool[cut[0]], "val": np.zeros(0, np.int64), "test": pool[cut[1]]}
        else:
            parts = {"train": pool[cut[0]], "val": pool[cut[1]], "test": pool[cut[2]]}
    if len(parts["val"]) == 0:  # take validation from train, never from test
        train = parts["train"]
        sub_groups = groups[train] if groups is not None else None
        keep, val = _split(labels[train], sub_groups, (1 - val_fraction, val_fraction), seed + 7919)
        parts["train"], parts["val"] = train[keep], train[val]
    for s in ("val",) if protocol == "official" else ("val", "test"):  # an official test set is never made up
        if len(parts[s]) == 0 and len(parts["train"]) > 1:
            _move_one(parts, s, labels, groups, seed)
    for s in ("train", "val", "test"):
        if len(parts[s]) == 0:
            raise HarnessError(f"dataset {table.name!r}, split {protocol!r}: the {s} split is empty "
                               f"({len(labels)} images in all); add images or choose another split.")
    return parts


# ------------------------------------------------------------------------------------------- prepare


def prepare(request, table: Table, channels: int, protocols: tuple[str, ...], crop_border: bool = False) -> DataSplits:
    """Missing files, empty classes, the split protocol and the two caches, for any Table."""
    options = request.options
    check_options(table.name, options, protocols)
    missing = [i for i, f in enumerate(table.files) if f is None]
    if missing and not options.skip_missing:
        shown = ", ".join(table.ids[i] for i in missing[:3])
        raise HarnessError(
            f"dataset {table.name!r}: image {table.ids[missing[0]]} listed in {table.sources[0]} was not found "
            f"(looked in {table.where}); {len(missing)} of {len(table.files)} listed images are missing "
            f"(first: {shown}). Restore them, or drop those rows with --set dataset.skip_missing=true."
        )
    if missing:
        warnings.warn(f"dataset {table.name!r}: skip_missing=true dropped {len(missing)} of {len(table.files)} "
                      f"rows of {table.sources[0]} whose image is missing (looked in {table.where}).", stacklevel=2)
        keep = np.asarray([f is not None for f in table.files])
        table = dataclasses.replace(
            table,
            files=[f for f in table.files if f is not None],
            labels=table.labels[keep],
            ids=[x for x, k in zip(table.ids, keep) if k],
            groups=[g for g, k in zip(table.groups, keep) if k] if table.groups is not None else None,
            official=[o for o, k in zip(table.official, keep) if k] if table.official is not None else None,
        )
    if not table.files:
        raise HarnessError(f"dataset {table.name!r}: no images found (looked in {table.where}).")
    counts = np.bincount(table.labels, minlength=len(table.classes))
    empty = [c for c, n in zip(table.classes, counts) if n == 0]
    if empty:
        warnings.warn(f"dataset {table.name!r}: {len(empty)} class(es) have no images: {', '.join(empty)} (looked in "
                      f"{table.where}); they stay in the class list so labels keep their meaning.", stacklevel=2)

    seed = int(options.split_seed if options.split_seed is not None else request.seed)
    parts = split_indices(table, options.split, seed, options.val_fraction)

    size = int(options.size)
    decode_kwargs = {"size": size, "channels": channels, "fit": options.fit, "crop_border": crop_border}
    fingerprint = file_fingerprint([*table.sources, *table.files])
    pool_key = cache_key(CACHE_VERSION, table.name, fingerprint, decode_kwargs)
    option_values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    key = cache_key(CACHE_VERSION, pool_key, options.split, seed, option_values, table.labels.tolist(),
                    table.notes)

    def build() -> DataSplits:
        pool = decoded_pool(request.cache_dir, table.name, pool_key, table.files, (size, size, channels),
                            decode_kwargs)
        splits = {s: Split(np.asarray(pool[idx]), table.labels[idx].astype(np.int64)) for s, idx in parts.items()}
        return DataSplits(**splits, classes=table.classes, name=table.name, protocol=options.split)

    return cached_splits(request.cache_dir, table.name, key, build)


# ---------------------------------------------------------------------------------------------- APTOS


def _aptos_table(request) -> Table:
    root = locate_root(request.data_dir, "aptos", ("train.csv",), P.APTOS_LAYOUT, P.APTOS_OBTAIN)
    csv_path = root / "train.csv"
    rows = read_csv(csv_path, ("id_code", "diagnosis"), P.APTOS_LAYOUT)
    image_dir = root / "train_images"
    if not image_dir.is_dir():
        raise HarnessError(f"dataset 'aptos': folder {image_dir} not found; expected the images listed in "
                           f"{csv_path} there. Expected layout:\n{P.APTOS_LAYOUT}\n{P.APTOS_OBTAIN}")
    index = index_images([image_dir])
    files, labels, ids = [], [], []
    for r, row in enumerate(rows, start=2):
        code = check_id(row["id_code"], csv_path, r, "id_code")
        value = row["diagnosis"]
        if value not in ("0", "1", "2", "3", "4"):
            raise HarnessError(f"{csv_path}, row {r}: diagnosis {value!r} is not a known class; expected 0-4 "
                               f"({', '.join(P.APTOS_CLASSES)}).")
        files.append(index.get(code))
        labels.append(int(value))
        ids.append(f"{code}.png")
    return Table("aptos", P.APTOS_CLASSES, files, np.asarray(labels, np.int64), ids, [csv_path], f"{image_dir}/")


def load_aptos(request) -> DataSplits:
    table = _aptos_table(request)
    return prepare(request, table, 3, ("iois", "diffmic"), crop_border=bool(request.options.crop_border))


# ------------------------------------------------------------------------------------------- HAM10000


def _ham_table(request) -> Table:
    root = locate_root(request.data_dir, "ham10000", ("HAM10000_metadata.csv", "HAM10000_metadata.tab"),
                       P.HAM_LAYOUT, P.HAM_OBTAIN)
    csv_path = first_existing(root, ("HAM10000_metadata.csv", "HAM10000_metadata.tab"))
    rows = read_csv(csv_path, ("lesion_id", "image_id", "dx"), P.HAM_LAYOUT)
    dirs = list(request.options.image_dirs) or list(P.HAM_IMAGE_DIRS)
    folders = [safe_join(root, d, "option image_dirs") if d != "." else root for d in dirs]
    folders = [f for f in folders if f.is_dir()]
    index = index_images(folders)
    if not index and not request.options.image_dirs:  # one folder of images under any other name
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        index = index_images(folders)
    where = ", ".join(f"{f}/" for f in folders) or f"{root}/ (no image folder found)"
    files, labels, ids, groups = [], [], [], []
    for r, row in enumerate(rows, start=2):
        image_id = check_id(row["image_id"], csv_path, r, "image_id")
        labels.append(class_label(row["dx"].lower(), P.HAM_CLASSES, csv_path, r, "dx"))
        files.append(index.get(image_id))
        ids.append(f"{image_id}.jpg")
        groups.append(row["lesion_id"] or image_id)
    return Table("ham10000", P.HAM_CLASSES, files, np.asarray(labels, np.int64), ids, [csv_path], where,
                 groups=groups)


def load_ham10000(request) -> DataSplits:
    return prepare(request, _ham_table(request), 3, ("grouped", "iois", "diffmic"))


# ------------------------------------------------------------------------------------------ ISIC 2018

ISIC_PART_FILES = {
    "train": ("ISIC2018_Task3_Training_GroundTruth.csv", "ISIC2018_Task3_Training_Input"),
    "val": ("ISIC2018_Task3_Validation_GroundTruth.csv", "ISIC2018_Task3_Validation_Input"),
    "test": ("ISIC2018_Task3_Test_GroundTruth.csv", "ISIC2018_Task3_Test_Input"),
}


def _find_isic_csv(root: Path, filename: str) -> Path | None:
    return first_existing(root, (filename, f"{filename[:-4]}/{filename}"))


def _isic_table(request) -> Table:
    gt, _ = ISIC_PART_FILES["train"]
    root = locate_root(request.data_dir, "isic2018", (gt, f"{gt[:-4]}/{gt}"), P.ISIC_LAYOUT, P.ISIC_OBTAIN)
    files, labels, ids, official, sources, wheres = [], [], [], [], [], []
    for part, (filename, input_dir) in ISIC_PART_FILES.items():
        csv_path = _find_isic_csv(root, filename)
        if csv_path is None:
            if part == "test" and request.options.split == "official":
                raise HarnessError(
                    f"dataset 'isic2018': split=official needs the test ground truth {root / filename}, which was "
                    f"not found; expected layout:\n{P.ISIC_LAYOUT}\nDownload it from "
                    f"https://challenge.isic-archive.com/data/#2018, or use --set dataset.split=diffmic (or iois).")
            continue
        rows = read_csv(csv_path, ("image", *P.ISIC_CLASSES), P.ISIC_LAYOUT)
        folder = root / input_dir
        index = index_images([folder])
        wheres.append(f"{folder}/")
        sources.append(csv_path)
        for r, row in enumerate(rows, start=2):
            image = check_id(row["image"], csv_path, r, "image")
            try:
                onehot = [float(row[c]) for c in P.ISIC_CLASSES]
            except ValueError:
                onehot = []
            if sorted(onehot) != [0.0] * (len(P.ISIC_CLASSES) - 1) + [1.0]:
                found = ", ".join(f"{c}={row[c]}" for c in P.ISIC_CLASSES)
                raise HarnessError(f"{csv_path}, row {r}: expected exactly one of {', '.join(P.ISIC_CLASSES)} to "
                                   f"be 1 and the others 0; found {found}.")
            labels.append(onehot.index(1.0))
            files.append(index.get(image))
            ids.append(f"{image}.jpg")
            official.append(part)
    groups = None
    grouping = _find_isic_csv(root, "ISIC2018_Task3_Training_LesionGroupings.csv")
    if grouping is not None:
        lesion = {row["image"]: row["lesion_id"]
                  for row in read_csv(grouping, ("image", "lesion_id"), P.ISIC_LAYOUT)}
        groups = [lesion.get(i[:-4], i[:-4]) for i in ids]
        sources.append(grouping)
    return Table("isic2018", P.ISIC_CLASSES, files, np.asarray(labels, np.int64), ids, sources, ", ".join(wheres),
                 groups=groups, official=official)


def load_isic2018(request) -> DataSplits:
    return prepare(request, _isic_table(request), 3, ("official", "diffmic", "iois", "grouped"))


# ------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
UNCERTAIN = ("exclude", "zeros", "ones")
VIEWS = ("frontal", "lateral", "all")
PATIENT = re.compile(r"(patient\d+)")


def _chexpert_value(value: str, csv_path: Path, row: int, column: str) -> int:
    """1, 0, -1 (uncertain); blank (not mentioned) counts as 0."""
    if value == "":
        return 0
    try:
        number = float(value)
    except ValueError:
        number = None
    if number not in (1.0, 0.0, -1.0):
        raise HarnessError(f"{csv_path}, row {row}: {column} is {value!r}; expected 1, 0, -1 (uncertain) or blank.")
    return int(number)


def _chexpert_table(request) -> Table:
    opt = request.options
    for finding, what in ((opt.positive, "positive"), (opt.negative, "negative")):
        if finding and finding not in P.CHEXPERT_FINDINGS:
            raise HarnessError(f"dataset 'chexpert': {what}={finding!r} is not a CheXpert finding; expected one of "
                               f"{', '.join(P.CHEXPERT_FINDINGS)}.")
    if not opt.positive or opt.positive == opt.negative:
        raise HarnessError(f"dataset 'chexpert': positive must be a finding different from negative; found "
                           f"positive={opt.positive!r}, negative={opt.negative!r}.")
    if opt.uncertain not in UNCERTAIN:
        raise HarnessError(f"dataset 'chexpert': uncertain must be one of {', '.join(UNCERTAIN)}; "
                           f"found {opt.uncertain!r}")
    if opt.views not in VIEWS:
        raise HarnessError(f"dataset 'chexpert': views must be one of {', '.join(VIEWS)}; found {opt.views!r}")
    base = locate_root(request.data_dir, "chexpert", ("train.csv",), P.CHEXPERT_LAYOUT, P.CHEXPERT_OBTAIN,
                       subdirs=CHEXPERT_DIRS)
    classes = (opt.negative or f"no {opt.positive}", opt.positive)
    files, labels, ids, groups, official, sources = [], [], [], [], [], []
    for filename, part in (("train.csv", "train"), ("valid.csv", "test")):
        csv_path = base / filename
        if not csv_path.exists():
            if part == "test" and opt.split == "official":
                raise HarnessError(f"dataset 'chexpert': split=official needs {csv_path}, which was not found; "
                                   f"expected layout:\n{P.CHEXPERT_LAYOUT}\n{P.CHEXPERT_OBTAIN}")
            continue
        required = ("Path", "Frontal/Lateral", opt.positive, *([opt.negative] if opt.negative else []))
        rows = read_csv(csv_path, required, P.CHEXPERT_LAYOUT)
        sources.append(csv_path)
        for r, row in enumerate(rows, start=2):
            rel = row["Path"]
            first, _, rest = rel.replace("\\", "/").partition("/")
            rel = rest if first.startswith("CheXpert-v1.0") else rel  # paths start with the release folder
            path = safe_join(base, rel, f"{csv_path}, row {r}")
            view = row["Frontal/Lateral"].lower()
            if opt.views != "all" and view != opt.views:
                continue
            if opt.first_study_only and "/study1/" not in f"/{rel}":
                continue
            pos = _chexpert_value(row[opt.positive], csv_path, r, opt.positive)
            neg = _chexpert_value(row[opt.negative], csv_path, r, opt.negative) if opt.negative else 0
            if -1 in (pos, neg):
                if opt.uncertain == "exclude":
                    continue
                pos, neg = [(1 if opt.uncertain == "ones" else 0) if v == -1 else v for v in (pos, neg)]
            if opt.negative:
                if pos == neg:  # Favero et al.: exactly one of the two findings
                    continue
                label = pos
            else:
                label = int(pos == 1)
            patient = PATIENT.search(rel)
            files.append(path if path.is_file() else None)
            labels.append(label)
            ids.append(rel)
            groups.append(patient.group(1) if patient else str(Path(rel).parent.parent))
            official.append(part)
    task = {"positive": opt.positive, "negative": opt.negative, "uncertain": opt.uncertain, "views": opt.views}
    return Table("chexpert", classes, files, np.asarray(labels, np.int64), ids, sources, f"{base}/",
                 groups=groups, official=official, notes=task)


def load_chexpert(request) -> DataSplits:
    return prepare(request, _chexpert_table(request), 1, ("official", "grouped", "iois", "diffmic"))


# ------------------------------------------------------------------------------ class-folder datasets


def _subset(name: str, available: tuple[str, ...], requested) -> tuple[str, ...]:
    if isinstance(requested, str):
        requested = tuple(c.strip() for c in requested.split(",") if c.strip())
    requested = tuple(requested)
    if not requested:
        return available
    unknown = [c for c in requested if c not in available]
    if unknown:
        raise HarnessError(f"dataset {name!r}: classes {', '.join(unknown)} unknown; expected a subset of "
                           f"{', '.join(available)}.")
    return tuple(c for c in available if c in requested)


def _folder_table(name: str, class_dirs: dict[str, list[Path]], classes: tuple[str, ...], max_per_class: int,
                  where: str, official: dict[Path, str] | None = None) -> Table:
    files, labels, parts = [], [], []
    for label, c in enumerate(classes):
        found = []
        for folder in class_dirs.get(c, []):
            found += walk_images(folder)
        if max_per_class and len(found) > max_per_class:
            keep = np.sort(np.random.default_rng(0).permutation(len(found))[:max_per_class])
            found = [found[i] for i in keep]
        files += found
        labels += [label] * len(found)
        if official is not None:
            parts += [official[next(p for p in class_dirs[c] if f.is_relative_to(p))] for f in found]
    ids = [str(f) for f in files]
    return Table(name, classes, list(files), np.asarray(labels, np.int64), ids, [], where,
                 official=parts if official is not None else None, notes={"classes": list(classes)})


def load_bone_marrow(request) -> DataSplits:
    opt = request.options
    markers = P.BONE_MARROW_CLASSES
    root = locate_root(request.data_dir, "bone-marrow", markers, P.BONE_MARROW_LAYOUT, P.BONE_MARROW_OBTAIN,
                       subdirs=("BM_cytomorphology_data",))
    classes = _subset("bone-marrow", P.BONE_MARROW_CLASSES, opt.classes)
    dirs = {c: [root / c] for c in classes if (root / c).is_dir()}
    table = _folder_table("bone-marrow", dirs, classes, opt.max_per_class, f"{root}/<class>/")
    return prepare(request, table, 3, ("iois", "diffmic"))


def load_imagefolder(request) -> DataSplits:
    opt = request.options
    if opt.channels not in (1, 3):
        raise HarnessError(f"dataset 'imagefolder': channels must be 1 or 3; found {opt.channels}")
    if opt.root:
        root = Path(opt.root).expanduser()
        if not root.is_absolute():
            root = require_data_dir(request.data_dir, "imagefolder", P.IMAGEFOLDER_OBTAIN) / root
        if not root.is_dir():
            raise HarnessError(f"dataset 'imagefolder': root {root} is not a folder. Expected layout:\n"
                               f"{P.IMAGEFOLDER_LAYOUT}\n{P.IMAGEFOLDER_OBTAIN}")
    else:
        base = require_data_dir(request.data_dir, "imagefolder", P.IMAGEFOLDER_OBTAIN)
        root = base / "imagefolder" if (base / "imagefolder").is_dir() else base
    split_dirs = {"train": root / "train", "val": root / "val", "test": root / "test"}
    has_official = split_dirs["train"].is_dir() and split_dirs["test"].is_dir()
    if opt.split == "official" and not has_official:
        raise HarnessError(f"dataset 'imagefolder': split=official needs {root}/train/<class>/ and "
                           f"{root}/test/<class>/ (val/ optional); expected layout:\n{P.IMAGEFOLDER_LAYOUT}")
    tops = [p for p in split_dirs.values() if p.is_dir()] if has_official else [root]
    names = sorted({d.name for top in tops for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not names:
        raise HarnessError(f"dataset 'imagefolder': no class folders in {root}. Expected layout:\n"
                           f"{P.IMAGEFOLDER_LAYOUT}\n{P.IMAGEFOLDER_OBTAIN}")
    classes = _subset("imagefolder", tuple(names), opt.classes)
    dirs = {c: [top / c for top in tops if (top / c).is_dir()] for c in classes}
    official = {top / c: s for s, top in split_dirs.items() for c in classes} if has_official else None
    table = _folder_table("imagefolder", dirs, classes, opt.max_per_class, f"{root}/<class>/", official)
    if not has_official:
        table = dataclasses.replace(table, official=None)
    protocols = ("iois", "diffmic", "official") if has_official else ("iois", "diffmic")
    return prepare(request, table, int(opt.channels), protocols)
