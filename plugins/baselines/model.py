"""Backbones of the baselines' tables, adapted to small inputs, and the shared ``fit`` (imports torch).

``build_backbone(name, ...)`` returns a logits model for any timm name; the families the papers compare
against get the adaptations below when the images are small (their defaults are for 224 px):

- ResNets (``resnet18``, ``resnet50``, ...): ``harness.toolkit.backbones.create`` gives them the CIFAR-style
  stem at 64 px or less (3x3 stride-1 first conv, no max-pool), as in MedMNIST v2's ResNet (28).
- ViT (``vit_*``): ``img_size`` is the data size and the patch is 4 px at 64 px or less (28 px -> 7x7
  tokens), 16 px above; a size the patch does not divide is padded inside the patch embedding
  (timm's ``dynamic_img_pad``). Pretrained patch and position embeddings are resampled by timm.
- Swin (``swin_*``): patch 2 and window 4 at 64 px or less, patch 4 and window 4 up to 223 px, patch 4
  and window 7 (the original) from 224 px. Every stage's token grid must be an integer and a multiple
  of the window (or no larger than it: timm then shrinks the window to the grid and stops shifting).
  The input is resized (bilinear) inside the model to the smallest size with that property, so
  28 px images are resized to 32 px (token grids 16, 8, 4, 2); 16, 32, 64 and 224 px are used as they
  are. The resize is part of the predictor, so training, validation and test see the same model.
- PVT-v2 (``pvt_v2_*``): the overlapping 7x7 stem keeps its kernel (and any pretrained weights) but its
  stride becomes 1 at 32 px or less and 2 at 64 px or less (4 above, the original), so that every
  stage's spatial-reduction convolution (ratios 8, 4, 2, 1) still has a grid at least its size
  (28 px: grids 28, 14, 7, 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.toolkit import backbones


@dataclass
class Built:
    model: nn.Module
    pretrained_loaded: bool
    note: str = ""


class Resize(nn.Module):
    """Bilinear resize of the input to ``size`` x ``size`` before ``model``."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.model = model
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)


def vit_patch(image_size: int) -> int:
    return 4 if image_size <= 64 else 16


def swin_geometry(image_size: int) -> tuple[int, int]:
    """(patch, window) for Swin at this input size."""
    if image_size <= 64:
        return 2, 4
    return (4, 4) if image_size < 224 else (4, 7)


def swin_input_size(image_size: int, patch: int, window: int, stages: int = 4) -> int:
    """Smallest size >= image_size whose token grid at every stage is whole and fits the window."""
    step = patch * 2 ** (stages - 1)
    size = max(step, math.ceil(image_size / step) * step)
    while True:
        grids = [size // (patch * 2**i) for i in range(stages)]
        if all(g % window == 0 or g <= window for g in grids):
            return size
        size += step


def pvt_stem_stride(image_size: int) -> int:
    if image_size <= 32:
        return 1
    return 2 if image_size <= 64 else 4


def family(name: str) -> str:
    for prefix in ("vit", "swin", "pvt_v2"):
        if name.startswith(prefix):
            return prefix
    return "other"


def build_backbone(name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False,
                   patch_size: int = 0, window_size: int = 0, stem_stride: int = 0) -> Built:
    """A logits model for ``name`` at ``image_size`` (0 for patch / window / stride = chosen from the size)."""
    kind = family(name)
    common = {"num_classes": num_classes, "in_chans": in_chans, "image_size": image_size, "pretrained": pretrained}
    if kind == "vit":
        patch = patch_size or vit_patch(image_size)
        net = backbones.create(name, **common, img_size=image_size, patch_size=patch,
                               dynamic_img_pad=image_size % patch != 0)
        return Built(net.model, net.pretrained_loaded, net.note)
    if kind == "swin":
        patch, window = swin_geometry(image_size)
        patch, window = patch_size or patch, window_size or window
        size = swin_input_size(image_size, patch, window)
        net = backbones.create(name, **{**common, "image_size": size}, img_size=size, patch_size=patch,
                               window_size=window)
        model = net.model if size == image_size else Resize(net.model, size)
        return Built(model, net.pretrained_loaded, net.note)
    if kind == "pvt_v2":
        net = backbones.create(name, **common)
        stride = stem_stride or pvt_stem_stride(image_size)
        proj = net.model.patch_embed.proj
        if not isinstance(proj, nn.Conv2d):
            raise HarnessError(f"{name}: expected a Conv2d stem (patch_embed.proj); found {type(proj).__name__}")
        proj.stride = (stride, stride)
        grid = math.ceil(image_size / stride)
        for i, stage in enumerate(net.model.stages):
            sr = getattr(stage.blocks[0].attn, "sr", None)
            ratio = sr.stride[0] if isinstance(sr, nn.Conv2d) else 1
            if grid < ratio:
                raise HarnessError(f"{name}: at {image_size} px with stem stride {stride}, stage {i + 1}'s grid "
                                   f"({grid}) is smaller than its spatial-reduction ratio ({ratio}); "
                                   "use a smaller stem_stride")
            grid = math.ceil(grid / 2)
        return Built(net.model, net.pretrained_loaded, net.note)
    if patch_size or window_size or stem_stride:
        raise HarnessError(f"{name}: patch_size, window_size and stem_stride apply to vit_*, swin_* and pvt_v2_* "
                           "backbones only")
    net = backbones.create(name, **common)
    return Built(net.model, net.pretrained_loaded, net.note)


def build_for(config, data) -> Built:
    """The backbone named by ``config.backbone`` for these data (optional keys read when present)."""
    return build_backbone(
        config.backbone, num_classes=data.num_classes, in_chans=data.channels, image_size=data.size,
        pretrained=config.pretrained, patch_size=getattr(config, "patch_size", 0),
        window_size=getattr(config, "window_size", 0), stem_stride=getattr(config, "stem_stride", 0),
    )


def fit(data, config, ctx, loss_fn=None):
    """Train ``config.backbone`` with ``harness.toolkit.training.train_classifier`` (cross-entropy by default)."""
    from harness import Predictor
    from harness.toolkit.training import Softmax, normalisation, train_classifier

    built = build_for(config, data)
    mean, std = normalisation(data.channels, built.pretrained_loaded)
    model, _ = train_classifier(built.model, data, config, ctx, mean=mean, std=std, loss_fn=loss_fn)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)
