"""``isic2018``: ISIC 2018 Task 3 (Codella et al.), dermatoscopic images, 7 classes in the ground truth's order.

Layout: the Task 3 ground-truth CSVs (``image`` + one-hot MEL, NV, BCC, AKIEC, BKL, DF, VASC: that is the class
order) and ``*_Input/`` folders for Training, Validation and Test (each CSV may also sit in the folder its zip
creates). Image ids are the CSV's ``image``. Protocols:

- ``official`` (default): Training / Validation / Test (needs the Test ground truth; without the Validation
  files, val is drawn from Training);
- ``diffmic`` (70/30), ``iois`` (70/10/20), ``grouped`` (70/10/20 by lesion; needs
  ``ISIC2018_Task3_Training_LesionGroupings.csv``): drawn from Training only;
- ``favero``: Favero et al.'s data protocol: the Training images, every class undersampled to the smallest
  class (a fixed draw), shuffled (a fixed order: ``split_seed``, default 0, not the trial's seed), then cut in
  that order into the first 80% train, 10% validation, 10% test (``reader.ordered_cut``).

``task=melanoma`` is Favero et al.'s binary task, melanoma (class 1) vs benign (class 0): class 0 holds the
classes of option ``negatives``, by default the benign diagnoses NV, BKL, DF and VASC (BCC and AKIEC, which are
malignant or pre-malignant, are left out); rows of other classes are not used. With ``split=favero`` the two
classes are balanced, as in their paper (their ISIC set came from the ISIC archive, 8,169 / 1,021 / 1,021;
ISIC 2018 Training holds 1,113 melanomas, so this gives 2 x 1,113 images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import DatasetSpec, HarnessError, hookimpl
from harness.contract.specs import check_range
from plugins.datasets.reader import (
    PROFILES,
    ImageDatasetOptions,
    Table,
    check_id,
    first_existing,
    index_images,
    locate_root,
    prepare,
    read_csv,
)

NAME = "isic2018"
CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # the ground-truth CSV's column order
PROTOCOLS = ("official", "diffmic", "iois", "grouped", "favero")
TASKS = ("all", "melanoma")
BENIGN = ("NV", "BKL", "DF", "VASC")
PART_FILES = {
    "train": ("ISIC2018_Task3_Training_GroundTruth.csv", "ISIC2018_Task3_Training_Input"),
    "val": ("ISIC2018_Task3_Validation_GroundTruth.csv", "ISIC2018_Task3_Validation_Input"),
    "test": ("ISIC2018_Task3_Test_GroundTruth.csv", "ISIC2018_Task3_Test_Input"),
}
GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
LAYOUT = """\
  isic2018/
    ISIC2018_Task3_Training_GroundTruth.csv     columns image, MEL, NV, BCC, AKIEC, BKL, DF, VASC (one-hot)
    ISIC2018_Task3_Training_Input/<image>.jpg
    ISIC2018_Task3_Training_LesionGroupings.csv  (optional: image, lesion_id; needed by split=grouped)
    ISIC2018_Task3_Validation_GroundTruth.csv + ISIC2018_Task3_Validation_Input/  (optional)
    ISIC2018_Task3_Test_GroundTruth.csv + ISIC2018_Task3_Test_Input/              (needed by split=official)
  (each CSV may also sit in the folder its zip creates, e.g. ISIC2018_Task3_Training_GroundTruth/)"""
OBTAIN = ("Download ISIC 2018 Task 3 from https://challenge.isic-archive.com/data/#2018 (Training, "
          "Validation and Test Input and GroundTruth zips) and unzip them into DATA_DIR/isic2018/.")


@dataclass(frozen=True)
class ISIC2018Options(ImageDatasetOptions):
    split: str = "official"
    task: str = "all"  # all: the 7 classes | melanoma: melanoma (1) vs the classes of `negatives` (0)
    negatives: tuple[str, ...] | str = BENIGN  # task=melanoma: the ISIC classes that make class 0

    def __post_init__(self):
        super().__post_init__()
        check_range("task", self.task, choices=TASKS)


def _find_csv(root, filename: str):
    return first_existing(root, (filename, f"{filename[:-4]}/{filename}"))


def task_classes(options) -> tuple[tuple[str, ...], dict[int, int]]:
    """The task's class names and the map from ISIC class index to task label (absent: row not used)."""
    if options.task == "all":
        return CLASSES, {i: i for i in range(len(CLASSES))}
    negatives = options.negatives
    if isinstance(negatives, str):
        negatives = tuple(c.strip() for c in negatives.split(",") if c.strip())
    wrong = [c for c in negatives if c not in CLASSES or c == "MEL"]
    if wrong or not negatives:
        raise HarnessError(f"dataset 'isic2018': negatives must be ISIC classes other than MEL (from "
                           f"{', '.join(CLASSES[1:])}); found {', '.join(wrong) or 'none'}.")
    mapping = {CLASSES.index("MEL"): 1, **{CLASSES.index(c): 0 for c in negatives}}
    return ("benign" if set(negatives) <= set(BENIGN) else "not melanoma", "melanoma"), mapping


