"""The shared reading of the image-file datasets; one module per publisher (``aptos.py``, ``ham10000.py``,
``isic2018.py``, ``chexpert.py``, ``bone_marrow.py``, ``imagefolder.py``) parses its layout with these and
registers its dataset. Nothing here imports a publisher module.

A publisher module reads its metadata into a :class:`Table`: one row per image with its file (``None``
when listed but absent), label, the dataset's own id, the row it came from, and where known its group
(lesion / patient) and official split. :func:`prepare` then

- rejects a row that lists an image a second time with another label, group or official split (naming
  both rows), and keeps one of identical repeats (with a warning);
- drops or reports missing files; refuses image files that are links leading out of the dataset's root;
- draws the split protocol's indices and the per-class draws (``train_per_class`` / ``test_per_class``);
- returns ``DataSplits`` through two on-disk caches under ``request.cache_dir/<dataset>/``:
  ``pool-<key>.npy`` (every image of the table decoded and resized once, with each image's source size in
  ``sizes-<key>.npy``; key: the files' paths, sizes and modification times, and the decoding
  options; shared by all protocols and seeds) and ``<key>/`` (one protocol's splits with ids, fingerprint
  and warnings, ``harness.toolkit.data.cached_splits``; memory-mapped on the next load, so a second load
  reads only the metadata, stats the files and maps the arrays).

Folder walks (``walk_images``) do not follow directory links (a link ``akiec/loop -> ..`` would repeat the
tree); each link skipped is named in the data's warnings. Links to image files are followed when they stay
inside the dataset's root.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import DataSplits, HarnessError, Split
from harness.contract.specs import check_range
from harness.toolkit.data import (
    PerClassOptions,
    cache_key,
    cached_splits,
    file_fingerprint,
    grouped_stratified_split,
    per_class_selection,
    require_data_dir,
    stratified_split,
)

CACHE_VERSION = 2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
FITS = ("crop", "stretch", "pad")
PROTOCOL_FRACTIONS = {"diffmic": (0.7, 0.3), "iois": (0.7, 0.1, 0.2), "grouped": (0.7, 0.1, 0.2)}
PROFILES = {"smoke": {"size": 28}, "cpu": {"size": 28}, "paper": {"size": 224}}


@dataclass(frozen=True)
class ImageDatasetOptions(PerClassOptions):
    """Options of every image-file dataset (see each publisher module for its own)."""

    size: int = 224
    split: str = "iois"
    split_seed: int | None = None  # None: the trial's seed
    val_fraction: float = 0.1  # of train, for protocols without a validation split
    skip_missing: bool = False  # drop rows whose image file is absent (else an error naming it)
    fit: str = "crop"  # crop | stretch | pad

    def __post_init__(self):  # checked when the experiment is built, before any trial starts
        super().__post_init__()
        check_range("size", self.size, low=8, high=1024)
        check_range("fit", self.fit, choices=FITS)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive); found {self.val_fraction!r}")


@dataclass(frozen=True)
class FolderOptions(ImageDatasetOptions):
    """Options of the class-folder datasets (``bone-marrow``, ``imagefolder``)."""

    classes: tuple[str, ...] | str = "all"  # "all", a named subset, or classes ("A,B" or ["A", "B"])
    max_per_class: int = 0  # keep at most this many images per class (a fixed random choice); 0 = all

    def __post_init__(self):
        super().__post_init__()
        check_range("max_per_class", self.max_per_class, low=0)


@dataclass
class Table:
    """The rows of a dataset as its metadata lists them."""

    name: str
    classes: tuple[str, ...]
    files: list[Path | None]  # None: listed in the metadata, absent on disk
    labels: np.ndarray  # int64, index into classes
    ids: list[str]  # the dataset's own id of each image (image_id, id_code, CSV path, relative path)
    names: list[str]  # what messages call each image (its file name as listed)
    sources: list[Path]  # metadata files (part of the cache key)
    where: str  # where images were looked for (for the "missing" message)
    root: Path  # the dataset's folder: image files (links included) must be inside it
    groups: list[str] | None = None  # lesion / patient id per row
    official: list[str] | None = None  # "train" / "val" / "test" per row
    origins: list[str] | None = None  # the metadata row of each image ("train.csv row 7")
    notes: dict = field(default_factory=dict)  # extra key parts (e.g. the parsed task)
    warnings: list[str] = field(default_factory=list)  # found while reading (directory links skipped)

    def take(self, keep) -> Table:
        """The rows ``keep`` (a boolean mask or indices), in that order."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)

        def pick(values):
            return None if values is None else [values[i] for i in idx]

        return dataclasses.replace(self, files=pick(self.files), labels=self.labels[idx], ids=pick(self.ids),
                                   names=pick(self.names), groups=pick(self.groups), official=pick(self.official),
                                   origins=pick(self.origins))


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


