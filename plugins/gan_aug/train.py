"""Training ``gan-aug`` (imports torch): the top-up counts, the hinge-loss GAN on the shared loop, the
per-class sample grid, and ``fit``, which tops the minority classes up while ResNet-18 trains.
(The method and its settings: ``plugins/gan_aug/__init__.py``; the networks: ``model.py``.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError, Predictor, Split
from harness.toolkit import backbones
from harness.toolkit.training import Softmax, epochs_for, normalisation, train_classifier, train_loop
from harness.toolkit.training_config import TrainConfig
from plugins.gan_aug.model import Discriminator, Generator, diff_augment, standing_statistics


def topup_counts(labels: np.ndarray, num_classes: int, balance: float) -> np.ndarray:
    """Synthetic images per class so that every class reaches ``ceil(balance * majority count)``.

    A class absent from the training split gets none (the GAN has never seen it).

    >>> topup_counts(np.array([0, 0, 0, 0, 1, 2, 2]), 4, 1.0).tolist()
    [0, 3, 2, 0]
    """
    if balance < 0:
        raise HarnessError(f"gan-aug: balance must be >= 0 (a fraction of the majority count); found {balance}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    target = math.ceil(balance * counts.max() - 1e-9) if len(counts) else 0
    return np.where(counts > 0, np.maximum(target - counts, 0), 0).astype(np.int64)


class Shuffle:
    """Every training image once per epoch, in a random order (the GAN's batches, whatever the experiment's
    sampler: the generator learns the training distribution)."""

    def __init__(self, n: int):
        self.n = n

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.n)


# ------------------------------------------------------------------------------------ GAN training


def gan_schedule(config, n_train: int) -> TrainConfig:
    """The GAN stage's budget for the shared loop: ``gan_steps`` steps of ``gan_batch_size`` (whole epochs,
    so at least that many), no augmentation by the loop (DiffAugment is the discriminator's own)."""
    return TrainConfig(epochs=1, steps=config.gan_steps, min_epochs=1, batch_size=min(config.gan_batch_size, n_train),
                       hflip=False, vflip=False, rotation=0.0, crop_scale=0.0)


def train_gan(images: np.ndarray, labels: np.ndarray, num_classes: int, config, ctx) -> tuple[Generator, list[dict]]:
    """Train the conditional GAN on ``images`` uint8 (N, H, W, C) with ``labels``: the training split only.

    Hinge loss (Lim & Ye 2017; Miyato et al. 2018), one discriminator and one generator update per batch
    (the shared loop's ``update=`` step), Adam with the configured betas, DiffAugment on every
    discriminator input; generated images use the real batch's labels. Then the generator's standing
    statistics (see ``model.standing_statistics``). Returns the generator (eval mode) and the loop's
    per-epoch records (stage ``gan``).
    """
    ops = config.diffaugment_ops()
    n, size, _, channels = images.shape
    if n < 2:
        raise HarnessError(f"gan-aug: the GAN needs at least 2 training images; found {n}")
    torch.manual_seed(ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    G = Generator(num_classes=num_classes, channels=channels, size=size, latent_dim=config.latent_dim,
                  width=config.g_width, min_size=config.gan_min_size)
    D = Discriminator(num_classes=num_classes, channels=channels, size=size, width=config.d_width)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=(config.beta1, config.beta2))
    device = ctx.device

    def update(real: torch.Tensor, y: torch.Tensor, epoch_float: float) -> dict[str, torch.Tensor]:
        z = torch.randn(len(y), config.latent_dim, generator=gen).to(device)
        fake = G(z, y)
        d_real = D(diff_augment(real, ops, gen), y)
        d_fake = D(diff_augment(fake.detach(), ops, gen), y)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        loss_g = -D(diff_augment(fake, ops, gen), y).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": d_real.detach().mean(),
                "d_fake": d_fake.detach().mean()}

    train_only = SimpleNamespace(train=Split(images, np.asarray(labels, dtype=np.int64)))  # no val, no test
    # Real images in [-1, 1] like the generator's tanh output: (x / 255 - 0.5) / 0.5.
    _, history = train_loop(ctx, gan_schedule(config, n), model=nn.ModuleDict({"G": G, "D": D}), data=train_only,
                            mean=(0.5,), std=(0.5,), update=update, augment_images=False, sampler=Shuffle(n),
                            stage="gan")
    standing_statistics(G, torch.from_numpy(np.asarray(labels, dtype=np.int64)), batch_size=config.gan_batch_size,
                        batches=config.standing_batches, generator=gen)
    G.eval()
    return G, history.records


