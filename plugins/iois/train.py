"""IOIS, the training side: the cached generator, Algorithm 1 around the shared loop, the artefacts.

``fit`` (every variant):

1. ``generator_for``: the frozen generator from the harness cache, or trained on the training split only
   (``train_generator``: the shared loop with the Eq. 2 loss, an EMA, no selection) and stored there.
2. The classifier (``harness.toolkit.backbones.create``) trains in the shared loop
   (``harness.toolkit.training.train_loop``: cross-entropy, selection on validation Macro-F1). An
   :class:`OnlineSynthesis` supplies each epoch's synthetic images through ``extra_batches`` (the loop merges
   them with the real images for that epoch only) and, through ``on_epoch_end``, measures the per-class
   training accuracy that drives the next allocation.
3. ``iois-offline`` first trains a classifier on the real images (``pretrain_epochs``), samples one pool of K
   images guided by it, and trains a fresh classifier on the real images + that fixed pool.

Artefacts: ``synthetic_epoch_<E>.png`` (one row per class of that epoch's synthetic images, for the first, a
middle and the last epoch that had any; ``synthetic_pool.png`` for the offline pool), ``allocation.csv`` (per
epoch and class: the images allocated and the class's training accuracy at the end of the epoch),
``allocation.svg`` (both as curves) and ``synthesis.json`` (the generator's record, K, the timings).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from html import escape

import numpy as np
import torch
import torch.nn.functional as F

from harness import HarnessError, Predictor
from harness.contract.specs import Split
from harness.toolkit.cache import ArtefactCache, cache_key, cache_root, split_hash
from harness.toolkit.training_config import TrainConfig
from plugins.iois.model import (
    GENERATOR_FIELDS,
    GENERATOR_VERSION,
    GuidanceView,
    GuidedSampler,
    aas_allocation,
    build_generator,
    denoising_loss,
    equal_allocation,
    generator_size,
    make_schedule,
    per_class_accuracy,
)

CACHE_FOLDER = "iois-generators"


def synthetic_count(config, n_train: int) -> int:
    """K: ``synthetic_per_epoch``, or ``k_fraction`` of the training split (rounded)."""
    return int(config.synthetic_per_epoch or round(config.k_fraction * n_train))


# ------------------------------------------------------------------------------------------ generator


@dataclasses.dataclass(frozen=True)
class TrainOnly:
    """What the generator's loop receives: the training split and an empty validation split, nothing else."""

    train: Split
    val: Split


def generator_key(data, config) -> tuple[str, dict]:
    """The cache key of the generator (and its payload): the dataset, a hash of its training split, the split
    protocol, the size, the generator settings and seed, the generator code's version."""
    payload = {
        "dataset": data.name, "train": split_hash(data.train), "protocol": data.protocol, "size": data.size,
        "channels": data.channels, "classes": data.num_classes, "version": GENERATOR_VERSION,
        "generator": {name: getattr(config, name) for name in GENERATOR_FIELDS},
    }
    return cache_key(payload), payload


