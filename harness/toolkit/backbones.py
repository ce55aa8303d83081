"""Backbones through timm, adapted to small medical images, with optional cached ImageNet weights.

Pretrained weights are used only when they are already in the local cache (the Hugging Face hub cache
or torch's hub cache): the harness never downloads them and never requires them. When they are
missing, the model starts from random weights and a warning says so (``Backbone.pretrained_loaded``).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch.nn as nn

from harness.errors import HarnessError


@dataclass
class Backbone:
    model: nn.Module
    pretrained_loaded: bool
    note: str = ""


@contextmanager
def _offline():
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def small_image_stem(model: nn.Module, in_chans: int) -> nn.Module:
    """ResNet stem for inputs of 64 px or less: a 3x3 stride-1 first conv and no max-pool."""
    if not hasattr(model, "conv1") or not hasattr(model, "maxpool"):
        raise HarnessError(f"small_image_stem expects a timm ResNet; found {type(model).__name__}")
    out = model.conv1.out_channels if isinstance(model.conv1, nn.Conv2d) else 64
    model.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def create(name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False,
           **kwargs) -> Backbone:
    """A timm model; ResNets get the small-image stem at 64 px or less."""
    import timm

    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise HarnessError(f"unknown timm backbone {name!r}; see timm.list_models()")
    loaded, note = False, ""
    if pretrained:
        try:
            with _offline(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                                          **kwargs)
            loaded = True
        except Exception as exc:  # not in the local cache: go on without
            note = (f"pretrained weights for {name} are not in the local cache ({type(exc).__name__}); "
                    "training from random initialisation")
            warnings.warn(note, stacklevel=2)
    if not loaded:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if image_size <= 64 and name.startswith(("resnet", "resnext", "seresnet", "wide_resnet")):
        model = small_image_stem(model, in_chans)
    return Backbone(model, loaded, note)
