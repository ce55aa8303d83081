"""Losses for class imbalance (imports torch): focal, class-balanced focal, LDAM with deferred re-weighting.

Pure functions, each as its paper (and its authors' code) defines it:

- ``focal_loss`` (Lin et al., ICCV 2017), softmax form for one label per image:
  FL = -w_y (1 - p_y)^gamma log p_y, averaged over the batch (gamma = 0 and no weights: cross-entropy).
- ``effective_number_weights`` (Cui et al., CVPR 2019, Eq. 2-3): w_c = (1 - beta) / (1 - beta^n_c),
  normalised so that sum_c w_c = C (the number of classes), as in the authors' code.
- ``ldam_margins`` (Cao et al., NeurIPS 2019, Eq. 13): Delta_c = C / n_c^(1/4), with C chosen so the
  largest margin is ``max_margin`` (0.5 in the paper's experiments).
- ``ldam_loss``: cross-entropy on s * (z - Delta_y e_y), i.e. the true class's logit lowered by its
  margin, with scale s = 30 as in the authors' code, applied here to the classifier's raw logits (the
  authors' CIFAR code also L2-normalises the last layer; this harness keeps the plain linear head of
  every other baseline). With class weights it is the weighted mean, as ``F.cross_entropy``.
- Deferred re-weighting (DRW): plain LDAM until ``drw_epoch``, then LDAM with the effective-number
  weights (beta = 0.9999); the authors' schedule switches at epoch 160 of 200, so the default is 80%.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import HarnessError


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise HarnessError(f"class(es) {missing} have no training image; class-count based losses need "
                           "at least one image per class")
    return counts


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of -w_y (1 - p_y)^gamma log p_y (softmax probabilities)."""
    if gamma < 0:
        raise HarnessError(f"focal loss: gamma must be >= 0; found {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p if gamma else -log_p
    if weight is not None:
        loss = loss * weight.to(loss.device, loss.dtype)[targets]
    return loss.mean()


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
    """Cross-entropy of s * (z - Delta_y on the true class), optionally class-weighted."""
    logits = logits.float()
    margins = margins.to(logits.device, logits.dtype)
    shifted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * margins[targets].view(-1, 1)
    w = weight.to(logits.device, logits.dtype) if weight is not None else None
    return F.cross_entropy(scale * shifted, targets, weight=w)


def drw_start(epochs: int, drw_epoch: int) -> int:
    """The epoch (0-based) from which DRW weights apply: ``drw_epoch``, or 80% of ``epochs`` when < 0."""
    return drw_epoch if drw_epoch >= 0 else int(round(0.8 * epochs))


# ------------------------------------------------------------------------------------------- methods


def fit_focal(data, config, ctx):
    from plugins.baselines.model import fit

    return fit(data, config, ctx, loss_fn=lambda z, y, epoch: focal_loss(z, y, config.gamma))


def fit_cb_focal(data, config, ctx):
    from plugins.baselines.model import fit

    counts = class_counts(data.train.labels, data.num_classes)
    weight = torch.tensor(effective_number_weights(counts, config.beta), dtype=torch.float32)
    return fit(data, config, ctx, loss_fn=lambda z, y, epoch: focal_loss(z, y, config.gamma, weight))


def fit_ldam_drw(data, config, ctx):
    from plugins.baselines.model import fit

    counts = class_counts(data.train.labels, data.num_classes)
    margins = torch.tensor(ldam_margins(counts, config.max_margin), dtype=torch.float32)
    weight = torch.tensor(effective_number_weights(counts, config.beta), dtype=torch.float32)
    start = drw_start(config.epochs, config.drw_epoch)

    def loss_fn(z, y, epoch):
        return ldam_loss(z, y, margins, config.scale, weight if epoch >= start else None)

    return fit(data, config, ctx, loss_fn=loss_fn)
