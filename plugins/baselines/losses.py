"""Loss baselines for class imbalance: ``focal``, ``cb-focal``, ``ldam-drw``.

Each is the ``resnet`` classifier (ResNet-18 by default; ``backbone`` takes any timm name, including the
ViT / Swin / PVT-v2 adaptations of ``plugins/baselines/model.py``) trained with the shared supervised loop and
its paper's loss instead of cross-entropy. The losses are pure functions in ``plugins/baselines/loss_fns.py``:

- ``focal``: Lin et al., ICCV 2017, gamma = 2 (softmax form, no alpha).
- ``cb-focal``: Cui et al., CVPR 2019, focal loss weighted per class by the inverse effective number
  of samples, (1 - beta) / (1 - beta^n_c) with beta = 0.9999, normalised to sum to the class count.
- ``ldam-drw``: Cao et al., NeurIPS 2019: label-distribution-aware margins Delta_c ∝ n_c^(-1/4) (largest
  0.5), scale s = 30, and deferred re-weighting: the class-balanced weights (beta = 0.9999) switch on at
  ``drw_epoch`` (default -1: 80% of the epochs, the authors' 160 of 200).

Profiles: ``smoke`` (one short epoch), ``cpu`` (about 40 s per synthetic trial on 2 cores), ``paper``
(IOIS's setting, whose Table 1 reports Focal and CB-Focal: ImageNet ResNet-50, SGD lr 0.0125, momentum
0.9, weight decay 1e-4, batch 32, 200 epochs, lr x0.1 at 60/120/180; pass ``--set dataset.size=224``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.toolkit.training_config import TrainConfig


@dataclass(frozen=True)
class FocalConfig(TrainConfig):
    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # ImageNet weights, only if already in the local cache
    gamma: float = 2.0  # focusing parameter (Lin et al.)


@dataclass(frozen=True)
class CBFocalConfig(FocalConfig):
    beta: float = 0.9999  # effective-number hyper-parameter (Cui et al.)


@dataclass(frozen=True)
class LDAMDRWConfig(TrainConfig):
    backbone: str = "resnet18"
    pretrained: bool = False
    max_margin: float = 0.5  # the largest class margin (Cao et al.)
    scale: float = 30.0  # s, the logit scale of the authors' code
    beta: float = 0.9999  # effective-number weights used after drw_epoch
    drw_epoch: int = -1  # 0-based epoch where re-weighting starts; -1: 80% of the epochs


IOIS_PAPER = {"backbone": "resnet50", "pretrained": True, "epochs": 200, "batch_size": 32, "optimizer": "sgd",
              "lr": 0.0125, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "multistep",
              "milestones": (60, 120, 180), "rotation": 30.0}
PROFILES = {
    "smoke": {"epochs": 1, "batch_size": 64},
    "cpu": {"epochs": 5, "batch_size": 32, "lr": 2e-3},
    "paper": IOIS_PAPER,
}
SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "batch_size": ("choice", [64, 128]),
}


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="focal", description="ResNet-18 with focal loss (gamma 2)",
        paper="Lin et al., Focal loss for dense object detection, ICCV 2017; baseline in IOIS (MICCAI 2024)",
        config=FocalConfig, fit="plugins.baselines.loss_fns:fit_focal", profiles=PROFILES,
        search_space={**SEARCH_SPACE, "gamma": ("uniform", 0.5, 3.0)},
    ))
    register(MethodSpec(
        name="cb-focal", description="ResNet-18 with class-balanced focal loss (effective number, beta 0.9999)",
        paper="Cui et al., Class-balanced loss based on effective number of samples, CVPR 2019; "
              "baseline in IOIS (MICCAI 2024)",
        config=CBFocalConfig, fit="plugins.baselines.loss_fns:fit_cb_focal", profiles=PROFILES,
        search_space={**SEARCH_SPACE, "gamma": ("uniform", 0.5, 3.0), "beta": ("choice", [0.99, 0.999, 0.9999])},
    ))
    register(MethodSpec(
        name="ldam-drw", description="ResNet-18 with LDAM loss and deferred class-balanced re-weighting",
        paper="Cao et al., Learning imbalanced datasets with label-distribution-aware margin loss, NeurIPS 2019; "
              "baseline in DiffMIC (MICCAI 2023)",
        config=LDAMDRWConfig, fit="plugins.baselines.loss_fns:fit_ldam_drw", profiles=PROFILES,
        search_space={**SEARCH_SPACE, "max_margin": ("uniform", 0.2, 1.0), "scale": ("choice", [10.0, 30.0])},
    ))
