"""Small trees in each publisher's layout, written with generated images, for the dataset tests and for any
test that runs a method on a real layout (``write_aptos`` makes ``DIR/aptos/`` for
``harness run --datasets aptos --data-dir DIR``; the ``aptos_data_dir`` fixture in ``conftest.py`` returns
such a ``DIR``).

Every image has a class colour (``COLOURS``; ``colour_labels`` recovers the class from the pixels) plus a
small per-image offset, so no two images are identical.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# A distinct colour per class: a loaded image's colour tells its class.
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200),
           (120, 120, 120)]
APTOS_CLASSES = ("no DR", "mild", "moderate", "severe", "proliferative DR")
HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")


def shade(colour, i: int):
    """The class colour moved by a per-image offset (0..19), so every image of a class differs."""
    return tuple(min(255, v + i % 20) for v in colour)


def write_image(path: Path, colour, size=(20, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def colour_labels(images: np.ndarray) -> np.ndarray:
    """The class whose colour each (constant-colour) image is closest to."""
    mean = images.reshape(len(images), -1, images.shape[-1]).mean(1)
    return np.argmin(((mean[:, None, :] - np.asarray(COLOURS)[None]) ** 2).sum(-1), axis=1)


def write_aptos(root: Path, per_class: int = 10, size=(24, 18)):
    """``root/train.csv`` and ``root/train_images/<id_code>.png``: ``per_class`` fundus stand-ins per grade
    (0-4), each a class colour with a per-image offset and width. Returns the CSV rows (id_code, diagnosis)."""
    rows = []
    for c in range(5):
        for i in range(per_class):
            code = f"{c}a{i:03d}f"
            write_image(root / "train_images" / f"{code}.png", shade(COLOURS[c], i), size=(size[0] + i % 7, size[1]))
            rows.append((code, c))
    write_csv(root / "train.csv", ("id_code", "diagnosis"), rows)
    return rows


def write_ham(root: Path, per_class: int = 10):
    """HAM10000 layout: two images per lesion, spread over part_1 and part_2. Returns the metadata rows."""
    rows = []
    for c, dx in enumerate(HAM_CLASSES):
        for i in range(per_class):
            image_id = f"ISIC_{c}{i:05d}"
            part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
            write_image(root / part / f"{image_id}.jpg", shade(COLOURS[c], i), size=(30, 22))
            rows.append((f"HAM_{c}{i // 2:04d}", image_id, dx, "histo", 50, "male", "back"))
    write_csv(root / "HAM10000_metadata.csv",
              ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"), rows)
    return rows


def write_isic(root: Path, counts=(("Training", 8), ("Validation", 2), ("Test", 3)), groupings=False):
    """ISIC 2018 Task 3 layout; ``counts`` images per class and part. Returns the rows per part."""
    out = {}
    offset = 0
    for part, n in counts:
        rows = []
        for c in range(7):
            for i in range(n):
                image = f"ISIC_{part[:2]}{c}{i:03d}"
                write_image(root / f"ISIC2018_Task3_{part}_Input" / f"{image}.jpg", shade(COLOURS[c], offset + i))
                rows.append((image, *[1.0 if k == c else 0.0 for k in range(7)]))
        offset += n
        name = f"ISIC2018_Task3_{part}_GroundTruth"
        # the training CSV sits in the folder its zip creates, the others at the root
        csv_path = root / name / f"{name}.csv" if part == "Training" else root / f"{name}.csv"
        write_csv(csv_path, ("image", *ISIC_CLASSES), rows)
        out[part] = rows
    if groupings:
        write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", ("image", "lesion_id", "diagnosis_confirm_type"),
                  [(r[0], f"L{r[0][-4:-1]}", "histo") for r in out["Training"]])
    return out


CHEX_HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS)


def chex_row(path, view, pe, nf):
    findings = {f: "" for f in CHEXPERT_FINDINGS}
    findings["Pleural Effusion"], findings["No Finding"] = pe, nf
    return (path, "Male", 60, view, "AP" if view == "Frontal" else "", *findings.values())


def write_chexpert(base: Path):
    """CheXpert-v1.0-small with 12 patients in train and 4 in valid, two studies and two views each.
    Returns the expected default task rows ({"train": [(patient, label)], "test": [...]})."""
    release = base / "CheXpert-v1.0-small"
    train, valid = [], []
    expected = {"train": [], "test": []}
    # (pe, nf) per patient, study1 frontal; patterns cycle through positive, negative, uncertain, both-blank
    patterns = [("1.0", ""), ("", "1.0"), ("-1.0", ""), ("0.0", "")]
    for split, rows, patients in (("train", train, range(1, 13)), ("valid", valid, range(100, 104))):
        for p in patients:
            pe, nf = patterns[p % 4]
            for study in (1, 2):
                for k, (view, fname) in enumerate((("Frontal", "view1_frontal.jpg"), ("Lateral", "view2_lateral.jpg"))):
                    rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study{study}/{fname}"
                    label = 1 if pe == "1.0" else 0
                    write_image(base / rel, 60 + 150 * label + p % 13 + 4 * k + 2 * study, size=(26, 32), mode="L")
                    rows.append(chex_row(rel, view, pe, nf))
                    if study == 1 and view == "Frontal" and (pe, nf) in (("1.0", ""), ("", "1.0")):
                        expected["train" if split == "train" else "test"].append((f"patient{p:05d}", label))
    write_csv(release / "train.csv", CHEX_HEADER, train)
    write_csv(release / "valid.csv", CHEX_HEADER, valid)
    return expected


def write_bone_marrow(root: Path, classes=("ABE", "BAS", "BLA", "LYT"), per_class: int = 10):
    """TCIA's layout under ``BM_cytomorphology_data/``, images nested one folder below each class."""
    for c, abbr in enumerate(classes):
        for i in range(per_class):
            sub = "0001-1000" if i % 2 else "1001-2000"  # nested folders, as TCIA distributes them
            write_image(root / "BM_cytomorphology_data" / abbr / sub / f"{abbr}_{i:05d}.jpg",
                        shade(COLOURS[c % len(COLOURS)], i), (25, 25))
