"""A compact class-conditional UNet for image diffusion (Ho et al. 2020, Appendix B; Dhariwal & Nichol 2021).

``UNet(in_channels, channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,),
dropout=0.0, emb_dim=128, num_classes=C)`` predicts a tensor of the input's shape from
``forward(x, time, y)``:

- ``time`` is a float per sample (a timestep index, t in [0, 1] times a scale, or a log-SNR lambda):
  sinusoidal features (Vaswani et al. 2017) -> 2-layer MLP -> an embedding of width ``emb_dim``.
- ``y`` is a class index per sample; index ``C`` is the *null* class used for classifier-free guidance
  (label dropout at training time, Ho & Salimans 2022). The learned table is ``nn.Embedding(C + 1, emb_dim)``.
- ``class_table``: an optional external (C, d) tensor (e.g. class prototypes, ProtoDiffusion) that replaces
  the learned table; a learned linear map takes d to ``emb_dim`` and a learned vector stands for the null class.
  ``forward(..., class_emb=E)`` also accepts per-sample (B, d) embeddings directly.
- ``cond_dim`` > 0: a per-sample conditioning vector ``forward(..., cond=c)`` of width ``cond_dim`` (e.g. a
  class prototype after ProtoDiffusion's class MLP; the null condition is c = 0) goes through its own MLP,
  cemb = Linear(cond_dim -> emb_dim) -> SiLU -> Linear(emb_dim -> emb_dim), and enters every ResBlock through
  its own projection beside the time embedding: h += Lin_t(SiLU(temb)) + Lin_c(SiLU(cemb)) (ProtoDiffusion;
  the same as projecting the concatenation [temb, cemb]).
- Time and class embeddings are added and enter every ResBlock additively (a per-channel bias after the
  first convolution, as in DDPM). Self-attention runs at the listed feature-map resolutions and in the middle.
- ``norm_group_channels`` > 0: every GroupNorm has at least that many channels per group (:func:`group_norm`);
  0 keeps gcd(channels, 32 or 8) groups, which has one channel per group at 8 and 32 channels, where the
  normalisation after the added embeddings cancels them.

Any input size works (odd sizes are handled by resizing the upsampled map to its skip connection).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_embedding(time: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal features of a float per sample (Vaswani et al. 2017, Sec. 3.5): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=time.device, dtype=torch.float32) / half)
    args = time.float().view(-1, 1) * freqs.view(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 32 if channels >= 32 else 8)  # one channel per group at 8 and 32 channels
    return nn.GroupNorm(max(groups, 1), channels)


def group_norm(channels: int, min_group: int = 4) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups of at least ``min_group`` channels (DDPM's 32 groups from 128 channels).

    The embeddings a ResBlock adds are per-channel constants and the normalisation after them subtracts each
    group's mean: a group of one channel erases them (the block then ignores the time and the class), a group
    of two keeps only their difference. ``UNet(norm_group_channels=4)`` uses this for every normalisation.
    """
    groups = max(1, min(32, channels // max(min_group, 1)))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + Linear(embedding), GroupNorm-SiLU-dropout-conv, with a residual connection."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, cond: bool = False):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.cond = nn.Linear(emb_dim, out_ch) if cond else None  # Lin_c of a separate conditioning embedding
        self.norm2, self.drop = _norm(out_ch), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cemb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        if self.cond is not None:
            h = h + self.cond(F.silu(cemb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (scaled dot product, Vaswani et al. 2017,
    Eq. 1), with a residual connection and a zero-initialised output projection."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """``num_res_blocks`` ResBlocks, each optionally followed by attention."""

    def __init__(self, in_ch: int, out_ch: int, n: int, emb_dim: int, dropout: float, attention: bool,
                 cond: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, emb_dim, dropout, cond)
                                    for i in range(n))
        self.attns = nn.ModuleList(Attention(out_ch) if attention else nn.Identity() for _ in range(n))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cemb: torch.Tensor | None = None) -> torch.Tensor:
        for block, attn in zip(self.blocks, self.attns):
            x = attn(block(x, emb, cemb))
        return x


class UNet(nn.Module):
    """Class-conditional UNet; see the module docstring for the inputs."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, *, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: tuple[int, ...] = (), dropout: float = 0.0, emb_dim: int = 128,
                 num_classes: int = 0, class_table: torch.Tensor | None = None, image_size: int = 32,
                 cond_dim: int = 0, norm_group_channels: int = 0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.num_classes, self.emb_dim, self.channels, self.cond_dim = num_classes, emb_dim, channels, cond_dim
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        cond = cond_dim > 0
        self.cond_mlp = (nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                         if cond else None)
        if class_table is not None:
            table = torch.as_tensor(class_table, dtype=torch.float32)
            if table.dim() != 2 or (num_classes and table.shape[0] != num_classes):
                raise ValueError(f"class_table must be ({num_classes}, d); found {tuple(table.shape)}")
            self.num_classes = num_classes = table.shape[0]
            self.register_buffer("class_table", table)
            self.class_proj = nn.Linear(table.shape[1], emb_dim)
            self.null_emb = nn.Parameter(torch.zeros(emb_dim))
            self.class_emb = None
        else:
            self.class_table = None
            self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in channel_mult]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch, res = channels, image_size
        for i, width in enumerate(widths):
            self.down.append(Level(ch, width, num_res_blocks, emb_dim, dropout, res in attention_resolutions, cond))
            ch = width
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            res = res if last else (res + 1) // 2
        self.mid = Level(ch, ch, 2, emb_dim, dropout, False, cond)
        self.mid_attn = Attention(ch)
        self.up = nn.ModuleList()
        for width in reversed(widths):
            self.up.append(Level(ch + width, width, num_res_blocks, emb_dim, dropout, res in attention_resolutions,
                                 cond))
            ch, res = width, res * 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        if norm_group_channels > 0:
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.GroupNorm):
                        setattr(module, name, group_norm(child.num_channels, norm_group_channels))

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """Embedding (B, emb_dim) of class indices; index ``num_classes`` is the null class."""
        if self.class_table is None:
            return self.class_emb(y.long())
        y = y.long()
        is_null = y == self.num_classes
        emb = self.class_proj(self.class_table[y.clamp(max=self.num_classes - 1)])
        return torch.where(is_null[:, None], self.null_emb.expand_as(emb), emb)

    def forward(self, x: torch.Tensor, time: torch.Tensor, y: torch.Tensor | None = None,
                class_emb: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        time = torch.as_tensor(time, dtype=torch.float32, device=x.device).expand(x.shape[0])
        emb = self.time_mlp(sinusoidal_embedding(time, self.channels))
        if class_emb is not None:
            emb = emb + (self.class_proj(class_emb) if self.class_table is not None else class_emb)
        elif y is not None and self.num_classes:
            emb = emb + self.class_embedding(y)
        cemb = None
        if self.cond_mlp is not None:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                found = None if cond is None else tuple(cond.shape)
                raise ValueError(f"this UNet takes cond of shape ({x.shape[0]}, {self.cond_dim}) (zeros for the "
                                 f"null condition); found {found}")
            cemb = self.cond_mlp(cond)
        h, skips = self.stem(x), []
        for level, down in zip(self.down, self.downsample):
            h = level(h, emb, cemb)
            skips.append(h)
            h = down(h)
        h = self.mid_attn(self.mid(h, emb, cemb))
        for level in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = level(torch.cat([h, skip], dim=1), emb, cemb)
        return self.out(h)
