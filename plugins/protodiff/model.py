"""IMPROVE / ProtoDiffusion, read next to the methods brief, Sec. 4 (imports torch).

1. Prototype learning (GCPL, Yang et al. 2018; brief 4a.1): features f = W g(x) of an encoder g, prototypes
   m_cj (class c, prototype j), the distance-based cross-entropy on logits_c = -gamma min_j ||f - m_cj||^2
   and the prototype loss lambda ||f - m_y||^2 (m_y: the nearest prototype of the true class).
2. Prototype conditioning (4a.2-3): a table E of class vectors (the frozen prototypes, or learned for the CFG
   baseline), c = W2 SiLU(W1 E[y]), c = 0 for the null condition; the UNet takes c through its own embedding
   MLP into every ResBlock (``harness.toolkit.nn.unet.UNet(cond_dim=d)``).
3. Training (4a.4): eps-MSE on the linear schedule; t uniform, except a tenth of the batch from U{0..49}.
4. Sampling (4a.5): classifier-free guidance, both passes in one batch, DDIM.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError
from harness.toolkit.nn.diffusion import cfg_eps_batched, ddim_sample, q_sample
from harness.toolkit.nn.schedules import DiscreteSchedule
from harness.toolkit.nn.unet import UNet

LOW_T_FRACTION, LOW_T_STEPS = 0.1, 50  # ProtoDiffusion: 10% of each batch draws t from U{0 .. 49}

# ---------------------------------------------------------------------------- 1. prototype learning (GCPL)


def squared_distances(f: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """||f - m_cj||^2 for features (B, d) and prototypes (C, M, d) -> (B, C, M)."""
    return (f[:, None, None, :] - prototypes[None]).pow(2).sum(-1)


def dce_logits(f: torch.Tensor, prototypes: torch.Tensor, gamma: float) -> torch.Tensor:
    """The distance-based logits of GCPL: logits_c = -gamma min_j ||f - m_cj||^2 -> (B, C)."""
    return -gamma * squared_distances(f, prototypes).min(dim=2).values


def prototype_loss(f: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PL = mean over the batch of ||f - m_y||^2, m_y the nearest prototype of the true class."""
    d = squared_distances(f, prototypes)  # (B, C, M)
    return d[torch.arange(len(y), device=f.device), y].min(dim=1).values.mean()