def train_generator(train: Split, num_classes: int, config, ctx) -> tuple[dict, dict]:
    """Eq. 2 on ``train`` (the training split, nothing else) with the shared loop and an EMA; returns the EMA
    weights (the frozen generator) and a record of the training (steps, final loss, seconds)."""
    from harness.toolkit import training
    from harness.toolkit.nn.ema import EMA

    size = generator_size(config, int(train.images.shape[1]))
    channels = int(train.images.shape[-1])
    torch.manual_seed(config.gen_seed)
    net = build_generator(config, channels, num_classes, int(train.images.shape[1])).to(ctx.device)
    schedule = make_schedule(config)
    noise = torch.Generator().manual_seed(config.gen_seed)
    loop_cfg = TrainConfig(epochs=1, steps=config.gen_steps, min_epochs=1, batch_size=config.gen_batch_size,
                           optimizer="adam", lr=config.gen_lr, weight_decay=0.0, schedule="constant",
                           hflip=config.gen_hflip, vflip=False, rotation=0.0, crop_scale=0.0)
    budget = training.epochs_for(loop_cfg, len(train))
    # The EMA copies the weights for the first fifth of the steps and averages after: from the first step on,
    # a short (cpu) budget's average would keep a visible share of the untrained network.
    ema = EMA(net, decay=config.gen_ema_decay, start_step=budget.steps // 5)
    every = max(1, budget.epochs // 20)  # about 20 records of the generator's training in the learning curve

    def report(**values):
        if values.get("epoch", 0) % every == 0 or values.get("epoch") == budget.epochs:
            ctx.report(**values)

    gen_ctx = dataclasses.replace(ctx, seed=config.gen_seed, reporter=report)
    empty = Split(np.zeros((0, *train.images.shape[1:]), np.uint8), np.zeros(0, np.int64))

    def loss(x, y, epoch):
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
        return denoising_loss(net, x, y if config.conditional else None, schedule, noise, config.gen_prediction)

    started = time.perf_counter()
    _, history = training.train_loop(gen_ctx, loop_cfg, model=net, data=TrainOnly(train, empty),
                                     mean=(0.5,), std=(0.5,), loss=loss, ema=ema, stage="generator")  # [-1, 1]
    seconds = time.perf_counter() - started
    record = {"steps": budget.steps, "epochs": budget.epochs, "seconds": seconds,
              "final_loss": history.records[-1].get("loss") if history.records else None}
    return {k: v.detach().cpu() for k, v in ema.state_dict().items()}, record


def generator_for(data, config, ctx):
    """The frozen generator for these data and settings: from the cache, or trained and stored. Notes the key,
    the training time and whether it was cached in the trial's result."""
    key, payload = generator_key(data, config)
    cache = ArtefactCache(cache_root(ctx) / CACHE_FOLDER)

    def build():
        state, record = train_generator(data.train, data.num_classes, config, ctx)
        return {"state": state, "record": record, "payload": json.loads(json.dumps(payload, default=str))}

    stored, cached = cache.get_or_build(key, build)
    net = build_generator(config, data.channels, data.num_classes, data.size)
    net.load_state_dict(stored["state"])
    record = stored["record"]
    ctx.note(generator_key=key, generator_train_seconds=round(float(record["seconds"]), 2),
             generator_cached=cached, generator_steps=int(record["steps"]))
    return net.to(ctx.device).eval(), {**record, "key": key, "cached": cached}


# ------------------------------------------------------------------------------- Algorithm 1, per epoch


class OnlineSynthesis:
    """Algorithm 1's steps around the shared loop, for one classifier.

    ``extra_batches(epoch)`` -> this epoch's synthetic (uint8 NCHW, labels): AAS (``adaptive``) or equal counts,
    sampled by ``sampler`` guided by ``model`` as it is now; or the fixed ``pool``; or nothing (the paper's
    order, first epoch). ``on_epoch_end(epoch, model)`` measures acc_c on the real + this epoch's synthetic
    images with validation transforms and keeps it for the next allocation.
    """

    def __init__(self, *, sampler: GuidedSampler, model, data, config, k: int, mean, std, device: str,
                 seed: int, adaptive: bool, pool: tuple[torch.Tensor, torch.Tensor] | None = None):
        from harness.toolkit.training import to_uint8_tensor

        self.sampler, self.model, self.config, self.k = sampler, model, config, k
        self.mean, self.std, self.device, self.seed, self.adaptive = mean, std, device, seed, adaptive
        self.num_classes = data.num_classes
        self.real_x = to_uint8_tensor(data.train.images)
        self.real_y = torch.from_numpy(np.asarray(data.train.labels, dtype=np.int64))
        self.present = np.bincount(self.real_y.numpy(), minlength=self.num_classes) > 0
        self.accuracy = np.full(self.num_classes, 0.5)  # the code's start: a uniform first allocation
        self.guide = GuidanceView(model, mean, std, normalise=config.guidance_normalise)
        self.pool, self.current = pool, None
        self.log: list[dict] = []  # per epoch: allocation, accuracy, seconds
        self.grids: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # epoch -> that epoch's synthetic images
        self._pending: dict = {}

    def allocation(self) -> np.ndarray:
        if self.adaptive:
            return aas_allocation(self.accuracy, self.k, self.present)
        return equal_allocation(self.num_classes, self.k, self.present)

    def synthesise(self, allocation: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(self.num_classes).repeat_interleave(torch.from_numpy(allocation))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
        return self.sampler.sample(labels, self.guide, generator), labels

    def extra_batches(self, epoch: int):
        started = time.perf_counter()
        if self.pool is not None:
            self.current, allocation = self.pool, np.bincount(self.pool[1].numpy(), minlength=self.num_classes)
        elif epoch == 0 and self.config.epoch_order == "paper":  # Algorithm 1: the first epoch is real-only
            self.current, allocation = None, np.zeros(self.num_classes, np.int64)
        else:
            allocation = self.allocation()
            self.current = self.synthesise(allocation, epoch)
        self._pending = {"allocation": allocation, "allocated_from": self.accuracy.copy(),
                         "gen_seconds": 0.0 if self.pool is not None else time.perf_counter() - started}
        if self.current is not None and len(self.current[1]):
            self.grids[epoch] = self.current
        return self.current

    def on_epoch_end(self, epoch: int, model) -> dict[str, float]:
        from harness.toolkit.training import predict

        started = time.perf_counter()
        x, y = self.real_x, self.real_y
        if self.current is not None and len(self.current[1]):
            x, y = torch.cat([x, self.current[0]]), torch.cat([y, self.current[1]])
        probs = predict(model, x, self.mean, self.std, self.device)
        accuracy = per_class_accuracy(y.numpy(), probs.argmax(1), self.num_classes)
        self.accuracy = np.where(np.isnan(accuracy), self.accuracy, accuracy)
        entry = {"epoch": epoch + 1, **self._pending, "accuracy": accuracy,
                 "acc_seconds": time.perf_counter() - started}
        self.log.append(entry)
        return {"synthetic": int(entry["allocation"].sum()), "gen_seconds": entry["gen_seconds"],
                "acc_seconds": entry["acc_seconds"], "train_acc_min": float(np.nanmin(accuracy)),
                "train_acc_mean": float(np.nanmean(accuracy))}


# ---------------------------------------------------------------------------------------- artefacts


def save_class_grid(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int, path,
                    pad: int = 2, min_tile: int = 48):
    """A PNG with one row per class (class order) of up to ``per_class`` of ``images`` (uint8 NCHW); a class with
    fewer images leaves its row's remaining tiles white."""
    from PIL import Image

    n, channels, size, _ = images.shape
    scale = max(1, math.ceil(min_tile / size))
    tile = size * scale
    grid = np.full((num_classes * (tile + pad) + pad, per_class * (tile + pad) + pad, channels), 255, np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy().repeat(scale, axis=1).repeat(scale, axis=2)
    labels = labels.numpy()
    for c in range(num_classes):
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            top, left = pad + c * (tile + pad), pad + j * (tile + pad)
            grid[top : top + tile, left : left + tile] = arr[i]
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
    return path


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def allocation_svg(log: list[dict], classes) -> str:
    """Two panels over epochs, one line per class: the images allocated, and the training accuracy."""
    width, height, margin = 300, 200, 40
    epochs = [e["epoch"] for e in log]
    panels = [("images allocated", [e["allocation"].astype(float) for e in log], None),
              ("training accuracy (real + synthetic)", [e["accuracy"] for e in log], (0.0, 1.0))]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width + 3 * margin}" '
             f'height="{height + 2 * margin + 16 * math.ceil(len(classes) / 4)}" font-family="sans-serif" '
             'font-size="11">']
    for p, (title, rows, bounds) in enumerate(panels):
        values = np.array(rows, dtype=float)  # (epochs, classes)
        lo, hi = bounds or (0.0, max(1.0, float(np.nanmax(values)) if values.size else 1.0))
        x0 = margin + p * (width + margin)
        xs = x0 + (np.array(epochs, float) - epochs[0]) / max(1, epochs[-1] - epochs[0]) * width
        ys = margin + height - (values - lo) / max(hi - lo, 1e-9) * height
        parts.append(f'<text x="{x0}" y="{margin - 10}">{escape(title)}</text>')
        parts.append(f'<rect x="{x0}" y="{margin}" width="{width}" height="{height}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0 - 4}" y="{margin + 4}" text-anchor="end">{hi:g}</text>'
                     f'<text x="{x0 - 4}" y="{margin + height}" text-anchor="end">{lo:g}</text>'
                     f'<text x="{x0}" y="{margin + height + 14}">epoch {epochs[0]}</text>'
                     f'<text x="{x0 + width}" y="{margin + height + 14}" text-anchor="end">{epochs[-1]}</text>')
        for c in range(values.shape[1] if values.ndim == 2 else 0):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys[:, c]) if np.isfinite(y))
            parts.append(f'<polyline fill="none" stroke="{PALETTE[c % len(PALETTE)]}" stroke-width="1.5" '
                         f'points="{points}"/>')
    for c, name in enumerate(classes):
        x, y = margin + (c % 4) * 150, height + 2 * margin + 16 * (c // 4)
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{PALETTE[c % len(PALETTE)]}"/>'
                     f'<text x="{x + 14}" y="{y}">{escape(str(name))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_artefacts(synthesis: OnlineSynthesis, classes, config, folder, extra: dict) -> None:
    import csv

    log = synthesis.log
    with open(folder / "allocation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "class", "allocated", "train_accuracy", "accuracy_allocated_from"])
        for entry in log:
            for c, name in enumerate(classes):
                acc = entry["accuracy"][c]
                writer.writerow([entry["epoch"], name, int(entry["allocation"][c]),
                                 "" if np.isnan(acc) else f"{acc:.4f}", f"{entry['allocated_from'][c]:.4f}"])
    if log:
        (folder / "allocation.svg").write_text(allocation_svg(log, classes))
    if synthesis.pool is not None:
        save_class_grid(*synthesis.pool, len(classes), config.grid_per_class, folder / "synthetic_pool.png")
    else:
        epochs = sorted(synthesis.grids)
        for epoch in sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]} if epochs else ()):
            save_class_grid(*synthesis.grids[epoch], len(classes), config.grid_per_class,
                            folder / f"synthetic_epoch_{epoch + 1:03d}.png")
    summary = {**extra, "epochs": [{"epoch": e["epoch"], "allocation": e["allocation"].tolist(),
                                    "train_accuracy": [None if np.isnan(a) else float(a) for a in e["accuracy"]],
                                    "gen_seconds": e["gen_seconds"], "acc_seconds": e["acc_seconds"]} for e in log]}
    (folder / "synthesis.json").write_text(json.dumps(summary, indent=1, default=str))


