"""``imagefolder``: any ``root/<class>/<image>`` tree (classes = sub-folders, alphabetical).

Option ``root`` (absolute, or relative to DATA_DIR; default ``DATA_DIR/imagefolder`` or DATA_DIR); images at any
depth below a class folder; ``root/train|val|test/<class>/`` for ``split=official`` (val optional). Image ids
are paths relative to the root (``benign/deeper/0.png``). The walk does not follow directory links (a link
``akiec/loop -> ..`` would repeat the tree; each link skipped is named in a warning), and an image file that
links outside the root is refused. ``channels`` 1 or 3; ``classes`` (``"all"`` or a subset) and
``max_per_class`` as for ``bone-marrow``. Protocols ``iois`` (default), ``diffmic``, ``official``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness import DatasetSpec, HarnessError, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.data import require_data_dir
from plugins.datasets.reader import PROFILES, FolderOptions, class_subset, folder_table, prepare

NAME = "imagefolder"
LAYOUT = """\
  <root>/<class>/<image>       any depth below <class>; classes in alphabetical order
  or <root>/train|val|test/<class>/<image>   (split=official uses these)"""
OBTAIN = ("Point option root (--set imagefolder.root=PATH) or DATA_DIR/imagefolder/ at a folder "
          "with one sub-folder of images per class.")


@dataclass(frozen=True)
class ImageFolderOptions(FolderOptions):
    root: str = ""  # the root/<class>/<image> folder (absolute, or relative to DATA_DIR); "" = DATA_DIR/imagefolder
    channels: int = 3

    def __post_init__(self):
        super().__post_init__()
        check_range("channels", self.channels, choices=(1, 3))


def _root(request) -> Path:
    opt = request.options
    if opt.root:
        root = Path(opt.root).expanduser()
        if not root.is_absolute():
            root = require_data_dir(request.data_dir, NAME, OBTAIN) / root
        if not root.is_dir():
            raise HarnessError(f"dataset 'imagefolder': root {root} is not a folder. Expected layout:\n"
                               f"{LAYOUT}\n{OBTAIN}")
        return root
    base = require_data_dir(request.data_dir, NAME, OBTAIN)
    return base / NAME if (base / NAME).is_dir() else base


def load(request):
    opt = request.options
    root = _root(request)
    split_dirs = {"train": root / "train", "val": root / "val", "test": root / "test"}
    has_official = split_dirs["train"].is_dir() and split_dirs["test"].is_dir()
    if opt.split == "official" and not has_official:
        raise HarnessError(f"dataset 'imagefolder': split=official needs {root}/train/<class>/ and "
                           f"{root}/test/<class>/ (val/ optional); expected layout:\n{LAYOUT}")
    tops = [p for p in split_dirs.values() if p.is_dir()] if has_official else [root]
    names = sorted({d.name for top in tops for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not names:
        raise HarnessError(f"dataset 'imagefolder': no class folders in {root}. Expected layout:\n{LAYOUT}\n{OBTAIN}")
    classes = class_subset(NAME, tuple(names), opt.classes)
    dirs = {c: [top / c for top in tops if (top / c).is_dir()] for c in classes}
    official = {top / c: s for s, top in split_dirs.items() for c in classes} if has_official else None
    table = folder_table(NAME, root, dirs, classes, opt.max_per_class, f"{root}/<class>/", official)
    if not has_official:
        table = dataclasses.replace(table, official=None)
    protocols = ("iois", "diffmic", "official") if has_official else ("iois", "diffmic")
    return prepare(request, table, int(opt.channels), protocols)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name=NAME,
        description="Any root/<class>/<image> tree (classes = sub-folders, alphabetical)",
        load=load,
        classes=(),
        modality="any",
        channels=3,
        source="your own data",
        license="yours",
        obtain=f"{OBTAIN} Layout:\n{LAYOUT}",
        protocols=("iois", "diffmic", "official"),
        options=ImageFolderOptions,
        profiles=PROFILES,
    ))
