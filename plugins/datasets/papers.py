"""The papers' datasets, read as their publishers distribute them: ``aptos``, ``ham10000``, ``isic2018``,
``chexpert``, ``bone-marrow`` and the generic ``imagefolder``.

This module only registers: it holds the option dataclasses, class orders, citations and the publishers'
layouts, and imports nothing heavy. Decoding, splitting and caching live in ``plugins/datasets/reader.py``.

Each dataset is looked for in ``DATA_DIR/<name>/`` and then in ``DATA_DIR`` itself. Options every one of
them takes (``--set dataset.KEY=VALUE`` or ``--set <name>.KEY=VALUE``):

- ``size``: images are decoded and resized once to ``size x size`` (profiles: smoke/cpu 28, paper 224).
- ``fit``: how a non-square image becomes square: ``crop`` (centre square crop, then resize; DiffMIC's
  preprocessing; the default), ``stretch`` (resize, ignoring the aspect ratio) or ``pad`` (letterbox on black).
- ``split``: the split protocol, one of the dataset's ``protocols``:
  ``official`` (the publisher's own train / validation / test where it has one), ``diffmic`` (70/30
  stratified, DiffMIC), ``iois`` (70/10/20 stratified, IOIS), ``grouped`` (70/10/20, stratified by class,
  all images of one lesion or patient on the same side). Non-official protocols split the source's
  training data only (ISIC 2018 Training, CheXpert train.csv). A protocol without a validation split
  (``diffmic``; ``official`` where the source has no validation set) draws ``val_fraction`` of *train*
  for validation (grouped when the dataset has groups), never from test.
- ``split_seed``: the seed of drawn splits; empty (the default) uses the trial's seed, an integer fixes
  the split across trial seeds.
- ``skip_missing``: an image listed in the metadata but absent is an error naming it; ``true`` drops such
  rows instead (the count is reported with ``warnings.warn``).

Per dataset (class order = label index; the publisher's layout is printed by every "not found" error):

- ``aptos``: ``train.csv`` (``id_code``, ``diagnosis`` 0-4) and ``train_images/<id_code>.png``; classes
  no DR, mild, moderate, severe, proliferative DR. The Kaggle test set has no labels, so there is no
  ``official`` protocol (default ``iois``). ``crop_border=true`` crops each photograph to the bounding box
  of its pixels brighter than 7 (the black border around the retina) before resizing.
- ``ham10000``: ``HAM10000_metadata.csv`` (or Dataverse's ``.tab``; columns ``lesion_id``, ``image_id``,
  ``dx``); images ``<image_id>.jpg`` in ``HAM10000_images_part_1/`` and ``_part_2/``, or in one folder
  (``HAM10000_images/``, ``images/``, the root, the folders named by option ``image_dirs``, and failing all
  of these every sub-folder of the root). Classes akiec, bcc, bkl, df, mel, nv, vasc (alphabetical, as
  DermaMNIST). No official split; default ``grouped`` by ``lesion_id``.
- ``isic2018``: Task 3 ground truth (``image`` + one-hot MEL, NV, BCC, AKIEC, BKL, DF, VASC: that is the
  class order) and ``*_Input/`` folders for Training, Validation and Test. ``official`` = Training /
  Validation / Test (needs the Test ground truth; without the Validation files, val is drawn from
  Training). ``grouped`` needs ``ISIC2018_Task3_Training_LesionGroupings.csv``.
- ``chexpert``: ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` with ``train.csv`` / ``valid.csv``; the CSV's
  ``Path`` is resolved inside that folder and may not leave it. A binary task: class 1 = option
  ``positive`` (default Pleural Effusion), class 0 = option ``negative`` (default No Finding); an image
  is kept when exactly one of the two is 1 (Favero et al.'s "Pleural Effusion XOR No Finding"), from
  frontal views (``views``) of each patient's first study (``first_study_only``). ``negative=""`` makes
  class 0 every image whose positive finding is not 1. Blank labels count as 0. Uncertain (-1) labels of
  the two findings follow ``uncertain``: ``exclude`` (default: drop the image; with the XOR task this is
  what the literal rule does), ``zeros`` (U-Zeros: -1 -> 0) or ``ones`` (U-Ones: -1 -> 1) (Irvin et al.).
  ``official``: test = ``valid.csv`` (radiologist labels), val drawn from ``train.csv`` by patient;
  ``grouped`` keeps each patient (``patientNNNNN`` in ``Path``) on one side.
- ``bone-marrow``: one folder per class abbreviation (ABE, ART, BAS, BLA, EBO, EOS, FGC, HAC, KSC, LYI,
  LYT, MMZ, MON, MYB, NGB, NGS, NIF, OTH, PEB, PLM, PMO: that order), images at any depth below it,
  optionally under ``BM_cytomorphology_data/``. ``classes`` picks a subset (kept in this order);
  ``max_per_class`` caps each class (171k images in all). A class without images is a warning.
- ``imagefolder``: ``root/<class>/<image>`` (classes alphabetical), or ``root/train|val|test/<class>/``
  for ``split=official``; option ``root`` and ``channels`` (1 or 3).

Pixels: grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted to the dataset's
channels; 16-bit values are scaled by 255/65535. Decoded arrays are cached under ``--cache-dir`` keyed by
the image and metadata files (path, size, modification time), the decoding options and the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import DatasetOptions, DatasetSpec, hookimpl

IMPL = "plugins.datasets.reader"
PROFILES = {"smoke": {"size": 28}, "cpu": {"size": 28}, "paper": {"size": 224}}


@dataclass(frozen=True)
class ImageDatasetOptions(DatasetOptions):
    size: int = 224
    split: str = "iois"
    split_seed: int | None = None  # None: the trial's seed
    val_fraction: float = 0.1  # of train, for protocols without a validation split
    skip_missing: bool = False  # drop rows whose image file is absent (else an error naming it)
    fit: str = "crop"  # crop | stretch | pad


@dataclass(frozen=True)
class AptosOptions(ImageDatasetOptions):
    crop_border: bool = False  # crop the black border around the retina to its bounding box


@dataclass(frozen=True)
class HAM10000Options(ImageDatasetOptions):
    split: str = "grouped"
    image_dirs: tuple[str, ...] = ()  # folders (relative to the root) holding the images; () = the usual ones


@dataclass(frozen=True)
class ISIC2018Options(ImageDatasetOptions):
    split: str = "official"


@dataclass(frozen=True)
class CheXpertOptions(ImageDatasetOptions):
    split: str = "official"
    positive: str = "Pleural Effusion"  # the finding of class 1
    negative: str = "No Finding"  # the finding of class 0; "" = every image without the positive finding
    uncertain: str = "exclude"  # -1 labels of the two findings: exclude (drop the image) | zeros | ones
    views: str = "frontal"  # frontal | lateral | all
    first_study_only: bool = True  # only each patient's study1 (Favero et al.)


@dataclass(frozen=True)
class FolderOptions(ImageDatasetOptions):
    classes: tuple[str, ...] | str = ()  # a subset of the classes ("A,B" or ["A", "B"]); () = all
    max_per_class: int = 0  # keep at most this many images per class (a fixed random choice); 0 = all


@dataclass(frozen=True)
class ImageFolderOptions(FolderOptions):
    root: str = ""  # the root/<class>/<image> folder (absolute, or relative to DATA_DIR); "" = DATA_DIR/imagefolder
    channels: int = 3


# ------------------------------------------------------------------------------------------------ APTOS

APTOS_CLASSES = ("no DR", "mild", "moderate", "severe", "proliferative DR")  # diagnosis 0..4
APTOS_LAYOUT = """\
  aptos/
    train.csv                  columns id_code, diagnosis (0-4)
    train_images/<id_code>.png"""
APTOS_OBTAIN = ("Download the APTOS 2019 Blindness Detection data from Kaggle "
                "(https://www.kaggle.com/competitions/aptos2019-blindness-detection/data; "
                "`kaggle competitions download -c aptos2019-blindness-detection`), unzip it into DATA_DIR/aptos/.")

# --------------------------------------------------------------------------------------------- HAM10000

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # dx, alphabetical (= DermaMNIST order)
HAM_IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "ham10000_images_part_1",
                  "ham10000_images_part_2", "HAM10000_images", "images", ".")
HAM_LAYOUT = """\
  ham10000/
    HAM10000_metadata.csv      columns lesion_id, image_id, dx, ... (or HAM10000_metadata.tab)
    HAM10000_images_part_1/<image_id>.jpg
    HAM10000_images_part_2/<image_id>.jpg
  (or all images in one folder: HAM10000_images/, images/, the root itself, or option image_dirs)"""
HAM_OBTAIN = ("Download HAM10000 from the Harvard Dataverse (https://doi.org/10.7910/DVN/DBW86T: "
              "HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, HAM10000_metadata) and unzip into "
              "DATA_DIR/ham10000/.")

# ------------------------------------------------------------------------------------------- ISIC 2018

ISIC_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # the ground-truth CSV's column order
ISIC_LAYOUT = """\
  isic2018/
    ISIC2018_Task3_Training_GroundTruth.csv     columns image, MEL, NV, BCC, AKIEC, BKL, DF, VASC (one-hot)
    ISIC2018_Task3_Training_Input/<image>.jpg
    ISIC2018_Task3_Training_LesionGroupings.csv  (optional: image, lesion_id; needed by split=grouped)
    ISIC2018_Task3_Validation_GroundTruth.csv + ISIC2018_Task3_Validation_Input/  (optional)
    ISIC2018_Task3_Test_GroundTruth.csv + ISIC2018_Task3_Test_Input/              (needed by split=official)
  (each CSV may also sit in the folder its zip creates, e.g. ISIC2018_Task3_Training_GroundTruth/)"""
ISIC_OBTAIN = ("Download ISIC 2018 Task 3 from https://challenge.isic-archive.com/data/#2018 (Training, "
               "Validation and Test Input and GroundTruth zips) and unzip them into DATA_DIR/isic2018/.")

# -------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")
CHEXPERT_CLASSES = ("No Finding", "Pleural Effusion")  # label 0 = option negative, 1 = option positive
CHEXPERT_LAYOUT = """\
  chexpert/
    CheXpert-v1.0-small/       (or CheXpert-v1.0/)
      train.csv                columns Path, Sex, Age, Frontal/Lateral, AP/PA, the 14 findings (1, 0, -1, blank)
      valid.csv
      train/patient00001/study1/view1_frontal.jpg ...
      valid/patient64541/study1/view1_frontal.jpg ..."""
CHEXPERT_OBTAIN = ("Request CheXpert from Stanford (https://stanfordmlgroup.github.io/competitions/chexpert/ or "
                   "https://aimi.stanford.edu/datasets/chexpert-chest-x-rays) and unzip CheXpert-v1.0-small "
                   "(or CheXpert-v1.0) into DATA_DIR/chexpert/.")

# ----------------------------------------------------------------------------------------- bone marrow

BONE_MARROW_CLASSES = ("ABE", "ART", "BAS", "BLA", "EBO", "EOS", "FGC", "HAC", "KSC", "LYI", "LYT", "MMZ", "MON",
                       "MYB", "NGB", "NGS", "NIF", "OTH", "PEB", "PLM", "PMO")
BONE_MARROW_NAMES = {
    "ABE": "abnormal eosinophil", "ART": "artefact", "BAS": "basophil", "BLA": "blast", "EBO": "erythroblast",
    "EOS": "eosinophil", "FGC": "faggot cell", "HAC": "hairy cell", "KSC": "smudge cell",
    "LYI": "immature lymphocyte", "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MON": "monocyte",
    "MYB": "myelocyte", "NGB": "band neutrophil", "NGS": "segmented neutrophil", "NIF": "not identifiable",
    "OTH": "other cell", "PEB": "proerythroblast", "PLM": "plasma cell", "PMO": "promyelocyte",
}
BONE_MARROW_LAYOUT = """\
  bone-marrow/
    BM_cytomorphology_data/    (optional level)
      ABE/<image>.jpg  or  ABE/0001-1000/ABE_00001.jpg   (nested folders allowed)
      ART/ ... PMO/            one folder per class abbreviation"""
BONE_MARROW_OBTAIN = ("Download 'Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer' from The Cancer Imaging "
                      "Archive (https://doi.org/10.7937/TCIA.AXH3-T579) and unzip it into DATA_DIR/bone-marrow/.")

# ----------------------------------------------------------------------------------------- imagefolder

IMAGEFOLDER_LAYOUT = """\
  <root>/<class>/<image>       any depth below <class>; classes in alphabetical order
  or <root>/train|val|test/<class>/<image>   (split=official uses these)"""
IMAGEFOLDER_OBTAIN = ("Point option root (--set imagefolder.root=PATH) or DATA_DIR/imagefolder/ at a folder "
                      "with one sub-folder of images per class.")


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="aptos",
        description="APTOS 2019 Blindness Detection: fundus photographs, diabetic-retinopathy grade 0-4",
        load=f"{IMPL}:load_aptos",
        classes=APTOS_CLASSES,
        modality="Fundus photography",
        channels=3,
        source="Karthik, Maggie, Sohier Dane: APTOS 2019 Blindness Detection, Kaggle (2019), "
               "https://kaggle.com/competitions/aptos2019-blindness-detection",
        license="Kaggle competition rules (non-commercial research use)",
        obtain=f"{APTOS_OBTAIN} Layout:\n{APTOS_LAYOUT}",
        protocols=("iois", "diffmic"),
        options=AptosOptions,
        profiles=PROFILES,
    ))
    register(DatasetSpec(
        name="ham10000",
        description="HAM10000 dermatoscopic images, 7 dx classes (akiec, bcc, bkl, df, mel, nv, vasc)",
        load=f"{IMPL}:load_ham10000",
        classes=HAM_CLASSES,
        modality="Dermatoscopy",
        channels=3,
        source="Tschandl, Rosendahl, Kittler: The HAM10000 dataset, Scientific Data 5, 180161 (2018), "
               "doi:10.1038/sdata.2018.161",
        license="CC BY-NC 4.0",
        obtain=f"{HAM_OBTAIN} Layout:\n{HAM_LAYOUT}",
        protocols=("grouped", "iois", "diffmic"),
        options=HAM10000Options,
        profiles=PROFILES,
    ))
    register(DatasetSpec(
        name="isic2018",
        description="ISIC 2018 Task 3: dermatoscopic images, 7 classes in the CSV's order (MEL first)",
        load=f"{IMPL}:load_isic2018",
        classes=ISIC_CLASSES,
        modality="Dermatoscopy",
        channels=3,
        source="Codella et al.: Skin Lesion Analysis Toward Melanoma Detection 2018, arXiv:1902.03368; "
               "Tschandl et al., Scientific Data 5, 180161 (2018)",
        license="CC BY-NC 4.0",
        obtain=f"{ISIC_OBTAIN} Layout:\n{ISIC_LAYOUT}",
        protocols=("official", "diffmic", "iois", "grouped"),
        options=ISIC2018Options,
        profiles=PROFILES,
    ))
    register(DatasetSpec(
        name="chexpert",
        description="CheXpert chest X-rays, binary task (default: Pleural Effusion vs No Finding, frontal, "
                    "study1; Favero et al.)",
        load=f"{IMPL}:load_chexpert",
        classes=CHEXPERT_CLASSES,
        modality="Chest X-ray",
        channels=1,
        source="Irvin et al.: CheXpert, AAAI 2019, arXiv:1901.07031",
        license="Stanford University CheXpert Dataset Research Use Agreement (non-commercial)",
        obtain=f"{CHEXPERT_OBTAIN} Layout:\n{CHEXPERT_LAYOUT}",
        protocols=("official", "grouped", "iois", "diffmic"),
        options=CheXpertOptions,
        profiles=PROFILES,
    ))
    register(DatasetSpec(
        name="bone-marrow",
        description="Bone-marrow cytology (Matek et al.), 21 cell classes by abbreviation (ABE ... PMO)",
        load=f"{IMPL}:load_bone_marrow",
        classes=BONE_MARROW_CLASSES,
        modality="Bone-marrow smear microscopy",
        channels=3,
        source="Matek et al.: Highly accurate differentiation of bone marrow cell morphologies using deep neural "
               "networks on a large image data set, Blood 138(20), 1917-1927 (2021); TCIA doi:10.7937/TCIA.AXH3-T579",
        license="CC BY 4.0",
        obtain=f"{BONE_MARROW_OBTAIN} Layout:\n{BONE_MARROW_LAYOUT}",
        protocols=("iois", "diffmic"),
        options=FolderOptions,
        profiles=PROFILES,
    ))
    register(DatasetSpec(
        name="imagefolder",
        description="Any root/<class>/<image> tree (classes = sub-folders, alphabetical)",
        load=f"{IMPL}:load_imagefolder",
        classes=(),
        modality="any",
        channels=3,
        source="your own data",
        license="yours",
        obtain=f"{IMAGEFOLDER_OBTAIN} Layout:\n{IMAGEFOLDER_LAYOUT}",
        protocols=("iois", "diffmic", "official"),
        options=ImageFolderOptions,
        profiles=PROFILES,
    ))
