"""``bone-marrow``: bone-marrow cytology (Matek et al., TCIA), 21 cell classes by abbreviation.

Layout: one folder per class abbreviation (ABE, ART, BAS, BLA, EBO, EOS, FGC, HAC, KSC, LYI, LYT, MMZ, MON,
MYB, NGB, NGS, NIF, OTH, PEB, PLM, PMO: that order is the label order), images at any depth below it,
optionally under ``BM_cytomorphology_data/``. Image ids are paths relative to that folder
(``ABE/0001-1000/ABE_00001.jpg``). Directory links are not followed (each is named in a warning).

Option ``classes``: ``"all"`` (default, 21 classes), ``"improve14"`` (IMPROVE's downstream task, below) or a
list of abbreviations (kept in the order above); ``max_per_class`` caps each class (171k images in all). A
class without images is a warning. Protocols ``iois`` (default) and ``diffmic``.

``improve14``: IMPROVE (Shandilya et al. 2024) generates 16 bone-marrow classes (its Table 1) and trains its
downstream classifier on 14 of them, ART (artefact) and NIF (not identifiable) dropped (methods brief section 4).
The paper names the 16 by figure only; we read them as the 16 largest classes of Matek et al. (every class with
at least 409 images), which leaves out the five smallest, ABE (8), KSC (42), FGC (47), LYI (65) and OTH (294);
those could not give IMPROVE's 100 training and 50 test images per class either (OTH, "other cell", is no cell
type). The 14 are BAS, BLA, EBO, EOS, HAC, LYT, MMZ, MON, MYB, NGB, NGS, PEB, PLM, PMO. IMPROVE's data protocol
is then ``--set bone-marrow.classes=improve14 --set bone-marrow.train_per_class=100
--set bone-marrow.test_per_class=50 --set bone-marrow.size=64``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import DatasetSpec, hookimpl
from plugins.datasets.reader import PROFILES, FolderOptions, class_subset, folder_table, locate_root, prepare

NAME = "bone-marrow"
CLASSES = ("ABE", "ART", "BAS", "BLA", "EBO", "EOS", "FGC", "HAC", "KSC", "LYI", "LYT", "MMZ", "MON",
           "MYB", "NGB", "NGS", "NIF", "OTH", "PEB", "PLM", "PMO")
NAMES = {
    "ABE": "abnormal eosinophil", "ART": "artefact", "BAS": "basophil", "BLA": "blast", "EBO": "erythroblast",
    "EOS": "eosinophil", "FGC": "faggot cell", "HAC": "hairy cell", "KSC": "smudge cell",
    "LYI": "immature lymphocyte", "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MON": "monocyte",
    "MYB": "myelocyte", "NGB": "band neutrophil", "NGS": "segmented neutrophil", "NIF": "not identifiable",
    "OTH": "other cell", "PEB": "proerythroblast", "PLM": "plasma cell", "PMO": "promyelocyte",
}
# Images per class in Matek et al. (2021), Table 1 of the data descriptor.
COUNTS = {"ABE": 8, "ART": 19630, "BAS": 441, "BLA": 14118, "EBO": 27395, "EOS": 5883, "FGC": 47, "HAC": 409,
          "KSC": 42, "LYI": 65, "LYT": 26242, "MMZ": 3055, "MON": 4040, "MYB": 6557, "NGB": 9968, "NGS": 29424,
          "NIF": 3538, "OTH": 294, "PEB": 2740, "PLM": 7629, "PMO": 8928}
IMPROVE16 = tuple(c for c in CLASSES if COUNTS[c] >= 409)  # IMPROVE's Table 1 (our reading: see the docstring)
IMPROVE14 = tuple(c for c in IMPROVE16 if c not in ("ART", "NIF"))  # its downstream task
NAMED = {"improve14": IMPROVE14}
PROTOCOLS = ("iois", "diffmic")
LAYOUT = """\
  bone-marrow/
    BM_cytomorphology_data/    (optional level)
      ABE/<image>.jpg  or  ABE/0001-1000/ABE_00001.jpg   (nested folders allowed)
      ART/ ... PMO/            one folder per class abbreviation"""
OBTAIN = ("Download 'Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer' from The Cancer Imaging "
          "Archive (https://doi.org/10.7937/TCIA.AXH3-T579) and unzip it into DATA_DIR/bone-marrow/.")


@dataclass(frozen=True)
class BoneMarrowOptions(FolderOptions):
    classes: tuple[str, ...] | str = "all"  # "all" | "improve14" | a list of abbreviations


def load(request):
    opt = request.options
    root = locate_root(request.data_dir, NAME, CLASSES, LAYOUT, OBTAIN, subdirs=("BM_cytomorphology_data",))
    classes = class_subset(NAME, CLASSES, opt.classes, NAMED)
    dirs = {c: [root / c] for c in classes if (root / c).is_dir()}
    table = folder_table(NAME, root, dirs, classes, opt.max_per_class, f"{root}/<class>/")
    return prepare(request, table, 3, PROTOCOLS)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="Bone-marrow cytology (Matek et al.), 21 cell classes by abbreviation (ABE ... PMO); "
                    "classes=improve14: IMPROVE's 14",
        load=load,
        classes=CLASSES,
        modality="Bone-marrow smear microscopy",
        channels=3,
        source="Matek et al.: Highly accurate differentiation of bone marrow cell morphologies using deep neural "
               "networks on a large image data set, Blood 138(20), 1917-1927 (2021); TCIA doi:10.7937/TCIA.AXH3-T579",
        license="CC BY 4.0",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=PROTOCOLS,
        options=BoneMarrowOptions,
        profiles=PROFILES,
    ))
