"""Backbone baselines of the papers' tables: ``resnet50``, ``vit``, ``swin``, ``pvt`` (timm, cross-entropy).

Each trains with the shared supervised loop (``harness.toolkit.training.train_classifier``: the experiment's
sampler, flips and rotation, best checkpoint on validation Macro-F1). How each architecture is adapted
to 28-64 px inputs (ViT patch 4, Swin patch 2 / window 4 with the input resized to 32 px at 28 px,
PVT-v2 stem stride 1 or 2) is described in ``plugins/baselines/model.py``. ``pretrained=true`` uses ImageNet
weights only if they are already in the local cache (never downloaded).

Profiles:
- ``smoke``: one short epoch, for tests.
- ``cpu``: about 40 s for a synthetic trial (500 images at 28 px) on 2 CPU cores, so fewer epochs for
  the heavier backbones; see benchmarks/README.md, "Baselines (issue 5)".
- ``paper``: ``resnet50`` has IOIS's setting (ImageNet ResNet-50, SGD lr 0.0125, momentum 0.9, weight
  decay 1e-4, batch 32, 200 epochs, lr x0.1 at 60/120/180, flips and 30 degree rotation); ``vit``,
  ``swin`` and ``pvt`` (the backbones of DiffMIC's PMG2000 table) have DiffMIC's: Adam at its
  classifier's lr 2e-4, batch 32, flips and 30 degree rotation; DiffMIC gives no schedule for its
  baselines, so 100 epochs with a cosine decay is this harness's choice. Both papers use 224 px
  images: image size is a dataset option, so pass ``--set dataset.size=224`` with ``--profile paper``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.toolkit.training_config import TrainConfig

FIT = "plugins.baselines.model:fit"

# IOIS (Table 1 setting): ImageNet ResNet-50, SGD, 0.1 * 32 / 256, x0.1 at 60/120/180, 200 epochs.
IOIS_PAPER = {"epochs": 200, "batch_size": 32, "optimizer": "sgd", "lr": 0.0125, "momentum": 0.9,
              "weight_decay": 1e-4, "schedule": "multistep", "milestones": (60, 120, 180), "rotation": 30.0,
              "pretrained": True}
# DiffMIC: Adam (its DCG classifier's lr 2e-4), batch 32, horizontal flip and rotation 30 (its ISIC setting;
# for APTOS it also flips vertically: --set vit.vflip=true).
DIFFMIC_PAPER = {"epochs": 100, "batch_size": 32, "optimizer": "adam", "lr": 2e-4, "weight_decay": 0.0,
                 "schedule": "cosine", "rotation": 30.0, "pretrained": True}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "batch_size": ("choice", [32, 64, 128]),
}


@dataclass(frozen=True)
class ResNet50Config(TrainConfig):
    backbone: str = "resnet50"  # any timm ResNet
    pretrained: bool = False  # ImageNet weights, only if already in the local cache


@dataclass(frozen=True)
class ViTConfig(TrainConfig):
    backbone: str = "vit_tiny_patch16_224"  # ViT-Tiny (Dosovitskiy et al. 2021; DeiT-Ti sizes)
    pretrained: bool = False
    patch_size: int = 0  # 0: 4 px at 64 px or less, else 16
    lr: float = 5e-4
    warmup_epochs: int = 1


@dataclass(frozen=True)
class SwinConfig(TrainConfig):
    backbone: str = "swin_tiny_patch4_window7_224"  # Swin-T (Liu et al. 2021)
    pretrained: bool = False
    patch_size: int = 0  # 0: 2 at 64 px or less, else 4
    window_size: int = 0  # 0: 4 below 224 px, else 7
    lr: float = 5e-4
    warmup_epochs: int = 1


@dataclass(frozen=True)
class PVTConfig(TrainConfig):
    backbone: str = "pvt_v2_b0"  # PVT-v2-b0 (Wang et al. 2022)
    pretrained: bool = False
    stem_stride: int = 0  # 0: 1 at 32 px or less, 2 at 64 px or less, else 4
    lr: float = 5e-4
    warmup_epochs: int = 1


METHODS = (
    ("resnet50", "ResNet-50 (timm) with cross-entropy; small-image stem at 64 px or less",
     "He et al. 2016; IOIS (MICCAI 2024) baseline setting", ResNet50Config,
     {"smoke": {"epochs": 1, "batch_size": 64}, "cpu": {"epochs": 2, "batch_size": 32, "lr": 2e-3},
      "paper": IOIS_PAPER}),
    ("vit", "ViT-Tiny (timm) with cross-entropy; 4 px patches at 64 px or less",
     "Dosovitskiy et al. 2021; baseline in DiffMIC (MICCAI 2023)", ViTConfig,
     {"smoke": {"epochs": 1, "batch_size": 64, "warmup_epochs": 0},
      "cpu": {"epochs": 6, "batch_size": 32, "lr": 1e-3}, "paper": DIFFMIC_PAPER}),
    ("swin", "Swin-T (timm) with cross-entropy; patch 2 / window 4 at 64 px or less (28 px resized to 32)",
     "Liu et al. 2021; baseline in DiffMIC (MICCAI 2023)", SwinConfig,
     {"smoke": {"epochs": 1, "batch_size": 64, "warmup_epochs": 0},
      "cpu": {"epochs": 4, "batch_size": 32, "lr": 5e-4}, "paper": DIFFMIC_PAPER}),
    ("pvt", "PVT-v2-b0 (timm) with cross-entropy; stem stride 1 at 32 px or less",
     "Wang et al. 2022; baseline in DiffMIC (MICCAI 2023)", PVTConfig,
     {"smoke": {"epochs": 1, "batch_size": 64, "warmup_epochs": 0},
      "cpu": {"epochs": 7, "batch_size": 32, "lr": 1e-3}, "paper": DIFFMIC_PAPER}),
)


@hookimpl
def register_methods(register):
    for name, description, paper, config, profiles in METHODS:
        register(MethodSpec(name=name, description=description, paper=paper, config=config, fit=FIT,
                            profiles=profiles, search_space=SEARCH_SPACE))
