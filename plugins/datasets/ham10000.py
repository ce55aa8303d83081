"""``ham10000``: HAM10000 dermatoscopic images (Tschandl et al., Harvard Dataverse), 7 ``dx`` classes.

Layout: ``HAM10000_metadata.csv`` (or Dataverse's tab-separated ``.tab``; columns ``lesion_id``, ``image_id``,
``dx``) and images ``<image_id>.jpg`` in ``HAM10000_images_part_1/`` and ``_part_2/``, or in one folder
(``HAM10000_images/``, ``images/``, the root, the folders named by option ``image_dirs``, and failing all of
these every sub-folder of the root). Classes akiec, bcc, bkl, df, mel, nv, vasc (alphabetical, as DermaMNIST).
No official split: default ``grouped`` (70/10/20, all images of one ``lesion_id`` on one side), or ``iois`` /
``diffmic``. Image ids are the metadata's ``image_id``. An image listed twice with two labels (or two lesions)
is an error naming both rows; an identical repeat is used once, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import DatasetSpec, hookimpl
from plugins.datasets.reader import (
    PROFILES,
    ImageDatasetOptions,
    Table,
    check_id,
    class_label,
    first_existing,
    index_images,
    locate_root,
    prepare,
    read_csv,
    safe_join,
)

NAME = "ham10000"
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # dx, alphabetical (= DermaMNIST order)
PROTOCOLS = ("grouped", "iois", "diffmic")
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "ham10000_images_part_1",
              "ham10000_images_part_2", "HAM10000_images", "images", ".")
METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata.tab")
LAYOUT = """\
  ham10000/
    HAM10000_metadata.csv      columns lesion_id, image_id, dx, ... (or HAM10000_metadata.tab)
    HAM10000_images_part_1/<image_id>.jpg
    HAM10000_images_part_2/<image_id>.jpg
  (or all images in one folder: HAM10000_images/, images/, the root itself, or option image_dirs)"""
OBTAIN = ("Download HAM10000 from the Harvard Dataverse (https://doi.org/10.7910/DVN/DBW86T: "
          "HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, HAM10000_metadata) and unzip into "
          "DATA_DIR/ham10000/.")


@dataclass(frozen=True)
class HAM10000Options(ImageDatasetOptions):
    split: str = "grouped"
    image_dirs: tuple[str, ...] = ()  # folders (relative to the root) holding the images; () = the usual ones


def read_table(request) -> Table:
    root = locate_root(request.data_dir, NAME, METADATA, LAYOUT, OBTAIN)
    csv_path = first_existing(root, METADATA)
    rows = read_csv(csv_path, ("lesion_id", "image_id", "dx"), LAYOUT)
    dirs = list(request.options.image_dirs) or list(IMAGE_DIRS)
    folders = [safe_join(root, d, "option image_dirs") if d != "." else root for d in dirs]
    folders = [f for f in folders if f.is_dir()]
    index = index_images(folders)
    if not index and not request.options.image_dirs:  # one folder of images under any other name
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        index = index_images(folders)
    where = ", ".join(f"{f}/" for f in folders) or f"{root}/ (no image folder found)"
    files, labels, ids, groups, origins = [], [], [], [], []
    for r, row in enumerate(rows, start=2):
        image_id = check_id(row["image_id"], csv_path, r, "image_id")
        labels.append(class_label(row["dx"].lower(), CLASSES, csv_path, r, "dx"))
        files.append(index.get(image_id))
        ids.append(image_id)
        groups.append(row["lesion_id"] or image_id)
        origins.append(f"{csv_path.name} row {r}")
    return Table(NAME, CLASSES, files, np.asarray(labels, np.int64), ids, [f"{i}.jpg" for i in ids], [csv_path],
                 where, root, groups=groups, origins=origins)


def load(request):
    return prepare(request, read_table(request), 3, PROTOCOLS)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="HAM10000 dermatoscopic images, 7 dx classes (akiec, bcc, bkl, df, mel, nv, vasc)",
        load=load,
        classes=CLASSES,
        modality="Dermatoscopy",
        channels=3,
        source="Tschandl, Rosendahl, Kittler: The HAM10000 dataset, Scientific Data 5, 180161 (2018), "
               "doi:10.1038/sdata.2018.161",
        license="CC BY-NC 4.0",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=PROTOCOLS,
        options=HAM10000Options,
        profiles=PROFILES,
    ))