def read_table(request) -> Table:
    options = request.options
    classes, mapping = task_classes(options)
    gt, _ = PART_FILES["train"]
    root = locate_root(request.data_dir, NAME, (gt, f"{gt[:-4]}/{gt}"), LAYOUT, OBTAIN)
    files, labels, ids, official, sources, wheres, origins = [], [], [], [], [], [], []
    for part, (filename, input_dir) in PART_FILES.items():
        csv_path = _find_csv(root, filename)
        if csv_path is None:
            if part == "test" and options.split == "official":
                raise HarnessError(
                    f"dataset 'isic2018': split=official needs the test ground truth {root / filename}, which was "
                    f"not found; expected layout:\n{LAYOUT}\nDownload it from "
                    f"https://challenge.isic-archive.com/data/#2018, or use --set dataset.split=diffmic (or iois).")
            continue
        rows = read_csv(csv_path, ("image", *CLASSES), LAYOUT)
        folder = root / input_dir
        index = index_images([folder])
        wheres.append(f"{folder}/")
        sources.append(csv_path)
        for r, row in enumerate(rows, start=2):
            image = check_id(row["image"], csv_path, r, "image")
            try:
                onehot = [float(row[c]) for c in CLASSES]
            except ValueError:
                onehot = []
            if sorted(onehot) != [0.0] * (len(CLASSES) - 1) + [1.0]:
                found = ", ".join(f"{c}={row[c]}" for c in CLASSES)
                raise HarnessError(f"{csv_path}, row {r}: expected exactly one of {', '.join(CLASSES)} to "
                                   f"be 1 and the others 0; found {found}.")
            isic_label = onehot.index(1.0)
            if isic_label not in mapping:
                continue
            labels.append(mapping[isic_label])
            files.append(index.get(image))
            ids.append(image)
            official.append(part)
            origins.append(f"{csv_path.name} row {r}")
    groups = None
    grouping = _find_csv(root, GROUPINGS)
    if grouping is not None:
        lesion = {row["image"]: row["lesion_id"] for row in read_csv(grouping, ("image", "lesion_id"), LAYOUT)}
        groups = [lesion.get(i, i) for i in ids]
        sources.append(grouping)
    return Table(NAME, classes, files, np.asarray(labels, np.int64), ids, [f"{i}.jpg" for i in ids], sources,
                 ", ".join(wheres), root, groups=groups, official=official, origins=origins,
                 notes={"task": options.task, "negatives": list(mapping)})


def balanced_order(table: Table, seed: int) -> Table:
    """Favero et al.: the training rows, every class undersampled to the smallest (a fixed draw), shuffled."""
    train = np.flatnonzero(np.asarray(table.official) == "train")
    labels = table.labels[train]
    present = np.unique(labels)
    n = min(int((labels == c).sum()) for c in present)
    rng = np.random.default_rng([seed, 42])
    keep = np.concatenate([rng.permutation(train[labels == c])[:n] for c in present])
    return table.take(rng.permutation(np.sort(keep)))


def load(request):
    arrange = balanced_order if request.options.split == "favero" else None
    return prepare(request, read_table(request), 3, PROTOCOLS, arrange=arrange)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="ISIC 2018 Task 3: dermatoscopic images, 7 classes in the CSV's order (MEL first); "
                    "task=melanoma: melanoma vs benign (Favero et al.)",
        load=load,
        classes=CLASSES,
        modality="Dermatoscopy",
        channels=3,
        source="Codella et al.: Skin Lesion Analysis Toward Melanoma Detection 2018, arXiv:1902.03368; "
               "Tschandl et al., Scientific Data 5, 180161 (2018)",
        license="CC BY-NC 4.0",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=PROTOCOLS,
        options=ISIC2018Options,
        profiles=PROFILES,
    ))
