"""The baselines' models and losses (imports torch), each read next to its paper.

Backbones (``build_backbone``): any timm name; the families the papers compare against are adapted to
small inputs (their defaults are for 224 px):

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

Heads: the plain linear head of the backbone, or Cao et al.'s cosine head (``CosineHead``, for LDAM).

Losses for class imbalance, pure functions:

- ``focal_loss`` (Lin et al., ICCV 2017), softmax form for one label per image:
  FL = -w_y (1 - p_y)^gamma log p_y, averaged over the batch (gamma = 0 and no weights: cross-entropy).
- ``sigmoid_focal_loss`` (Lin et al. Eq. 5; Cui et al., CVPR 2019, Eq. 8 and the authors' ``CB_loss``):
  every class is a binary problem, p_t = sigmoid(z_c) for the true class and 1 - sigmoid(z_c) for the
  others; FL = sum_c -w_y (1 - p_t)^gamma log p_t, summed over classes and divided by the batch size.
- ``effective_number_weights`` (Cui et al. Eq. 2-3): w_c = (1 - beta) / (1 - beta^n_c), normalised so that
  sum_c w_c = C (the number of classes), as in the authors' code.
- ``ldam_margins`` (Cao et al., NeurIPS 2019, Eq. 13): Delta_c = C / n_c^(1/4), with C chosen so the
  largest margin is ``max_margin`` (0.5 in the paper's experiments).
- ``ldam_loss`` (Cao et al. Eq. 10 with the normalised head of their code): on the cosine head's logits
  s cos(theta_j), cross-entropy of s (cos(theta_j) - Delta_y [j = y]), i.e. the true class's cosine
  lowered by its margin, scale s = 30. With class weights it is the weighted mean, as ``F.cross_entropy``.
- Deferred re-weighting (DRW, Cao et al. Sec. 3.3): plain LDAM until ``drw_epoch``, then LDAM with the
  effective-number weights (beta = 0.9999); the authors' schedule switches at epoch 160 of 200, so the
  default is 80% of the epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.toolkit import backbones

# --------------------------------------------------------------------------------------- backbones


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


# ------------------------------------------------------------------------------------------- heads


class CosineHead(nn.Module):
    """Cao et al.'s normalised linear layer: logits_j = s * <x / |x|, w_j / |w_j|> = s cos(theta_j), no bias.

    The features and each class's weight vector are L2-normalised, so a logit depends only on the angle
    between them; ``scale`` is s (30 in the authors' code). Weights start uniform in [-1, 1], as theirs.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class WithHead(nn.Module):
    """A timm backbone without its classifier (``reset_classifier(0)``: pooled features) and a new head."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def with_cosine_head(model: nn.Module, num_classes: int, scale: float) -> nn.Module:
    """``model`` (a timm model, possibly inside :class:`Resize`) with its linear classifier replaced by a
    :class:`CosineHead` on its pooled features."""
    net = model.model if isinstance(model, Resize) else model
    if not hasattr(net, "reset_classifier") or not hasattr(net, "num_features"):
        raise HarnessError(f"a cosine head needs a timm model (reset_classifier, num_features); "
                           f"found {type(net).__name__}")
    net.reset_classifier(0)
    head = CosineHead(net.num_features, num_classes, scale)
    return WithHead(model, head)


def set_prior_bias(model: nn.Module, prior: float) -> None:
    """Initialise the classifier's bias to -log((1 - pi) / pi) (Lin et al. Sec. 4.1; Cui et al. Sec. 5 use
    pi = 0.1 for the sigmoid losses), so no class starts with a large sigmoid loss."""
    net = model.model if isinstance(model, Resize) else model
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise HarnessError(f"bias_prior needs a linear classifier with a bias; found {type(head).__name__}")
    with torch.no_grad():
        head.bias.fill_(-math.log((1 - prior) / prior))


# ------------------------------------------------------------------------------------------ losses


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise HarnessError(f"class(es) {missing} have no training image; class-count based losses need "
                           "at least one image per class")
    return counts


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax focal loss: mean over the batch of -w_y (1 - p_y)^gamma log p_y."""
    if gamma < 0:
        raise HarnessError(f"focal loss: gamma must be >= 0; found {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p if gamma else -log_p
    if weight is not None:
        loss = loss * weight.to(loss.device, loss.dtype)[targets]
    return loss.mean()


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid focal loss, one binary problem per class (Cui et al.'s ``CB_loss`` with ``loss_type="focal"``):
    sum over images and classes of w_y (1 - p_t)^gamma * BCE(z_c, [c = y]), divided by the batch size."""
    if gamma < 0:
        raise HarnessError(f"focal loss: gamma must be >= 0; found {gamma}")
    logits = logits.float()
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")  # -log p_t
    # (1 - p_t)^gamma = exp(-gamma * (y z + log(1 + e^-z))) (Cui et al.'s numerically stable modulator)
    modulator = torch.exp(-gamma * (onehot * logits + F.softplus(-logits))) if gamma else 1.0
    loss = modulator * bce
    if weight is not None:
        loss = loss * weight.to(logits.device, logits.dtype)[targets].view(-1, 1)
    return loss.sum() / len(targets)


def effective_number_weights(counts, beta: float = 0.9999) -> np.ndarray:
    """Cui et al.'s class-balanced weights (1 - beta) / (1 - beta^n_c), normalised to sum to C."""
    counts = np.asarray(counts, dtype=np.float64)
    if not 0 <= beta < 1:
        raise HarnessError(f"class-balanced weights: beta must be in [0, 1); found {beta}")
    if (counts <= 0).any():
        raise HarnessError(f"class-balanced weights: every class count must be positive; found {counts.tolist()}")
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)


def ldam_margins(counts, max_margin: float = 0.5) -> np.ndarray:
    """Cao et al.'s margins Delta_c ∝ n_c^(-1/4), scaled so the largest is ``max_margin``."""
    counts = np.asarray(counts, dtype=np.float64)
    if (counts <= 0).any():
        raise HarnessError(f"LDAM margins: every class count must be positive; found {counts.tolist()}")
    margins = counts ** -0.25
    return margins * (max_margin / margins.max())


def ldam_loss(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float = 30.0,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``logits`` (= s cos(theta), the cosine head's output) with the true class lowered by
    s * Delta_y, i.e. of s (cos(theta_j) - Delta_y [j = y]); optionally class-weighted."""
    logits = logits.float()
    margins = margins.to(logits.device, logits.dtype)
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    w = weight.to(logits.device, logits.dtype) if weight is not None else None
    return F.cross_entropy(logits - scale * onehot * margins[targets].view(-1, 1), targets, weight=w)


def drw_start(epochs: int, drw_epoch: int) -> int:
    """The epoch (0-based) from which DRW weights apply: ``drw_epoch``, or 80% of ``epochs`` when < 0."""
    return drw_epoch if drw_epoch >= 0 else int(round(0.8 * epochs))


class NormalisedSigmoid(nn.Module):
    """Probabilities of a model trained with per-class sigmoids: sigmoid(z_c) / sum_j sigmoid(z_j) (the same
    argmax as the sigmoids, which is how Cui et al. evaluate)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(F.logsigmoid(self.model(x)), dim=1)  # = sigmoid / sum of sigmoids, in log space