# ------------------------------------------------------------------------------------- sample grid


def save_sample_grid(G: Generator, path, *, classes: tuple[str, ...] | list[str], per_class: int, seed: int,
                     pad: int = 2, min_tile: int = 64):
    """A PNG with one row per class (class order) of ``per_class`` samples, tiles upscaled to >= ``min_tile``."""
    from PIL import Image

    labels = torch.arange(len(classes)).repeat_interleave(per_class)
    images = G.sample(labels, torch.Generator().manual_seed(seed))  # (K * per_class, C, s, s)
    scale = max(1, math.ceil(min_tile / G.size))
    tile = G.size * scale
    k = len(classes)
    grid = np.full((k * (tile + pad) + pad, per_class * (tile + pad) + pad, G.channels), 255, np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy().repeat(scale, axis=1).repeat(scale, axis=2)
    for i, img in enumerate(arr):
        r, c = divmod(i, per_class)
        top, left = pad + r * (tile + pad), pad + c * (tile + pad)
        grid[top : top + tile, left : left + tile] = img
    Image.fromarray(grid[..., 0] if G.channels == 1 else grid).save(path)
    return path


# --------------------------------------------------------------------------------------------- fit


def fit(data, config, ctx) -> Predictor:
    k = data.num_classes
    counts = topup_counts(data.train.labels, k, config.balance)
    report = {"train_counts": np.bincount(data.train.labels, minlength=k).tolist(),
              "topup_counts": counts.tolist(), "balance": config.balance, "fresh_samples": config.fresh_samples}
    extra_batches, gan_epochs, classifier_config = None, 0, config
    if counts.sum() > 0:
        # The GAN sees the training split and nothing else.
        started = time.perf_counter()
        G, records = train_gan(data.train.images, data.train.labels, k, config, ctx)
        gan_epochs = len(records)
        budget = epochs_for(gan_schedule(config, len(data.train)), len(data.train))
        report["gan_history"] = records
        report["gan_steps_done"] = budget.steps
        ctx.note(gan_seconds=round(time.perf_counter() - started, 2), gan_steps_done=budget.steps,
                 topup_counts=counts.tolist())
        save_sample_grid(G, ctx.artefacts_dir / "gan_samples.png", classes=data.classes,
                         per_class=config.grid_per_class, seed=ctx.seed)
        synth_labels = torch.arange(k).repeat_interleave(torch.from_numpy(counts))
        pool = None if config.fresh_samples else G.sample(synth_labels, torch.Generator().manual_seed(ctx.seed + 1))

        def extra_batches(epoch: int):
            if pool is not None:
                return pool, synth_labels
            return G.sample(synth_labels, torch.Generator().manual_seed(ctx.seed * 100_003 + epoch + 2)), synth_labels

        if config.steps > 0:
            # A step budget is resnet's: the same optimizer steps, now over real + synthetic images (fewer
            # epochs), so the row compares augmentation at equal training, not more steps for more images.
            classifier_budget = epochs_for(config, len(data.train) + int(counts.sum()))
            classifier_config = dataclasses.replace(config, steps=0, epochs=classifier_budget.epochs)
            ctx.note(classifier_epochs=classifier_budget.epochs, classifier_steps=classifier_budget.steps)
    else:
        # said in the result, not only in an artefact: this row then trains exactly as ``resnet`` does
        report["gan_history"] = "skipped: no class needs topping up at this balance"
        skipped = (f"no class has fewer than {config.balance:g} x the majority count ({max(report['train_counts'])} "
                   f"images), so no GAN is trained and no image added: the classifier trains as resnet's does")
        ctx.note(topup_counts=counts.tolist(), gan_skipped=skipped)
        ctx.warn(f"gan-aug is plain ResNet-18 here: {skipped} (raise `balance` to top classes up)")
    (ctx.artefacts_dir / "gan_history.json").write_text(json.dumps(report, indent=1))

    net = backbones.create(config.backbone, num_classes=k, in_chans=data.channels, image_size=data.size,
                           pretrained=config.pretrained)
    mean, std = normalisation(data.channels, net.pretrained_loaded)
    model, _ = train_classifier(net.model, data, classifier_config, ctx, mean=mean, std=std, extra_batches=extra_batches,
                                stage="classifier" if gan_epochs else None, epoch_offset=gan_epochs)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)

