"""MedMNIST v2 datasets from the official ``.npz`` files, each registered under its own name.

Files are looked for in ``DATA_DIR/<name>/<name>.npz`` or ``DATA_DIR/<name>.npz`` (MedMNIST+ files
``<name>_64.npz``, ``_128.npz``, ``_224.npz`` are used when the requested size matches; other sizes are
resized from the 28 px file once and cached). The splits are MedMNIST's official train / val / test.
Class names and licences are MedMNIST's metadata (``medmnist/info.py``). ChestMNIST is multi-label and
is not offered. The ``cpu`` profile trains on a fixed stratified subsample of at most 1,080 training images
(option ``max_train``; see ``CPU_MAX_TRAIN``); validation and test are always whole unless
``test_per_class`` asks for a fixed per-class draw (``train_per_class`` likewise, after ``max_train``).

Image ids are content hashes: the first 16 hex digits of the SHA-1 of each image's pixels as the file
stores them (so the same image has the same id at every ``size``). The prepared arrays are cached with
their ids and fingerprint; a truncated or corrupt file is an error naming it.

Citation: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification", Scientific Data 10, 41 (2023).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from harness import DatasetSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.data import SPLITS, PerClassOptions

CITATION = "Yang et al., MedMNIST v2, Scientific Data 10, 41 (2023)"
OBTAIN = ("Download {name}.npz from MedMNIST (https://zenodo.org/records/10519652, or `pip install medmnist` "
          "and medmnist.INFO) and put it in DATA_DIR/{name}/ or DATA_DIR/.")

ORGAN = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
         "lung-right", "pancreas", "spleen")

# name: (modality, channels, licence, classes)
INFO = {
    "pathmnist": ("Colon pathology", 3, "CC BY 4.0", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium")),
    "dermamnist": ("Dermatoscope", 3, "CC BY-NC 4.0", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions")),
    "octmnist": ("Retinal OCT", 1, "CC BY 4.0", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    "pneumoniamnist": ("Chest X-Ray", 1, "CC BY 4.0", ("normal", "pneumonia")),
    "retinamnist": ("Fundus Camera", 3, "CC BY 4.0", ("0", "1", "2", "3", "4")),
    "breastmnist": ("Breast Ultrasound", 1, "CC BY 4.0", ("malignant", "normal, benign")),
    "bloodmnist": ("Blood Cell Microscope", 3, "CC BY 4.0", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet")),
    "tissuemnist": ("Kidney Cortex Microscope", 1, "CC BY 4.0", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb")),
    "organamnist": ("Abdominal CT (axial)", 1, "CC BY 4.0", ORGAN),
    "organcmnist": ("Abdominal CT (coronal)", 1, "CC BY 4.0", ORGAN),
    "organsmnist": ("Abdominal CT (sagittal)", 1, "CC BY 4.0", ORGAN),
}

NATIVE_SIZES = (28, 64, 128, 224)

# Official training-split sizes (MedMNIST v2, Table 1). The `cpu` profile trains on at most CPU_MAX_TRAIN of
# them (a fixed stratified subsample, the same for every method and seed; val and test stay whole) so that a
# cpu trial costs about the same on every set: RetinaMNIST's 1,080 training images set the scale.
N_TRAIN = {"pathmnist": 89996, "dermamnist": 7007, "octmnist": 97477, "pneumoniamnist": 4708,
           "retinamnist": 1080, "breastmnist": 546, "bloodmnist": 11959, "tissuemnist": 165466,
           "organamnist": 34561, "organcmnist": 12975, "organsmnist": 13932}
CPU_MAX_TRAIN = 1080  # RetinaMNIST's whole training split
SUBSAMPLE_SEED = 0  # fixed: the subsample is part of the dataset, not of the trial's seed
CACHE_VERSION = 2


@dataclass(frozen=True)
class MedMNISTOptions(PerClassOptions):
    size: int = 28
    max_train: int | None = None  # None: the whole official training split

    def __post_init__(self):  # checked when the experiment is built, before any trial starts
        super().__post_init__()
        check_range("size", self.size, low=8)
        if self.max_train is not None and (isinstance(self.max_train, bool) or not isinstance(self.max_train, int)
                                           or self.max_train < 2):
            raise ValueError(f"max_train must be a whole number of at least 2 (or unset for the whole training "
                             f"split); found {self.max_train!r}")


def subsample_train(labels: np.ndarray, max_train: int) -> np.ndarray:
    """Indices of a stratified subsample of ``max_train`` training images (every class keeps its share,
    at least one image), drawn with a fixed seed so that every trial sees the same images."""
    from harness.toolkit.data import stratified_split

    keep, _ = stratified_split(labels, (max_train / len(labels), 1 - max_train / len(labels)), SUBSAMPLE_SEED)
    return keep


def _profiles(name: str) -> dict:
    if N_TRAIN[name] > CPU_MAX_TRAIN:
        return {"cpu": {"max_train": CPU_MAX_TRAIN}}
    return {}


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    return images[..., None] if images.ndim == 3 else images


def read_npz(path, name: str, obtain: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (uint8 NHWC images, int64 labels)}`` from a MedMNIST file, with a clear error for a file that
    is truncated, corrupt or not MedMNIST's."""
    from harness import HarnessError

    _, channels, _, classes = INFO[name]
    keys = ", ".join(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))
    try:
        with np.load(path) as npz:
            missing = [k for k in keys.split(", ") if k not in npz.files]
            if missing:
                raise HarnessError(f"{path} is not a MedMNIST file: expected arrays {keys}; missing "
                                   f"{', '.join(missing)} (found: {', '.join(npz.files) or 'none'}). {obtain}")
            arrays = {s: (_as_nhwc(npz[f"{s}_images"]), npz[f"{s}_labels"].reshape(-1).astype(np.int64))
                      for s in SPLITS}
    except HarnessError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, EOFError, zlib.error, ValueError (pickled data), OSError
        raise HarnessError(f"{path} cannot be read ({type(exc).__name__}: {exc}): the file is truncated or corrupt, "
                           f"or not a MedMNIST .npz (expected arrays {keys}). Delete it and download it again: "
                           f"{obtain}") from None
    for s, (images, labels) in arrays.items():
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != channels:
            raise HarnessError(f"{path}: {s}_images should be uint8 with {channels} channel(s); found "
                               f"{images.dtype} {images.shape}. {obtain}")
        if len(labels) != len(images):
            raise HarnessError(f"{path}: {s}_images holds {len(images)} images but {s}_labels {len(labels)} labels. "
                               f"{obtain}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise HarnessError(f"{path}: {s}_labels outside 0..{len(classes) - 1}. {obtain}")
    return arrays


def load(request, name: str):
    from harness import DataSplits, Split
    from harness.toolkit.data import (
        cache_key,
        cached_splits,
        content_ids,
        file_fingerprint,
        find_file,
        image_digests,
        resize,
        take_per_class,
    )

    size = int(request.options.size)
    max_train = request.options.max_train
    obtain = OBTAIN.format(name=name)
    candidates = ([f"{name}_{size}.npz"] if size in NATIVE_SIZES and size != 28 else []) + [f"{name}.npz"]
    path = find_file(request.data_dir, name, candidates, obtain)
    _, _, _, classes = INFO[name]

    def build():
        arrays = read_npz(path, name, obtain)
        taken: set[str] = set()  # ids: a hash of each image's pixels as the file stores them (any size)
        splits = {s: Split(resize(images, size), labels, content_ids(image_digests(images), taken))
                  for s, (images, labels) in arrays.items()}
        data = DataSplits(**splits, classes=classes, name=name, protocol="official")
        train = data.train
        if max_train is not None and max_train < len(train):
            keep = subsample_train(train.labels, max_train)
            data = replace(data, train=Split(train.images[keep], train.labels[keep], train.ids[keep]),
                           protocol=f"official, training split subsampled to {len(keep)} of {len(train)} "
                                    f"(stratified, fixed seed {SUBSAMPLE_SEED})")
        data, messages = take_per_class(data, request.options)
        return replace(data, warnings=tuple(messages))

    options = {f.name: getattr(request.options, f.name) for f in fields(request.options)}
    key = cache_key("medmnist", CACHE_VERSION, file_fingerprint([path]), options)
    return cached_splits(request.cache_dir, name, key, build)


def _loader(name: str):
    def load_named(request):
        return load(request, name)

    return load_named


@hookimpl
def register_datasets(register):
    for name, (modality, channels, licence, classes) in INFO.items():
        register(DatasetSpec(
            name=name,
            description=f"MedMNIST v2 {name} ({modality}, {len(classes)} classes), official splits",
            load=_loader(name),
            classes=classes,
            modality=modality,
            channels=channels,
            source=CITATION,
            license=licence,
            obtain=OBTAIN.format(name=name),
            protocols=("official",),
            options=MedMNISTOptions,
            profiles=_profiles(name),
        ))
