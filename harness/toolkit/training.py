"""Training-loop helpers shared by every method that trains a classifier on batches.

``train_classifier`` is the supervised loop: the experiment's sampler gives each epoch's indices,
batches are augmented on the fly (flips, rotation), the learning rate follows the configured schedule,
and after every epoch the model is scored on the *validation* split; the weights kept are the best on
validation Macro-F1. The test split is never seen here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.contract.specs import DataSplits, TrialContext
from harness.errors import HarnessError
from harness.toolkit.training_config import TrainConfig  # noqa: F401  (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalisation(channels: int, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if pretrained and channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


def to_uint8_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor, sharing memory where possible."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def normalise(batch_u8: torch.Tensor, mean, std) -> torch.Tensor:
    x = batch_u8.float().div_(255.0)
    c = x.shape[1]
    m = torch.tensor(mean if len(mean) == c else mean[:1] * c, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std if len(std) == c else std[:1] * c, device=x.device).view(1, c, 1, 1)
    return (x - m) / s


def augment(x: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips and rotation, per image, in one batched resampling."""
    n = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    if cfg.vflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(2), x)
    if cfg.rotation:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(cfg.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise HarnessError(f"optimizer must be one of sgd, adam, adamw; found {cfg.optimizer!r}")


def lr_factor(cfg, epoch_float: float) -> float:
    """Multiplier of the base learning rate at a (fractional) epoch."""
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return (epoch_float + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        progress = min(max((epoch_float - cfg.warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "multistep":
        return 0.1 ** sum(epoch_float >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return 1.0
    raise HarnessError(f"schedule must be cosine, multistep or constant; found {cfg.schedule!r}")


@torch.no_grad()
def predict_probs(model: nn.Module, images_u8: torch.Tensor, mean, std, device: str, batch_size: int = 256):
    model.eval()
    out = []
    for start in range(0, len(images_u8), batch_size):
        x = normalise(images_u8[start : start + batch_size].to(device), mean, std)
        out.append(torch.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(out).numpy()


def macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, probs.argmax(1), average="macro", labels=np.arange(probs.shape[1]),
                          zero_division=0))


def train_classifier(
    model: nn.Module,
    data: DataSplits,
    cfg,
    ctx: TrialContext,
    *,
    mean,
    std,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    extra_batches: Callable[[int], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train ``model`` (logits out) and return it with the best-on-validation weights, and the history.

    ``loss_fn(logits, targets, epoch)`` defaults to cross-entropy. ``extra_batches(epoch)`` may return
    extra (uint8 NCHW images, labels) to mix into this epoch's training set (for example synthetic
    images); ``on_epoch_end(epoch, model)`` runs after each epoch's validation.
    """
    device = ctx.device
    model.to(device)
    loss_fn = loss_fn or (lambda logits, y, epoch: F.cross_entropy(logits, y))
    train_x = to_uint8_tensor(data.train.images)
    train_y = torch.from_numpy(data.train.labels.astype(np.int64))
    val_x = to_uint8_tensor(data.val.images)
    val_y = data.val.labels.astype(np.int64)
    sampler = ctx.make_sampler(data.train.labels)
    rng = np.random.default_rng(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    optimizer = make_optimizer(model.parameters(), cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    best_score, best_state, history = -1.0, copy.deepcopy(model.state_dict()), []
    for epoch in range(cfg.epochs):
        model.train()
        epoch_x, epoch_y = train_x, train_y
        order = torch.from_numpy(np.asarray(sampler.indices(epoch, cfg.epochs, rng), dtype=np.int64))
        extra = extra_batches(epoch) if extra_batches else None
        if extra is not None and len(extra[1]):
            epoch_x = torch.cat([train_x, extra[0]])
            epoch_y = torch.cat([train_y, extra[1]])
            extra_order = torch.arange(len(train_y), len(epoch_y))
            order = order[torch.randperm(len(order), generator=generator)]
            order = torch.cat([order, extra_order])[torch.randperm(len(order) + len(extra_order), generator=generator)]
        steps = max(1, math.ceil(len(order) / cfg.batch_size))
        total_loss, seen = 0.0, 0
        for step in range(steps):
            factor = lr_factor(cfg, epoch + step / steps)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(idx) < 2 and steps > 1:
                continue  # a batch of one breaks batch norm
            x = normalise(epoch_x[idx].to(device), mean, std)
            x = augment(x, cfg, generator)
            y = epoch_y[idx].to(device)
            loss = loss_fn(model(x), y, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        record = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            probs = predict_probs(model, val_x, mean, std, device)
            score = macro_f1(val_y, probs)
            record.update(val_macro_f1=score, val_accuracy=float((probs.argmax(1) == val_y).mean()))
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(model.state_dict())
        history.append(record)
        ctx.report(**record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    model.load_state_dict(best_state)
    model.eval()
    return model, history


class Softmax(nn.Module):
    """Wraps a logits model so the predictor returns probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)
