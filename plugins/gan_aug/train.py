"""The torch side of ``gan-aug`` (see ``plugins/gan_aug/__init__.py`` for the method and its settings).

Sections follow the method: DiffAugment (Zhao et al. 2020), the conditional-BN generator and the
projection discriminator (Miyato & Koyama 2018), the hinge-loss GAN loop on the training split, the
per-class sample grid, and ``fit``, which tops the minority classes up while ResNet-18 trains.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from harness import HarnessError
from plugins.gan_aug import GanAugConfig, diffaugment_ops, topup_counts

# ------------------------------------------------------------------------------------- DiffAugment
# Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training", Sec. 3: the same random,
# differentiable transforms are applied to real and generated images every time the discriminator sees them.


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    rand = lambda: torch.rand(n, 1, 1, 1, generator=gen).to(x.device)  # noqa: E731
    x = x + (rand() - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand() * 2) + mean  # saturation (a no-op on one channel)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand() + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + dy + 1, 0, h + 1)
    gx = torch.clamp(gx + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # zero border, then shifted read
    return padded[b, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, ops: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment of a [-1, 1] batch (N, C, H, W): each op in ``ops``, in order, fresh randomness per image."""
    for op in ops:
        x = _OPS[op](x, gen)
    return x


# -------------------------------------------------------------------------------- the two networks


