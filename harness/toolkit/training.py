"""The one training loop, and its helpers, shared by every method that trains.

``train_loop`` runs a budget of epochs (or of optimizer steps, turned into epochs with a minimum) over
the training split in the order the experiment's sampler gives, optionally merged with extra (synthetic)
images for the epoch. Each step is either the loop's own (``loss`` -> backward -> gradient clipping ->
optimizer step, learning rate from the configured schedule) or a method's own ``update`` (for
adversarial training, where two optimizers alternate). After each step an EMA may be updated and an
``on_step_end`` hook runs (DiffMIC's DCG step); after each epoch the module chosen for evaluation is
scored on the *validation* split with the registered metric plugins (``ctx.score``), the epoch is
reported (``ctx.report``: the trial's learning curve), and the best state on the selection metric is
kept. The test split is never seen here.

A method file keeps only its paper's stages and losses::

    model, history = train_loop(ctx, cfg, model=net, data=data, mean=mean, std=std,
                                loss=lambda x, y, epoch: F.cross_entropy(net(x), y))

``train_classifier`` is that call for a logits model with cross-entropy (or another loss on its logits).

Speed: batches reach the model in channels-last memory format (N, C, H, W indexed, NHWC in memory, as the
images are stored), after augmentation and with extra images too; on CPU oneDNN's convolutions then run
about 10% faster than on NCHW batches (ResNet-18 at 28 px, one thread; benchmarks/README.md).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.contract.specs import normalise, to_uint8_tensor
from harness.errors import HarnessError
from harness.toolkit.training_config import TrainConfig  # noqa: F401  (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["EpochBudget", "Softmax", "augment", "epochs_for", "lr_factor", "make_optimizer", "normalisation",
           "normalise", "predict", "to_uint8_tensor", "train_classifier", "train_loop"]


def normalisation(channels: int, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for pretrained 3-channel backbones, (0.5, 0.5) (images in [-1, 1]) otherwise."""
    if pretrained and channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


# ------------------------------------------------------------------------------------ augmentation


