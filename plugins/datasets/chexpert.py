"""``chexpert``: CheXpert chest X-rays (Irvin et al.), one binary task; by default Favero et al.'s pleural
effusion vs no finding.

Layout: ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` with ``train.csv`` / ``valid.csv``; the CSV's ``Path`` is
resolved inside that folder and may not leave it. Class 1 = option ``positive`` (default Pleural Effusion),
class 0 = option ``negative`` (default No Finding); an image is kept when exactly one of the two is 1 (Favero
et al.'s "Pleural Effusion XOR No Finding"), from frontal views (``views``) of each patient's first study
(``first_study_only``). ``negative=""`` makes class 0 every image whose positive finding is not 1. Blank labels
count as 0. Uncertain (-1) labels of the two findings follow ``uncertain``: ``exclude`` (default: drop the
image; with the XOR task this is what the literal rule does), ``zeros`` (U-Zeros: -1 -> 0) or ``ones``
(U-Ones: -1 -> 1) (Irvin et al.). Image ids are the CSV's ``Path`` below the release folder
(``train/patient00001/study1/view1_frontal.jpg``). Protocols:

- ``official`` (default): test = ``valid.csv`` (radiologist labels), val drawn from ``train.csv`` by patient;
- ``grouped`` (70/10/20, each patient on one side), ``iois``, ``diffmic``: drawn from ``train.csv``;
- ``favero``: Favero et al.'s split rule: the ``train.csv`` rows of the task whose image is a first study's
  first frontal view (``study1/view1_frontal.jpg``), in the CSV's order: the first int(0.8 n) train, of the
  last int(0.2 n) the first half validation and the last half test (``reader.ordered_cut``); on the full
  CheXpert ``train.csv`` their paper reports 16,324 / 2,040 / 2,040. No seed: the split is fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import DatasetSpec, HarnessError, hookimpl
from harness.contract.specs import check_range
from plugins.datasets.reader import PROFILES, ImageDatasetOptions, Table, locate_root, prepare, read_csv, safe_join

NAME = "chexpert"
FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
            "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
            "Pleural Other", "Fracture", "Support Devices")
CLASSES = ("No Finding", "Pleural Effusion")  # label 0 = option negative, 1 = option positive
PROTOCOLS = ("official", "grouped", "iois", "diffmic", "favero")
RELEASES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
UNCERTAIN = ("exclude", "zeros", "ones")
VIEWS = ("frontal", "lateral", "all")
PATIENT = re.compile(r"(patient\d+)")
FAVERO_IMAGE = "/study1/view1_frontal.jpg"
LAYOUT = """\
  chexpert/
    CheXpert-v1.0-small/       (or CheXpert-v1.0/)
      train.csv                columns Path, Sex, Age, Frontal/Lateral, AP/PA, the 14 findings (1, 0, -1, blank)
      valid.csv
      train/patient00001/study1/view1_frontal.jpg ...
      valid/patient64541/study1/view1_frontal.jpg ..."""
OBTAIN = ("Request CheXpert from Stanford (https://stanfordmlgroup.github.io/competitions/chexpert/ or "
          "https://aimi.stanford.edu/datasets/chexpert-chest-x-rays) and unzip CheXpert-v1.0-small "
          "(or CheXpert-v1.0) into DATA_DIR/chexpert/.")


@dataclass(frozen=True)
class CheXpertOptions(ImageDatasetOptions):
    split: str = "official"
    positive: str = "Pleural Effusion"  # the finding of class 1
    negative: str = "No Finding"  # the finding of class 0; "" = every image without the positive finding
    uncertain: str = "exclude"  # -1 labels of the two findings: exclude (drop the image) | zeros | ones
    views: str = "frontal"  # frontal | lateral | all
    first_study_only: bool = True  # only each patient's study1 (Favero et al.)

    def __post_init__(self):
        super().__post_init__()
        check_range("uncertain", self.uncertain, choices=UNCERTAIN)
        check_range("views", self.views, choices=VIEWS)


def _value(value: str, csv_path: Path, row: int, column: str) -> int:
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


def _check(opt) -> None:
    for finding, what in ((opt.positive, "positive"), (opt.negative, "negative")):
        if finding and finding not in FINDINGS:
            raise HarnessError(f"dataset 'chexpert': {what}={finding!r} is not a CheXpert finding; expected one of "
                               f"{', '.join(FINDINGS)}.")
    if not opt.positive or opt.positive == opt.negative:
        raise HarnessError(f"dataset 'chexpert': positive must be a finding different from negative; found "
                           f"positive={opt.positive!r}, negative={opt.negative!r}.")


def read_table(request) -> Table:
    opt = request.options
    _check(opt)
    base = locate_root(request.data_dir, NAME, ("train.csv",), LAYOUT, OBTAIN, subdirs=RELEASES)
    classes = (opt.negative or f"no {opt.positive}", opt.positive)
    files, labels, ids, groups, official, sources, origins = [], [], [], [], [], [], []
    csv_files = (("train.csv", "train"),) if opt.split == "favero" else (("train.csv", "train"), ("valid.csv", "test"))
    for filename, part in csv_files:
        csv_path = base / filename
        if not csv_path.exists():
            if part == "test" and opt.split == "official":
                raise HarnessError(f"dataset 'chexpert': split=official needs {csv_path}, which was not found; "
                                   f"expected layout:\n{LAYOUT}\n{OBTAIN}")
            continue
        required = ("Path", "Frontal/Lateral", opt.positive, *([opt.negative] if opt.negative else []))
        rows = read_csv(csv_path, required, LAYOUT)
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
            if opt.split == "favero" and not f"/{rel}".endswith(FAVERO_IMAGE):
                continue
            pos = _value(row[opt.positive], csv_path, r, opt.positive)
            neg = _value(row[opt.negative], csv_path, r, opt.negative) if opt.negative else 0
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
            origins.append(f"{csv_path.name} row {r}")
    task = {"positive": opt.positive, "negative": opt.negative, "uncertain": opt.uncertain, "views": opt.views}
    return Table(NAME, classes, files, np.asarray(labels, np.int64), ids, list(ids), sources, f"{base}/", base,
                 groups=groups, official=official, origins=origins, notes=task)


def load(request):
    return prepare(request, read_table(request), 1, PROTOCOLS)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="CheXpert chest X-rays, binary task (default: Pleural Effusion vs No Finding, frontal, "
                    "study1; Favero et al.)",
        load=load,
        classes=CLASSES,
        modality="Chest X-ray",
        channels=1,
        source="Irvin et al.: CheXpert, AAAI 2019, arXiv:1901.07031",
        license="Stanford University CheXpert Dataset Research Use Agreement (non-commercial)",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=PROTOCOLS,
        options=CheXpertOptions,
        profiles=PROFILES,
    ))