# ---------------------------------------------------------------------------------------------- fit


def _classifier(config, data):
    from harness.toolkit import backbones

    return backbones.create(config.backbone, num_classes=data.num_classes, in_chans=data.channels,
                            image_size=data.size, pretrained=config.pretrained)


def _train_classifier(ctx, config, net, data, mean, std, *, synthesis: OnlineSynthesis | None = None,
                      stage: str | None = None):
    from harness.toolkit import training

    probs = training.Softmax(net)
    model, history = training.train_loop(
        ctx, config, model=net, data=data, mean=mean, std=std,
        loss=lambda x, y, epoch: F.cross_entropy(net(x), y), evaluate=lambda: probs,
        extra_batches=synthesis.extra_batches if synthesis else None,
        on_epoch_end=synthesis.on_epoch_end if synthesis else None, stage=stage)
    return model, history


def fit(data, config, ctx) -> Predictor:
    from harness.toolkit.training import Softmax, normalisation

    if config.variant not in ("offline", "ois", "full"):
        raise HarnessError(f"IOIS variant must be offline, ois or full; found {config.variant!r}")
    torch.manual_seed(ctx.seed)
    k = synthetic_count(config, len(data.train))
    generator, gen_record = generator_for(data, config, ctx)
    sampler = GuidedSampler(generator, make_schedule(config), size=generator_size(config, data.size),
                            channels=data.channels, out_size=data.size, steps=config.sample_steps,
                            guidance=config.guidance, scale=config.guidance_scale, conditional=config.conditional,
                            prediction=config.gen_prediction, batch_size=config.sample_batch, device=ctx.device)
    torch.manual_seed(ctx.seed)
    net = _classifier(config, data)
    mean, std = normalisation(data.channels, net.pretrained_loaded)
    extra: dict = {"variant": config.variant, "K": k, "generator": gen_record}
    common = dict(sampler=sampler, data=data, config=config, k=k, mean=mean, std=std, device=ctx.device,
                  seed=ctx.seed)

    pool = None
    if config.variant == "offline":
        pre = _classifier(config, data).model
        pre_cfg = dataclasses.replace(config, epochs=config.pretrain_epochs or config.epochs)
        pre, pre_history = _train_classifier(ctx, pre_cfg, pre, data, mean, std, stage="pretrain")
        started = time.perf_counter()
        pool_source = OnlineSynthesis(model=pre, adaptive=False, **common)
        pool = pool_source.synthesise(pool_source.allocation(), epoch=-1)
        extra.update(pool_seconds=time.perf_counter() - started, pretrain_best_val=pre_history.best_score)
        ctx.note(pretrain_val_score=pre_history.best_score)

    synthesis = OnlineSynthesis(model=net.model, adaptive=config.variant == "full", pool=pool, **common)
    model, history = _train_classifier(ctx, config, net.model, data, mean, std, synthesis=synthesis)

    gen_seconds = sum(e["gen_seconds"] for e in synthesis.log) + extra.get("pool_seconds", 0.0)
    epoch_seconds = sum(r.get("seconds", 0.0) for r in history.records)
    images = sum(int(e["allocation"].sum()) for e in synthesis.log) if pool is None else len(pool[1])
    extra.update(generation_seconds=gen_seconds, classifier_epoch_seconds=epoch_seconds,
                 synthetic_images=images, best_epoch=history.best_epoch)
    ctx.note(synthetic_per_epoch=k, generation_seconds=round(gen_seconds, 2),
             training_seconds=round(epoch_seconds - sum(e["gen_seconds"] for e in synthesis.log), 2),
             guided_images_per_second=round(images / gen_seconds, 2) if gen_seconds > 0 else None)
    write_artefacts(synthesis, data.classes, config, ctx.artefacts_dir, extra)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)