def generation_size(size: int, min_size: int = 16) -> int:
    """The generator's working size: the smallest power of two >= max(size, min_size)."""
    if size < 16:
        raise HarnessError(f"gan-aug: images must be at least 16 px for the GAN; found {size} px "
                           "(use --set dataset.size=16 or more)")
    return 2 ** math.ceil(math.log2(max(size, min_size, 16)))


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain and bias are looked up per class (de Vries et al. 2017; Dumoulin et al. 2017)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class Generator(nn.Module):
    """Conditional DCGAN generator: z -> 4x4 -> transposed-conv doublings -> ``gen_size`` -> resized to ``size``.

    ``forward(z, y)`` returns images in [-1, 1] of shape (N, channels, size, size).
    """

    def __init__(self, *, num_classes: int, channels: int, size: int, latent_dim: int, width: int,
                 min_size: int = 16):
        super().__init__()
        self.num_classes, self.channels, self.size, self.latent_dim = num_classes, channels, size, latent_dim
        self.gen_size = generation_size(size, min_size)
        n_up = int(math.log2(self.gen_size)) - 2
        widths = [width * min(2 ** (n_up - i), 8) for i in range(n_up + 1)]  # 4x4 ... gen_size
        self.fc = nn.Linear(latent_dim, widths[0] * 16)
        self.bn0 = ConditionalBatchNorm(widths[0], num_classes)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False)
                                 for i in range(n_up))
        self.bns = nn.ModuleList(ConditionalBatchNorm(widths[i + 1], num_classes) for i in range(n_up))
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.fc(z).view(len(z), -1, 4, 4), y))
        for up, bn in zip(self.ups, self.bns):
            h = F.relu(bn(up(h), y))
        x = torch.tanh(self.out(h))
        if self.gen_size != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return x

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None,
               batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, C, size, size) images of the requested classes (eval-mode batch-norm statistics)."""
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise HarnessError(f"gan-aug: class labels must be in [0, {self.num_classes}); "
                               f"found {labels.min().item()}..{labels.max().item()}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size]
            z = torch.randn(len(y), self.latent_dim, generator=generator)
            x = self(z.to(device), y.to(device))
            out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        self.train(was_training)
        if not out:
            return torch.zeros(0, self.channels, self.size, self.size, dtype=torch.uint8)
        return torch.cat(out)


class Discriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018, Eq. 3): f(x, y) = w^T phi(x) + embed(y)^T phi(x),
    phi = spectrally normalised strided convs then global sum pooling; any input size >= 16 px."""

    def __init__(self, *, num_classes: int, channels: int, size: int, width: int):
        super().__init__()
        layers = [spectral_norm(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
        c, s = width, size
        while s >= 8:
            c_next = min(c * 2, 8 * width)
            layers += [spectral_norm(nn.Conv2d(c, c_next, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c, s = c_next, s // 2
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, c))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


# ------------------------------------------------------------------------------------ GAN training


def train_gan(images: np.ndarray, labels: np.ndarray, num_classes: int, config: GanAugConfig, *, seed: int,
              device: str = "cpu") -> tuple[Generator, list[dict]]:
    """Train the conditional GAN on ``images`` uint8 (N, H, W, C) with ``labels``: the training split only.

    Hinge loss (Lim & Ye 2017; Miyato et al. 2018), one discriminator and one generator update per step,
    Adam with the configured betas, DiffAugment on every discriminator input. Real batches are drawn
    uniformly from the training images; generated images use the real batch's labels.
    """
    ops = diffaugment_ops(config.diffaugment)
    n, size, _, channels = images.shape
    if n < 2:
        raise HarnessError(f"gan-aug: the GAN needs at least 2 training images; found {n}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    G = Generator(num_classes=num_classes, channels=channels, size=size, latent_dim=config.latent_dim,
                  width=config.g_width, min_size=config.gan_min_size).to(device)
    D = Discriminator(num_classes=num_classes, channels=channels, size=size, width=config.d_width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=(config.beta1, config.beta2))
    real_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    labels_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    batch = min(config.gan_batch_size, n)
    log_every = max(1, config.gan_steps // 20)
    history: list[dict] = []
    for step in range(config.gan_steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        real = real_all[idx].to(device).float().div_(127.5).sub_(1.0)
        y = labels_all[idx].to(device)
        z = torch.randn(batch, config.latent_dim, generator=gen).to(device)

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

        if (step + 1) % log_every == 0 or step + 1 == config.gan_steps:
            history.append({"step": step + 1, "loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                            "d_real": float(d_real.detach().mean()), "d_fake": float(d_fake.detach().mean())})
    G.eval()
    return G, history


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


def fit(data, config: GanAugConfig, ctx):
    from harness import Predictor
    from harness.toolkit import backbones
    from harness.toolkit.training import Softmax, normalisation, train_classifier

    diffaugment_ops(config.diffaugment)  # fail early on a bad policy
    k = data.num_classes
    counts = topup_counts(data.train.labels, k, config.balance)
    report = {"train_counts": np.bincount(data.train.labels, minlength=k).tolist(),
              "topup_counts": counts.tolist(), "balance": config.balance, "fresh_samples": config.fresh_samples}
    extra_batches = None
    if counts.sum() > 0:
        # The GAN sees the training split and nothing else.
        G, history = train_gan(data.train.images, data.train.labels, k, config, seed=ctx.seed, device=ctx.device)
        report["gan_history"] = history
        save_sample_grid(G, ctx.artefacts_dir / "gan_samples.png", classes=data.classes,
                         per_class=config.grid_per_class, seed=ctx.seed)
        synth_labels = torch.arange(k).repeat_interleave(torch.from_numpy(counts))
        pool = None if config.fresh_samples else G.sample(synth_labels, torch.Generator().manual_seed(ctx.seed + 1))

        def extra_batches(epoch: int):
            if pool is not None:
                return pool, synth_labels
            return G.sample(synth_labels, torch.Generator().manual_seed(ctx.seed * 100_003 + epoch + 2)), synth_labels
    else:
        report["gan_history"] = "skipped: no class needs topping up at this balance"
    (ctx.artefacts_dir / "gan_history.json").write_text(json.dumps(report, indent=1))

    net = backbones.create(config.backbone, num_classes=k, in_chans=data.channels, image_size=data.size,
                           pretrained=config.pretrained)
    mean, std = normalisation(data.channels, net.pretrained_loaded)
    model, _ = train_classifier(net.model, data, config, ctx, mean=mean, std=std, extra_batches=extra_batches)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)
