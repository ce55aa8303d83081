"""The networks of ``gan-aug`` (imports torch): DiffAugment (Zhao et al. 2020), the conditional-BN generator
(DCGAN, Radford et al. 2016, with class-conditional batch norm) and the projection discriminator (Miyato &
Koyama 2018), and the generator's standing batch-norm statistics (Brock et al. 2019). Training is in
``train.py``; the method and its settings in ``__init__.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from harness import HarnessError

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


DIFFAUGMENT = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, ops: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment of a [-1, 1] batch (N, C, H, W): each op in ``ops``, in order, fresh randomness per image."""
    for op in ops:
        if op not in DIFFAUGMENT:
            raise HarnessError(f"gan-aug: unknown DiffAugment operation {op!r}; known: {', '.join(DIFFAUGMENT)}")
        x = DIFFAUGMENT[op](x, gen)
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
        """uint8 (N, C, size, size) images of the requested classes, batch norm in eval mode: after
        :func:`standing_statistics` that is the batch statistics of training, whatever the classes asked for
        (and an image does not depend on the others in its batch)."""
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


# ------------------------------------------------------------------------------ standing statistics


@torch.no_grad()
def standing_statistics(G: Generator, labels: torch.Tensor, *, batch_size: int, batches: int,
                        generator: torch.Generator) -> None:
    """Set every batch norm's running mean and variance of ``G`` to the mean, over ``batches`` batches, of
    the batch statistics it normalises with in training: batches of ``batch_size`` with labels drawn like
    the training batches' (uniformly from ``labels``, the training labels) and fresh z. This is
    "standing statistics" (Brock et al. 2019, BigGAN), with the biased batch variance that training
    divides by. Eval mode then normalises each image as training did on average, even when a sampling
    batch holds one class only (in train mode such a batch would normalise away its class's mean shift,
    and with the running averages of training the statistics lag behind the final weights)."""
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.Module, list[torch.Tensor]] = {m: [0.0, 0.0] for m in norms}

    def record(module, inputs):
        x = inputs[0]
        sums[module][0] = sums[module][0] + x.mean(dim=(0, 2, 3))
        sums[module][1] = sums[module][1] + x.var(dim=(0, 2, 3), unbiased=False)

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    was_training = G.training
    G.train()
    device = next(G.parameters()).device
    try:
        for _ in range(batches):
            y = labels[torch.randint(0, len(labels), (batch_size,), generator=generator)]
            z = torch.randn(batch_size, G.latent_dim, generator=generator)
            G(z.to(device), y.to(device))
    finally:
        for hook in hooks:
            hook.remove()
    for m in norms:
        m.running_mean.copy_(sums[m][0] / batches)
        m.running_var.copy_(sums[m][1] / batches)
    G.train(was_training)