def gcpl_loss(f: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor, gamma: float,
              lam: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = CE(-gamma d, y) + lambda PL (the DCE loss plus the prototype loss), with its two parts."""
    dce = F.cross_entropy(dce_logits(f, prototypes, gamma), y)
    pl = prototype_loss(f, prototypes, y)
    return dce + lam * pl, {"dce": float(dce.detach()), "pl": float(pl.detach())}


class PrototypeNet(nn.Module):
    """Encoder g (any timm model without its head) -> linear projection to d -> distances to the prototypes.

    ``forward(x)`` returns the DCE logits (B, C); ``features(x)`` the projected features f (B, d). Inputs are
    the encoder's normalised images; ``input_size`` > 0 resizes them first (a CLIP tower wants 224 px).
    ``freeze_encoder``: the encoder gets no gradient and stays in eval mode (IMPROVE's fixed CLIP space).
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int, num_classes: int, per_class: int,
                 gamma: float, input_size: int = 0, freeze_encoder: bool = False):
        super().__init__()
        self.encoder, self.project = encoder, nn.Linear(feature_dim, dim)
        self.prototypes = nn.Parameter(torch.randn(num_classes, per_class, dim) / dim**0.5)
        self.gamma, self.input_size, self.freeze_encoder = gamma, input_size, freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> PrototypeNet:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # no batch-norm statistics drift either
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.project(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dce_logits(self.features(x), self.prototypes, self.gamma)

    @torch.no_grad()
    def assign(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Index j of the nearest prototype of each image's own class (B,)."""
        d = squared_distances(self.features(x), self.prototypes)
        return d[torch.arange(len(y), device=x.device), y].argmin(dim=1)


# ---------------------------------------------------------------------------- 2. prototype conditioning


class ClassCondition(nn.Module):
    """c = W2 SiLU(W1 E[i]) for condition indices i (B,), with c = 0 where ``keep`` is false (the null condition).

    ``table`` (N, d) given: the prototypes, stored as a buffer, so they are frozen (no gradient, no optimizer
    state, bit-identical through training) and saved with the model. Without it the table is learned
    (the CFG baseline), N(0, 1)-initialised like ``nn.Embedding``. With several prototypes per class, the
    condition index of class c and prototype j is c * M + j.
    """

    def __init__(self, num_conditions: int, dim: int, table: torch.Tensor | None = None):
        super().__init__()
        if table is not None:
            if tuple(table.shape) != (num_conditions, dim):
                raise HarnessError(f"the prototype table must be ({num_conditions}, {dim}); found {tuple(table.shape)}")
            self.register_buffer("table", table.detach().clone().float())
        else:
            self.table = nn.Parameter(torch.randn(num_conditions, dim))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    @property
    def frozen(self) -> bool:
        return not isinstance(self.table, nn.Parameter)

    def forward(self, index: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        c = self.mlp(self.table[index.long()])
        return c if keep is None else c * keep[:, None].to(c.dtype)


class ConditionalDenoiser(nn.Module):
    """eps_theta(z_t, t, c): the shared UNet with a conditioning vector, plus the class -> condition mapping.

    ``mode_weights`` (C, M): how often each prototype of a class was the nearest one for the training images;
    sampling a class draws its prototype with these weights (uniform over one prototype per class).
    """

    def __init__(self, unet: UNet, condition: ClassCondition, num_classes: int, per_class: int = 1,
                 mode_weights: torch.Tensor | None = None, timesteps: int = 1000):
        super().__init__()
        self.unet, self.condition = unet, condition
        self.num_classes, self.per_class = num_classes, per_class
        weights = torch.ones(num_classes, per_class) if mode_weights is None else mode_weights.float()
        self.register_buffer("mode_weights", weights)
        self.register_buffer("alphas_cumprod", DiscreteSchedule.make("linear", timesteps).alphas_cumprod)

    def forward(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unet(z, t.float(), cond=c)

    def condition_index(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class labels (B,) -> condition indices c * M + j, j drawn with the class's ``mode_weights``."""
        labels = labels.long()
        if self.per_class == 1:
            return labels
        j = torch.multinomial(self.mode_weights[labels].cpu(), 1, generator=generator).squeeze(1)
        return labels * self.per_class + j.to(labels.device)


def build_denoiser(*, channels: int, size: int, num_classes: int, config, table: torch.Tensor | None = None,
                   per_class: int = 1, mode_weights: torch.Tensor | None = None) -> ConditionalDenoiser:
    """The ProtoDiffusion UNet of ``config`` (channels, channel_mult, ..., class_dim) for these images."""
    unet = UNet(channels, channels=config.channels, channel_mult=tuple(config.channel_mult),
                num_res_blocks=config.num_res_blocks, attention_resolutions=tuple(config.attention_resolutions),
                dropout=config.dropout, emb_dim=config.emb_dim, image_size=size, cond_dim=config.class_dim,
                norm_group_channels=4)  # groups of >= 4 channels, so no normalisation cancels the embeddings
    condition = ClassCondition(num_classes * per_class, config.class_dim, table)
    return ConditionalDenoiser(unet, condition, num_classes, per_class, mode_weights, config.timesteps)


# ------------------------------------------------------------------------------------------ 3. training


def diffusion_loss(net: ConditionalDenoiser, x0: torch.Tensor, index: torch.Tensor, label_dropout: float,
                   generator: torch.Generator) -> torch.Tensor:
    """E ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, c)||^2 (Ho et al. 2020, Eq. 14), with
    c = 0 with probability ``label_dropout`` (Ho & Salimans 2022) and a tenth of t drawn from U{0..49}."""
    b, dev, T = x0.shape[0], x0.device, len(net.alphas_cumprod)
    t = torch.randint(0, T, (b,), generator=generator)
    low = torch.rand(b, generator=generator) < LOW_T_FRACTION
    t = torch.where(low, torch.randint(0, min(LOW_T_STEPS, T), (b,), generator=generator), t).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    keep = (torch.rand(b, generator=generator) >= label_dropout).to(dev)
    abar = net.alphas_cumprod[t]
    z = q_sample(x0, abar.sqrt().float(), (1 - abar).sqrt().float(), noise)
    return F.mse_loss(net(z, t, net.condition(index, keep)), noise)


# ------------------------------------------------------------------------------------------ 4. sampling


@torch.no_grad()
def sample(net: ConditionalDenoiser, labels, *, shape: tuple[int, int, int], guidance_scale: float,
           steps: int, eta: float = 0.0, seed: int = 0, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """uint8 (N, H, W, C) images of the given classes: DDIM over ``steps`` timesteps with classifier-free
    guidance eps~ = (1 + w) eps(z, t, c) - w eps(z, t, 0), the conditional and null rows as one batch."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= net.num_classes):
        raise HarnessError(f"class labels must be in [0, {net.num_classes}); found {labels.min()}..{labels.max()}")
    was_training = net.training
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        c = net.condition(net.condition_index(y, generator).to(device))
        null = torch.zeros_like(c)
        z = torch.randn((len(y), *shape), generator=generator).to(device)
        x = ddim_sample(lambda z_t, t, c=c, null=null: cfg_eps_batched(net, z_t, t, c, null, guidance_scale),
                        z, net.alphas_cumprod, steps, eta=eta, generator=generator)
        out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, shape[1], shape[2], shape[0]), np.uint8)
