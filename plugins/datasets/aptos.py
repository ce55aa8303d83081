"""``aptos``: APTOS 2019 Blindness Detection (Kaggle), fundus photographs graded 0-4 for diabetic retinopathy.

Layout: ``train.csv`` (``id_code``, ``diagnosis`` 0-4) and ``train_images/<id_code>.png``, in ``DATA_DIR/aptos/``
or ``DATA_DIR``. Classes: no DR, mild, moderate, severe, proliferative DR (label = diagnosis). The Kaggle test
set has no labels, so there is no ``official`` protocol: ``iois`` (70/10/20 stratified, the default) or
``diffmic`` (70/30 stratified, validation drawn from the 70). Image ids are the CSV's ``id_code``.
``crop_border=true`` crops each photograph to the bounding box of its pixels brighter than 7 (the black border
around the retina) before resizing. Options every image dataset takes: ``plugins/datasets/reader.py`` and the
README's Datasets section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import DatasetSpec, HarnessError, hookimpl
from plugins.datasets.reader import (
    PROFILES,
    ImageDatasetOptions,
    Table,
    check_id,
    index_images,
    locate_root,
    prepare,
    read_csv,
)

NAME = "aptos"
CLASSES = ("no DR", "mild", "moderate", "severe", "proliferative DR")  # diagnosis 0..4
PROTOCOLS = ("iois", "diffmic")
LAYOUT = """\
  aptos/
    train.csv                  columns id_code, diagnosis (0-4)
    train_images/<id_code>.png"""
OBTAIN = ("Download the APTOS 2019 Blindness Detection data from Kaggle "
          "(https://www.kaggle.com/competitions/aptos2019-blindness-detection/data; "
          "`kaggle competitions download -c aptos2019-blindness-detection`), unzip it into DATA_DIR/aptos/.")


@dataclass(frozen=True)
class AptosOptions(ImageDatasetOptions):
    crop_border: bool = False  # crop the black border around the retina to its bounding box


def read_table(request) -> Table:
    root = locate_root(request.data_dir, NAME, ("train.csv",), LAYOUT, OBTAIN)
    csv_path = root / "train.csv"
    rows = read_csv(csv_path, ("id_code", "diagnosis"), LAYOUT)
    image_dir = root / "train_images"
    if not image_dir.is_dir():
        raise HarnessError(f"dataset 'aptos': folder {image_dir} not found; expected the images listed in "
                           f"{csv_path} there. Expected layout:\n{LAYOUT}\n{OBTAIN}")
    index = index_images([image_dir])
    files, labels, ids, origins = [], [], [], []
    for r, row in enumerate(rows, start=2):
        code = check_id(row["id_code"], csv_path, r, "id_code")
        value = row["diagnosis"]
        if value not in ("0", "1", "2", "3", "4"):
            raise HarnessError(f"{csv_path}, row {r}: diagnosis {value!r} is not a known class; expected 0-4 "
                               f"({', '.join(CLASSES)}).")
        files.append(index.get(code))
        labels.append(int(value))
        ids.append(code)
        origins.append(f"{csv_path.name} row {r}")
    return Table(NAME, CLASSES, files, np.asarray(labels, np.int64), ids, [f"{i}.png" for i in ids], [csv_path],
                 f"{image_dir}/", root, origins=origins)


def load(request):
    return prepare(request, read_table(request), 3, PROTOCOLS, crop_border=bool(request.options.crop_border))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="APTOS 2019 Blindness Detection: fundus photographs, diabetic-retinopathy grade 0-4",
        load=load,
        classes=CLASSES,
        modality="Fundus photography",
        channels=3,
        source="Karthik, Maggie, Sohier Dane: APTOS 2019 Blindness Detection, Kaggle (2019), "
               "https://kaggle.com/competitions/aptos2019-blindness-detection",
        license="Kaggle competition rules (non-commercial research use)",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=PROTOCOLS,
        options=AptosOptions,
        profiles=PROFILES,
    ))
