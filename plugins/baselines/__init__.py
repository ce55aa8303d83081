"""The baselines the papers compare against, as one method family (registration only: no torch here).

- Backbones with cross-entropy: ``resnet`` (ResNet-18; MedMNIST v2's ResNet-18 (28) baseline), ``resnet50``
  (IOIS's classifier), ``vit`` (ViT-Tiny), ``swin`` (Swin-T) and ``pvt`` (PVT-v2-b0), the transformers of
  DiffMIC's table, adapted to small images as ``model.py`` describes.
- Losses for class imbalance on ResNet-18 (``backbone`` takes any timm name): ``focal`` (Lin et al., ICCV
  2017, gamma 2, softmax form), ``cb-focal`` (Cui et al., CVPR 2019: focal loss weighted by the inverse
  effective number of samples, beta 0.9999, in the authors' sigmoid form with the last-layer bias at the
  prior pi = 0.1; ``form="softmax"`` for the softmax form) and ``ldam-drw`` (Cao et al., NeurIPS 2019: a
  cosine head with scale s = 30, margins Delta_c ∝ n_c^(-1/4) up to 0.5, and class-balanced weights from
  80% of the budget on).

Every one trains with the shared loop (``harness.toolkit.training``): the experiment's sampler, flips and
rotation (and a random-resized crop with ``crop_scale``), and the checkpoint with the best validation
Macro-F1.

Profiles:
- ``smoke``: seconds, for tests.
- ``cpu``: a budget in optimizer steps (``steps``; at least ``min_epochs`` epochs), so every dataset gets the
  same amount of training whatever its size (an epoch budget starves small training sets). ResNet-18 and
  the loss baselines share one budget, 108 steps of batch 128 (12 epochs of RetinaMNIST's 1,080
  images; about 7 minutes on one thread), so the rows of the IOIS table differ only in their loss or
  sampler. ResNet-50, ViT-Tiny, Swin-T and PVT-v2-b0 get three times the steps they had before (204, 612,
  408, 714 steps of batch 32: 6-21 epochs of RetinaMNIST, about 8-10 minutes of one thread each): at the
  old budgets (2-7 epochs) their training loss and validation Macro-F1 were still falling and rising, and
  the tripled budget raised each one's test Macro-F1 on RetinaMNIST (benchmarks/README.md, "Budget probe
  of the from-scratch backbones").
  On the built-in ``synthetic`` data (the default ``harness run``, whose whole run must stay short) the
  budgets are smaller: ``dataset_profiles`` below.
- ``paper``: the papers' settings (for a GPU, at ``--set dataset.size=224``): IOIS's for ``resnet50``,
  ``focal``, ``cb-focal``, ``ldam-drw`` (ImageNet ResNet-50, SGD lr 0.0125, momentum 0.9, weight decay 1e-4,
  batch 32, 200 epochs, lr x0.1 at 60/120/180, flips and 30 degree rotation); MedMNIST v2's for ``resnet``
  (Adam 1e-3, batch 128, 100 epochs, x0.1 at 50 and 75); DiffMIC's for ``vit``, ``swin``, ``pvt`` (Adam at
  its classifier's lr 2e-4, batch 32, flips and 30 degree rotation; DiffMIC gives no schedule for its
  baselines, so 100 epochs with a cosine decay is this harness's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig

# ------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class BaselineConfig(TrainConfig):
    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # ImageNet weights, only if already in the local cache


@dataclass(frozen=True)
class ResNet50Config(BaselineConfig):
    backbone: str = "resnet50"


@dataclass(frozen=True)
class ViTConfig(BaselineConfig):
    backbone: str = "vit_tiny_patch16_224"  # ViT-Tiny (Dosovitskiy et al. 2021; DeiT-Ti sizes)
    patch_size: int = 0  # 0: 4 px at 64 px or less, else 16
    lr: float = 5e-4
    warmup_epochs: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_range("patch_size", self.patch_size, low=0)


@dataclass(frozen=True)
class SwinConfig(BaselineConfig):
    backbone: str = "swin_tiny_patch4_window7_224"  # Swin-T (Liu et al. 2021)
    patch_size: int = 0  # 0: 2 at 64 px or less, else 4
    window_size: int = 0  # 0: 4 below 224 px, else 7
    lr: float = 5e-4
    warmup_epochs: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_range("patch_size", self.patch_size, low=0)
        check_range("window_size", self.window_size, low=0)


@dataclass(frozen=True)
class PVTConfig(BaselineConfig):
    backbone: str = "pvt_v2_b0"  # PVT-v2-b0 (Wang et al. 2022)
    stem_stride: int = 0  # 0: 1 at 32 px or less, 2 at 64 px or less, else 4
    lr: float = 5e-4
    warmup_epochs: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_range("stem_stride", self.stem_stride, low=0)


@dataclass(frozen=True)
class FocalConfig(BaselineConfig):
    gamma: float = 2.0  # focusing parameter (Lin et al.)
    form: str = "softmax"  # softmax: one softmax over the classes | sigmoid: one binary problem per class
    bias_prior: float = 0.1  # sigmoid form: last-layer bias -log((1 - pi) / pi) (Cui et al.); 0: untouched

    def __post_init__(self):
        super().__post_init__()
        check_range("gamma", self.gamma, low=0.0)
        check_range("form", self.form, choices=("softmax", "sigmoid"))
        check_range("bias_prior", self.bias_prior, low=0.0, high=0.999)


@dataclass(frozen=True)
class CBFocalConfig(FocalConfig):
    form: str = "sigmoid"  # Cui et al.'s class-balanced focal loss is sigmoid-based (their Eq. 8)
    beta: float = 0.9999  # effective-number hyper-parameter (Cui et al.)

    def __post_init__(self):
        super().__post_init__()
        check_range("beta", self.beta, low=0.0, high=0.999999)


@dataclass(frozen=True)
class LDAMDRWConfig(BaselineConfig):
    max_margin: float = 0.5  # the largest class margin (Cao et al.)
    scale: float = 30.0  # s: the cosine head's logits are s cos(theta) (the authors' code)
    beta: float = 0.9999  # effective-number weights used after drw_epoch
    drw_epoch: int = -1  # 0-based epoch where re-weighting starts; -1: 80% of the epochs

    def __post_init__(self):
        super().__post_init__()
        check_range("max_margin", self.max_margin, low=0.0, low_open=True)
        check_range("scale", self.scale, low=0.0, low_open=True)
        check_range("beta", self.beta, low=0.0, high=0.999999)
        check_range("drw_epoch", self.drw_epoch, low=-1)


# ------------------------------------------------------------------------------------------ profiles

SMOKE = {"epochs": 1, "batch_size": 64}
SMOKE_WARM = {**SMOKE, "warmup_epochs": 0}
# One cpu budget for ResNet-18 and the loss baselines (and gan-aug's classifier): 108 steps of batch 128
# (12 epochs of RetinaMNIST, the ResNet-18 budget before step budgets: about 7 minutes on one thread).
CPU_RESNET = {"steps": 108, "min_epochs": 2, "batch_size": 128, "lr": 2e-3}
# The default `harness run` (synthetic: 320 training images at 16 px) must stay short: 64 steps of batch 32
# there (6.4 epochs). Small batches learn far more from the same images at this size: 27 steps of batch 128
# left ResNet-18 near chance (validation Macro-F1 0.23), 108 of batch 32 reach 0.87 by the fifth epoch
# (benchmarks/README.md, "The default run").
SYNTHETIC_RESNET = {"steps": 64, "batch_size": 32}

IOIS_PAPER = {"backbone": "resnet50", "pretrained": True, "epochs": 200, "batch_size": 32, "optimizer": "sgd",
              "lr": 0.0125, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "multistep",
              "milestones": (60, 120, 180), "rotation": 30.0}
MEDMNIST_PAPER = {"epochs": 100, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "schedule": "multistep", "milestones": (50, 75)}
# DiffMIC: Adam (its DCG classifier's lr 2e-4), batch 32, horizontal flip and rotation 30 (its ISIC setting;
# for APTOS it also flips vertically: --set vit.vflip=true).
DIFFMIC_PAPER = {"epochs": 100, "batch_size": 32, "optimizer": "adam", "lr": 2e-4, "weight_decay": 0.0,
                 "schedule": "cosine", "rotation": 30.0, "pretrained": True}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "batch_size": ("choice", [32, 64, 128]),
}

FIT = "plugins.baselines.train:"

# name, description, paper, config, fit, cpu profile, synthetic cpu steps, paper profile, extra search space
METHODS = (
    ("resnet", "ResNet-18 (timm) with cross-entropy",
     "He et al. 2016; MedMNIST v2 ResNet-18 (28) baseline", BaselineConfig, "fit",
     CPU_RESNET, SYNTHETIC_RESNET, MEDMNIST_PAPER, {}),
    ("resnet50", "ResNet-50 (timm) with cross-entropy; small-image stem at 64 px or less",
     "He et al. 2016; IOIS (MICCAI 2024) baseline setting", ResNet50Config, "fit",
     {"steps": 204, "min_epochs": 2, "batch_size": 32, "lr": 2e-3}, {"steps": 40},
     {k: v for k, v in IOIS_PAPER.items() if k != "backbone"}, {}),
    ("vit", "ViT-Tiny (timm) with cross-entropy; 4 px patches at 64 px or less",
     "Dosovitskiy et al. 2021; baseline in DiffMIC (MICCAI 2023)", ViTConfig, "fit",
     {"steps": 612, "min_epochs": 2, "batch_size": 32, "lr": 1e-3}, {"steps": 60}, DIFFMIC_PAPER, {}),
    ("swin", "Swin-T (timm) with cross-entropy; patch 2 / window 4 at 64 px or less (28 px resized to 32)",
     "Liu et al. 2021; baseline in DiffMIC (MICCAI 2023)", SwinConfig, "fit",
     {"steps": 408, "min_epochs": 2, "batch_size": 32, "lr": 5e-4}, {"steps": 40}, DIFFMIC_PAPER, {}),
    ("pvt", "PVT-v2-b0 (timm) with cross-entropy; stem stride 1 at 32 px or less",
     "Wang et al. 2022; baseline in DiffMIC (MICCAI 2023)", PVTConfig, "fit",
     {"steps": 714, "min_epochs": 2, "batch_size": 32, "lr": 1e-3}, {"steps": 70}, DIFFMIC_PAPER, {}),
    ("focal", "ResNet-18 with focal loss (gamma 2)",
     "Lin et al., Focal loss for dense object detection, ICCV 2017; baseline in IOIS (MICCAI 2024)",
     FocalConfig, "fit_focal", CPU_RESNET, SYNTHETIC_RESNET, IOIS_PAPER, {"gamma": ("uniform", 0.5, 3.0)}),
    ("cb-focal", "ResNet-18 with class-balanced sigmoid focal loss (effective number, beta 0.9999)",
     "Cui et al., Class-balanced loss based on effective number of samples, CVPR 2019; "
     "baseline in IOIS (MICCAI 2024)", CBFocalConfig, "fit_cb_focal", CPU_RESNET, SYNTHETIC_RESNET, IOIS_PAPER,
     {"gamma": ("uniform", 0.5, 3.0), "beta": ("choice", [0.99, 0.999, 0.9999])}),
    ("ldam-drw", "ResNet-18 with a cosine head, LDAM loss and deferred class-balanced re-weighting",
     "Cao et al., Learning imbalanced datasets with label-distribution-aware margin loss, NeurIPS 2019; "
     "baseline in DiffMIC (MICCAI 2023)", LDAMDRWConfig, "fit_ldam_drw", CPU_RESNET, SYNTHETIC_RESNET, IOIS_PAPER,
     {"max_margin": ("uniform", 0.2, 1.0), "scale": ("choice", [10.0, 30.0])}),
)


@hookimpl
def register_methods(register):
    for name, description, paper, config, fit, cpu, synthetic, paper_profile, search in METHODS:
        smoke = SMOKE_WARM if config.warmup_epochs else SMOKE
        register(MethodSpec(
            name=name, description=description, paper=paper, config=config, fit=FIT + fit,
            profiles={"smoke": smoke, "cpu": cpu, "paper": paper_profile},
            dataset_profiles={"cpu": {"synthetic": synthetic}},
            search_space={**SEARCH_SPACE, **search},
        ))