def walk_images(folder: Path, root: Path) -> tuple[list[Path], list[str]]:
    """Image files anywhere below ``folder`` (sorted), and the directory links found and not followed
    (as ``link -> target`` relative to ``root``)."""
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder):  # followlinks=False: no loops, no escapes
        for d in sorted(dirnames):
            path = os.path.join(dirpath, d)
            if os.path.islink(path):
                skipped.append(f"{os.path.relpath(path, root)} -> {os.readlink(path)}")
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found), skipped


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


def read_image(path: Path, size: int, channels: int, fit: str = "crop",
               crop_border: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """One image file as uint8 (size, size, channels) and its source (width, height); a clear error for
    unreadable or truncated files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            source = image.size
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
    return fit_square(array, size, fit), source


def decode_image(path: Path, size: int, channels: int, fit: str = "crop", crop_border: bool = False) -> np.ndarray:
    """One image file as uint8 (size, size, channels)."""
    return read_image(path, size, channels, fit, crop_border)[0]


def decode_all(paths: list[Path], out: np.ndarray, sizes: np.ndarray, chunk: int = 256, **kwargs) -> None:
    """Decode ``paths`` into ``out`` and their source (width, height) into ``sizes`` (PIL releases the GIL
    while decoding: a few threads help)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), chunk):
            batch = paths[start: start + chunk]
            for i, (image, source) in enumerate(pool.map(lambda p: read_image(p, **kwargs), batch)):
                out[start + i] = image
                sizes[start + i] = source


def decoded_pool(cache_dir: Path, name: str, key: str, paths: list[Path], shape: tuple[int, int, int],
                 decode_kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    """All images decoded once into ``cache_dir/name/pool-<key>.npy`` (memory-mapped after), and their source
    (width, height) in ``sizes-<key>.npy``."""
    folder = Path(cache_dir) / name
    target, target_sizes = folder / f"pool-{key}.npy", folder / f"sizes-{key}.npy"
    if target.exists() and target_sizes.exists():
        try:
            pool, sizes = np.load(target, mmap_mode="r"), np.load(target_sizes)
            if pool.shape == (len(paths), *shape) and sizes.shape == (len(paths), 2):
                return pool, sizes
        except (OSError, ValueError):
            pass
    target.unlink(missing_ok=True)
    target_sizes.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".pool-{key}.", suffix=".npy")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        sizes = np.zeros((len(paths), 2), np.int64)
        decode_all(paths, out, sizes, **decode_kwargs)
        out.flush()
        del out
        np.save(tmp[:-4] + ".sizes.npy", sizes)
        os.replace(tmp[:-4] + ".sizes.npy", target_sizes)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp[:-4] + ".sizes.npy").unlink(missing_ok=True)
        raise
    return np.load(target, mmap_mode="r"), sizes


# --------------------------------------------------------------------------------------------- checks


def check_options(name: str, options, protocols: tuple[str, ...]) -> None:
    """What the options dataclass cannot check alone: the split protocol (imagefolder's depend on the tree)."""
    if options.split not in protocols:
        raise HarnessError(f"dataset {name!r} has no split protocol {options.split!r}; expected one of "
                           f"{', '.join(protocols)}.")


def drop_repeats(table: Table) -> tuple[Table, list[str]]:
    """One row per image id. Rows that list an image again with another label, group or official split
    are an error naming them; identical repeats are kept once, with a warning."""
    rows: dict[str, list[int]] = {}
    for i, image_id in enumerate(table.ids):
        rows.setdefault(image_id, []).append(i)
    repeated = {k: v for k, v in rows.items() if len(v) > 1}
    if not repeated:
        return table, []

    def facts(i: int) -> tuple:
        return (table.labels[i], table.groups[i] if table.groups else None,
                table.official[i] if table.official else None)

    def describe(i: int) -> str:
        origin = table.origins[i] if table.origins else f"row {i + 1}"
        label, group, part = facts(i)
        return (f"{origin}: label {table.classes[label]}" + (f", group {group}" if group is not None else "")
                + (f", {part} split" if part is not None else ""))

    conflicts = {k: v for k, v in repeated.items() if len({facts(i) for i in v}) > 1}
    if conflicts:
        first, where = next(iter(conflicts.items()))
        raise HarnessError(
            f"dataset {table.name!r}: {len(conflicts)} image(s) are listed more than once with different labels, "
            f"groups or splits; first {first}: {'; '.join(describe(i) for i in where)}. Expected one row per image: "
            f"fix the metadata ({', '.join(str(s) for s in table.sources)}) so each image has one label."
        )
    keep = np.ones(len(table.ids), bool)
    for v in repeated.values():
        keep[v[1:]] = False
    first, where = next(iter(repeated.items()))
    shown = "; ".join((table.origins[i] if table.origins else f"row {i + 1}") for i in where)
    message = (f"dataset {table.name!r}: {len(repeated)} image(s) are listed more than once with the same label "
               f"(first {first}: {shown}); each is used once.")
    return table.take(keep), [message]