def augment(x: torch.Tensor, cfg, generator: torch.Generator, black: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image random flips, then one batched affine resampling for a random-resized crop (area in
    ``[crop_scale, 1]``, aspect ratio in [3/4, 4/3], resized back to the input size) and a rotation
    (uniform in ``[-rotation, rotation]`` degrees). Flips only when neither is set (no resampling).

    ``x`` is normalised, so ``rotation_padding="zeros"`` fills the uncovered corners with ``black``, the
    normalised value of a black pixel per channel (``-mean / std``; torchvision's ``RandomRotation`` on the
    unnormalised image, as DiffMIC's code does), not with 0, which would be the mean colour."""
    n = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    if cfg.vflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(2), x)
    crop = float(getattr(cfg, "crop_scale", 0.0) or 0.0)
    if not cfg.rotation and not crop:
        return x
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if crop:
        area = crop + (1.0 - crop) * torch.rand(n, generator=generator)
        log_ratio = (torch.rand(n, generator=generator) * 2 - 1) * math.log(4 / 3)
        w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # as fractions of the side
        h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = w, h, cx, cy
    if cfg.rotation:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(cfg.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (n, 2, 2)
        theta[:, :, :2] = theta[:, :, :2] @ rot
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    padding = getattr(cfg, "rotation_padding", "reflection")
    if padding == "zeros":
        if black is None:
            raise HarnessError("augment with rotation_padding='zeros' needs `black`, the normalised value of a black "
                               "pixel per channel (-mean / std); without it 0 would be the mean colour")
        black = black.to(x.device, x.dtype).view(1, -1, 1, 1)
        return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


# ------------------------------------------------------------------------------- optimizer, schedule


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise HarnessError(f"optimizer must be one of sgd, adam, adamw; found {cfg.optimizer!r}")


def lr_factor(cfg, epoch_float: float, epochs: int | None = None) -> float:
    """Multiplier of the base learning rate at a (fractional) epoch of ``epochs`` (default ``cfg.epochs``)."""
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return (epoch_float + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1e-9)
        progress = min(max((epoch_float - cfg.warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "multistep":
        return 0.1 ** sum(epoch_float >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return 1.0
    raise HarnessError(f"schedule must be cosine, multistep or constant; found {cfg.schedule!r}")


@dataclass(frozen=True)
class EpochBudget:
    epochs: int
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def epochs_for(cfg, n_train: int) -> EpochBudget:
    """The epoch budget of a config: ``cfg.epochs``, or, when ``cfg.steps`` > 0, enough epochs for that
    many optimizer steps on ``n_train`` images (at least ``cfg.min_epochs``), so that a small dataset gets
    as many optimizer steps as a large one."""
    if cfg.batch_size < 1:
        raise HarnessError(f"batch_size must be at least 1; found {cfg.batch_size}")
    if n_train < 1:
        raise HarnessError("the training split is empty: there is nothing to train on")
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    steps = int(getattr(cfg, "steps", 0) or 0)
    if steps > 0:
        return EpochBudget(max(int(getattr(cfg, "min_epochs", 1) or 1), math.ceil(steps / per_epoch)), per_epoch)
    if cfg.epochs < 1:
        raise HarnessError(f"epochs must be at least 1 (or set steps > 0); found {cfg.epochs}")
    return EpochBudget(int(cfg.epochs), per_epoch)


# ----------------------------------------------------------------------------------------- predict


def predict(module: nn.Module, images_u8: torch.Tensor, mean, std, device: str, batch_size: int = 256,
            key: str = "probs") -> np.ndarray:
    """``module`` on uint8 (N, C, H, W) images in batches, eval mode, no gradient: its output (or the
    ``key`` entry of a dict output) as a numpy array. The one batch-predict of the toolkit."""
    was_training = module.training
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images_u8), batch_size):
            y = module(normalise(images_u8[start : start + batch_size].to(device), mean, std))
            out.append((y[key] if isinstance(y, dict) else y).float().cpu())
    module.train(was_training)
    return torch.cat(out).numpy()


class Softmax(nn.Module):
    """Wraps a logits model so the predictor returns probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


# -------------------------------------------------------------------------------------------- loop


Loss = Callable[[torch.Tensor, torch.Tensor, int], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class History:
    """The per-epoch records of a loop (what ``ctx.report`` received) and the selection's outcome."""

    records: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    steps = max(1, math.ceil(len(order) / batch_size))
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        if len(idx) < 2 and steps > 1:
            continue  # a batch of one breaks batch norm
        yield idx


def train_loop(
    ctx,
    cfg,
    *,
    model: nn.Module,
    data,
    mean,
    std,
    loss: Loss | None = None,
    update: Callable[[torch.Tensor, torch.Tensor, float], dict[str, float | torch.Tensor]] | None = None,
    params=None,
    optimizer: torch.optim.Optimizer | None = None,
    evaluate: Callable[[], nn.Module] | None = None,
    select: str | None = None,
    ema=None,
    extra_batches: Callable[[int], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    on_step_end: Callable[[torch.Tensor, torch.Tensor], dict[str, float] | None] | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, float] | None] | None = None,
    state: Callable[[], dict] | None = None,
    load_state: Callable[[dict], None] | None = None,
    augment_images: bool = True,
    stage: str | None = None,
    epoch_offset: int = 0,
    sampler=None,
) -> tuple[nn.Module, History]:
    """Train ``model`` on ``data.train`` and return it with the kept state, and the history.

    - ``loss(x, y, epoch)``: the batch loss on normalised, augmented images ``x`` and labels ``y`` (a tensor,
      or ``(tensor, parts)`` with named numbers to report: floats, or 0-d tensors, which the loop averages on
      their device and reads once per epoch, so a GPU is not synchronised every step); the loop does backward, ``cfg.grad_clip`` (when the
      config has it), the optimizer step (``optimizer``, or ``make_optimizer(params or model.parameters())``)
      and the learning rate (``lr_factor`` per step).
    - ``update(x, y, epoch_float)``: instead of ``loss``, a method's own step (it owns its optimizers); returns
      the parts to report (floats or 0-d tensors, as above).
    - ``x`` is in channels-last memory format (see the module's docstring): reshape it, do not ``view`` it.
    - ``evaluate()``: the module whose ``"probs"`` (or output) on ``data.val`` is scored each ``cfg.eval_every``
      epochs with ``ctx.score`` (the registered metrics; reported as ``val_<metric>``). The state with the best
      ``select`` (default ``val_`` + the headline metric) is kept. Without ``evaluate`` nothing is selected:
      the last state is kept.
    - ``ema``: an :class:`harness.toolkit.nn.ema.EMA` updated after each step (evaluate it through ``evaluate``).
    - ``extra_batches(epoch)``: extra (uint8 NCHW images, labels) merged into this epoch only.
    - ``on_step_end(x, y)`` after each step; ``on_epoch_end(epoch, model)`` after each epoch's validation;
      both may return numbers to report.
    - ``state`` / ``load_state``: what selection snapshots and restores (default: ``model``'s state dict).
    - ``sampler``: the batch order (``.indices(epoch, num_epochs, rng)``); default the experiment's
      (``ctx.make_sampler``). A stage that must not follow the experiment's sampler (a GAN) passes its own.
    - ``stage`` / ``epoch_offset``: a name and an epoch offset for the records of a multi-stage method.
    """
    if (loss is None) == (update is None):
        raise HarnessError("train_loop needs exactly one of loss= or update=")
    device = ctx.device
    model.to(device)
    budget = epochs_for(cfg, len(data.train))
    train_x = to_uint8_tensor(data.train.images)
    train_y = torch.from_numpy(np.asarray(data.train.labels, dtype=np.int64))
    val_x = to_uint8_tensor(data.val.images) if evaluate is not None else None
    val_y = np.asarray(data.val.labels, dtype=np.int64) if evaluate is not None else None
    sampler = sampler if sampler is not None else ctx.make_sampler(data.train.labels)
    rng = np.random.default_rng(ctx.seed + epoch_offset)
    generator = torch.Generator().manual_seed(ctx.seed + epoch_offset)
    if loss is not None and optimizer is None:
        optimizer = make_optimizer(params if params is not None else model.parameters(), cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups] if optimizer is not None else []
    clip = float(getattr(cfg, "grad_clip", 0.0) or 0.0)
    snapshot = state or (lambda: copy.deepcopy(model.state_dict()))
    restore = load_state or model.load_state_dict
    select = select or f"val_{ctx.headline_metric}"
    history, best_state = History(), None
    black = normalise(torch.zeros(1, train_x.shape[1], 1, 1, dtype=torch.uint8), mean, std).view(-1).to(device)

    for epoch in range(budget.epochs):
        started = time.perf_counter()
        model.train()
        epoch_x, epoch_y = train_x, train_y
        order = torch.from_numpy(np.asarray(sampler.indices(epoch, budget.epochs, rng), dtype=np.int64))
        extra = extra_batches(epoch) if extra_batches is not None else None
        if extra is not None and len(extra[1]):
            epoch_x = torch.cat([train_x, extra[0]])
            epoch_y = torch.cat([train_y, torch.as_tensor(extra[1], dtype=torch.int64)])
            order = torch.cat([order, torch.arange(len(train_y), len(epoch_y))])
            order = order[torch.randperm(len(order), generator=generator)]
        steps = max(1, math.ceil(len(order) / cfg.batch_size))
        sums: dict[str, float | torch.Tensor] = {}
        seen = 0
        for step, idx in enumerate(_batches(order, cfg.batch_size)):
            progress = epoch + step / steps
            x = normalise(epoch_x[idx].to(device), mean, std)
            if augment_images:
                x = augment(x, cfg, generator, black)
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op for the stored images (see above)
            y = epoch_y[idx].to(device)
            if update is not None:
                parts = dict(update(x, y, progress) or {})
            else:
                factor = lr_factor(cfg, progress, budget.epochs)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                out = loss(x, y, epoch)
                value, parts = (out if isinstance(out, tuple) else (out, {}))
                parts = {"loss": value.detach(), **parts}
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                if clip:
                    nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
                optimizer.step()
            if ema is not None:
                ema.update(model, epoch * steps + step)
            if on_step_end is not None:
                parts.update(on_step_end(x, y) or {})
            for key, value in parts.items():  # tensors stay on the device: no synchronisation per step
                value = value.detach() if torch.is_tensor(value) else float(value)
                sums[key] = sums.get(key, 0.0) + value * len(idx)
            seen += len(idx)
        record: dict[str, Any] = {"epoch": epoch_offset + epoch + 1, **({"stage": stage} if stage else {}),
                                  **{k: float(v) / max(seen, 1) for k, v in sums.items()}}
        if optimizer is not None:
            record["lr"] = optimizer.param_groups[0]["lr"]
        if evaluate is not None and ((epoch + 1) % max(1, cfg.eval_every) == 0 or epoch + 1 == budget.epochs):
            probs = predict(evaluate(), val_x, mean, std, device)
            record.update({f"val_{name}": value for name, value in ctx.score(val_y, probs).items()})
            score = record.get(select)
            if score is None:
                raise HarnessError(f"selection metric {select!r} is not among the validation scores "
                                   f"({', '.join(k for k in record if k.startswith('val_'))})")
            if history.best_score is None or score > history.best_score:
                history.best_score, history.best_epoch, best_state = score, record["epoch"], snapshot()
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch, model) or {})
        record["seconds"] = time.perf_counter() - started
        history.records.append(record)
        ctx.report(**record)
    if best_state is not None:
        restore(best_state)
    model.eval()
    return model, history


def train_classifier(
    model: nn.Module,
    data,
    cfg,
    ctx,
    *,
    mean,
    std,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    extra_batches: Callable[[int], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, float] | None] | None = None,
    probs: Callable[[nn.Module], nn.Module] | None = None,
    stage: str | None = None,
    epoch_offset: int = 0,
) -> tuple[nn.Module, list[dict]]:
    """Train a logits model with ``loss_fn(logits, targets, epoch)`` (default cross-entropy), selecting on
    validation; returns the model with the kept weights and the per-epoch records. ``probs`` turns the logits
    model into the probabilities scored on validation (default :class:`Softmax`; the predictor should use
    the same)."""
    loss_fn = loss_fn or (lambda logits, y, epoch: F.cross_entropy(logits, y))
    probs_model = (probs or Softmax)(model)
    model, history = train_loop(ctx, cfg, model=model, data=data, mean=mean, std=std,
                                loss=lambda x, y, epoch: loss_fn(model(x), y, epoch),
                                evaluate=lambda: probs_model, extra_batches=extra_batches,
                                on_epoch_end=on_epoch_end, stage=stage, epoch_offset=epoch_offset)
    return model, history.records
