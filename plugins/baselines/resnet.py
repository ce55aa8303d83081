"""``resnet``: a timm ResNet-18 classifier trained with cross-entropy (the baseline every paper beats).

Small inputs (64 px or less) get the CIFAR-style stem (3x3 stride-1 first conv, no max-pool), as in
MedMNIST v2's ResNet-18 (28) baseline. Training: flips and rotation, AdamW with a cosine schedule, the
checkpoint kept is the best on validation Macro-F1 (never the test split).

Profiles: ``smoke`` (one short epoch, for tests), ``cpu`` (minutes on 28 px data on 2 cores),
``paper`` (MedMNIST v2: Adam 1e-3, batch 128, 100 epochs, lr x0.1 at 50 and 75).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.toolkit.training_config import TrainConfig


@dataclass(frozen=True)
class ResNetConfig(TrainConfig):
    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # ImageNet weights, only if already in the local cache


def fit(data, config: ResNetConfig, ctx):
    from harness import Predictor
    from harness.toolkit import backbones
    from harness.toolkit.training import Softmax, normalisation, train_classifier

    net = backbones.create(config.backbone, num_classes=data.num_classes, in_chans=data.channels,
                           image_size=data.size, pretrained=config.pretrained)
    mean, std = normalisation(data.channels, net.pretrained_loaded)
    model, _ = train_classifier(net.model, data, config, ctx, mean=mean, std=std)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)


PROFILES = {
    "smoke": {"epochs": 1, "batch_size": 64},
    "cpu": {"epochs": 12, "batch_size": 128, "lr": 2e-3},
    "paper": {"epochs": 100, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
              "schedule": "multistep", "milestones": (50, 75)},
}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "batch_size": ("choice", [64, 128]),
}


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="resnet",
        description="ResNet-18 (timm) with cross-entropy",
        paper="He et al. 2016; MedMNIST v2 ResNet-18 (28) baseline",
        config=ResNetConfig,
        fit=fit,
        profiles=PROFILES,
        search_space=SEARCH_SPACE,
    ))