def source_size_warning(sizes: np.ndarray, parts: dict[str, np.ndarray], where: str, size: int) -> list[str]:
    """A warning when most test images have a source size that no training image has."""
    train = Counter(map(tuple, sizes[parts["train"]].tolist()))
    test = Counter(map(tuple, sizes[parts["test"]].tolist()))
    unseen = sum(n for s, n in test.items() if s not in train)
    if unseen * 2 <= len(parts["test"]):
        return []

    def show(counts: Counter) -> str:
        return ", ".join(f"{w}x{h} ({n})" for (w, h), n in counts.most_common(3)) + (", ..." if len(counts) > 3 else "")

    return [f"{where}: {unseen} of {len(parts['test'])} test images have a source size no training image has "
            f"(test: {show(test)}; training: {show(train)}); all are resized to {size}x{size}, but a size "
            f"difference often means another camera, scanner or site."]


# --------------------------------------------------------------------------------------------- splits


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


def ordered_cut(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Favero et al.'s split rule over ``n`` rows in their listed order: the first int(0.8 n) rows train; of
    the last int(0.2 n) rows, the first half (int) validation and the last half (int) test. 20,405 rows give
    their 16,324 / 2,040 / 2,040 (the middle row of an odd tail is in no split)."""
    n_train, tail = int(n * 0.8), int(n * 0.2)
    half = int(tail * 0.5)
    return np.arange(n_train), np.arange(n - tail, n - tail + half), np.arange(n - half, n)


def split_indices(table: Table, protocol: str, seed: int, val_fraction: float) -> dict[str, np.ndarray]:
    """Row indices of train / val / test under ``protocol``."""
    labels = table.labels
    groups = np.asarray(table.groups) if table.groups is not None else None
    official = np.asarray(table.official) if table.official is not None else None
    pool = np.flatnonzero(official == "train") if official is not None else np.arange(len(labels))
    if protocol == "official":
        if official is None:
            raise HarnessError(f"dataset {table.name!r} has no official split")
        parts = {s: np.flatnonzero(official == s) for s in ("train", "val", "test")}
    elif protocol == "favero":
        parts = dict(zip(("train", "val", "test"), (pool[p] for p in ordered_cut(len(pool)))))
    else:
        if protocol == "grouped" and groups is None:
            raise HarnessError(f"dataset {table.name!r}: split=grouped needs a lesion or patient id per image, "
                               f"which this copy's metadata does not provide.")
        sub_groups = groups[pool] if protocol == "grouped" else None
        cut = _split(labels[pool], sub_groups, PROTOCOL_FRACTIONS[protocol], seed)
        if len(cut) == 2:
            parts = {"train": pool[cut[0]], "val": np.zeros(0, np.int64), "test": pool[cut[1]]}
        else:
            parts = {"train": pool[cut[0]], "val": pool[cut[1]], "test": pool[cut[2]]}
    if len(parts["val"]) == 0 and len(parts["train"]) > 1:  # take validation from train, never from test
        train = parts["train"]
        sub_groups = groups[train] if groups is not None else None
        keep, val = _split(labels[train], sub_groups, (1 - val_fraction, val_fraction), seed + 7919)
        parts["train"], parts["val"] = train[keep], train[val]
    for s in ("val",) if protocol in ("official", "favero") else ("val", "test"):  # a fixed test set is never made up
        if len(parts[s]) == 0 and len(parts["train"]) > 1:
            _move_one(parts, s, labels, groups, seed)
    for s in ("train", "val", "test"):
        if len(parts[s]) == 0:
            raise HarnessError(f"dataset {table.name!r}, protocol {protocol!r}: the {s} split is empty "
                               f"({len(labels)} images in all); add images or choose another split.")
    return parts


# ------------------------------------------------------------------------------------------- prepare


def prepare(request, table: Table, channels: int, protocols: tuple[str, ...], crop_border: bool = False,
            arrange=None) -> DataSplits:
    """Repeated rows, missing files, links, the split protocol, per-class draws and the two caches, for any
    Table. ``arrange(table, seed) -> table``, when given, re-orders or sub-selects the rows once repeats and
    missing files are dealt with (the ``favero`` protocol's balanced, shuffled order)."""
    options = request.options
    check_options(table.name, options, protocols)
    table, found = drop_repeats(table)
    found = [*table.warnings, *found]
    missing = [i for i, f in enumerate(table.files) if f is None]
    if missing and not options.skip_missing:
        shown = ", ".join(table.names[i] for i in missing[:3])
        raise HarnessError(
            f"dataset {table.name!r}: image {table.names[missing[0]]} listed in {table.sources[0]} was not found "
            f"(looked in {table.where}); {len(missing)} of {len(table.files)} listed images are missing "
            f"(first: {shown}). Restore them, or drop those rows with --set dataset.skip_missing=true."
        )
    if missing:
        found.append(f"dataset {table.name!r}: skip_missing=true dropped {len(missing)} of {len(table.files)} rows "
                     f"of {table.sources[0]} whose image is missing (looked in {table.where}).")
        table = table.take(np.asarray([f is not None for f in table.files]))
    if not table.files:
        raise HarnessError(f"dataset {table.name!r}: no images found (looked in {table.where}).")

    protocol = options.split
    seed = int(options.split_seed if options.split_seed is not None else 0 if protocol == "favero" else request.seed)
    if arrange is not None:
        table = arrange(table, seed)
    parts = split_indices(table, protocol, seed, options.val_fraction)
    keep, note, messages = per_class_selection({s: table.labels[idx] for s, idx in parts.items()}, table.classes,
                                               options, table.name)
    parts.update({s: parts[s][idx] for s, idx in keep.items()})
    found += messages

    size = int(options.size)
    decode_kwargs = {"size": size, "channels": channels, "fit": options.fit, "crop_border": crop_border}
    stats = file_fingerprint([*table.sources, *table.files], root=table.root, dataset=table.name)
    pool_key = cache_key(CACHE_VERSION, table.name, stats, decode_kwargs)
    option_values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    key = cache_key(CACHE_VERSION, pool_key, protocol, seed, option_values, table.labels.tolist(), table.ids,
                    table.notes, found)

    def build() -> DataSplits:
        pool, sizes = decoded_pool(request.cache_dir, table.name, pool_key, table.files, (size, size, channels),
                                   decode_kwargs)
        ids = np.asarray(table.ids, dtype=str)
        splits = {s: Split(np.asarray(pool[idx]), table.labels[idx].astype(np.int64), ids[idx])
                  for s, idx in parts.items()}
        where = f"dataset {table.name!r}, protocol {protocol!r}"
        return DataSplits(**splits, classes=table.classes, name=table.name,
                          protocol=f"{protocol}; {note}" if note else protocol,
                          warnings=tuple(source_size_warning(sizes, parts, where, size)))

    return cached_splits(request.cache_dir, table.name, key, build, found)


# ------------------------------------------------------------------------------ class-folder datasets


def class_subset(name: str, available: tuple[str, ...], requested, named: dict[str, tuple[str, ...]] | None = None
                 ) -> tuple[str, ...]:
    """The classes option: ``"all"`` (or empty), a name from ``named``, or a list of classes; kept in the
    order of ``available``."""
    named = named or {}
    if isinstance(requested, str):
        if requested.strip() in ("", "all"):
            return available
        if requested.strip() in named:
            return named[requested.strip()]
        requested = tuple(c.strip() for c in requested.split(",") if c.strip())
    requested = tuple(requested)
    if not requested:
        return available
    unknown = [c for c in requested if c not in available]
    if unknown:
        extra = f" or one of the names {', '.join(named)}" if named else ""
        raise HarnessError(f"dataset {name!r}: classes {', '.join(unknown)} unknown; expected \"all\", a subset of "
                           f"{', '.join(available)}{extra}.")
    return tuple(c for c in available if c in requested)


def folder_table(name: str, root: Path, class_dirs: dict[str, list[Path]], classes: tuple[str, ...],
                 max_per_class: int, where: str, official: dict[Path, str] | None = None) -> Table:
    """A Table from one list of folders per class (images at any depth; ids are paths relative to ``root``)."""
    files, labels, parts, skipped = [], [], [], []
    for label, c in enumerate(classes):
        found = []
        for folder in class_dirs.get(c, []):
            if os.path.islink(folder):
                skipped.append(f"{os.path.relpath(folder, root)} -> {os.readlink(folder)}")
                continue
            images, links = walk_images(folder, root)
            found += images
            skipped += links
        if max_per_class and len(found) > max_per_class:
            keep = np.sort(np.random.default_rng(0).permutation(len(found))[:max_per_class])
            found = [found[i] for i in keep]
        files += found
        labels += [label] * len(found)
        if official is not None:
            parts += [official[next(p for p in class_dirs[c] if f.is_relative_to(p))] for f in found]
    ids = [f.relative_to(root).as_posix() for f in files]
    warnings_ = []
    if skipped:
        warnings_.append(f"dataset {name!r}: {len(skipped)} directory link(s) below {root} were not followed "
                         f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}); put the images "
                         f"themselves inside the dataset's folder.")
    return Table(name, classes, list(files), np.asarray(labels, np.int64), ids, list(ids), [], where, root,
                 official=parts if official is not None else None, notes={"classes": list(classes)},
                 warnings=warnings_)
