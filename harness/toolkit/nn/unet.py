"""A compact class-conditional UNet for image diffusion (Ho et al. 2020, Appendix B; Dhariwal & Nichol 2021).

``UNet(in_channels, channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,),
dropout=0.0, emb_dim=128, num_classes=C, attention_levels=(), conditioning="add", context_dim=512, heads=4)``
predicts a tensor of the input's shape from ``forward(x, time, y)``:

- ``time`` is a float per sample (a timestep index, t in [0, 1] times a scale, or a log-SNR lambda):
  sinusoidal features (Vaswani et al. 2017) -> 2-layer MLP -> an embedding of width ``emb_dim``.
- ``y`` is a class index per sample; index ``C`` is the *null* class used for classifier-free guidance
  (label dropout at training time, Ho & Salimans 2022). The learned table is ``nn.Embedding(C + 1, emb_dim)``.
- ``class_table``: an optional external (C, d) tensor (e.g. class prototypes, ProtoDiffusion) that replaces
  the learned table; a learned linear map takes d to ``emb_dim`` and a learned vector stands for the null class.
  ``forward(..., class_emb=E)`` also accepts per-sample (B, d) embeddings directly.
- ``conditioning="add"`` (default): time and class embeddings are added and enter every ResBlock additively
  (a per-channel bias after the first convolution, as in DDPM). Self-attention runs at the attention levels
  and in the middle.
- ``conditioning="cross"``: the class is one context token, ``nn.Embedding(C + 1, context_dim)`` (row ``C`` the
  null class), read through cross-attention (Rombach et al. 2022, Sec. 3.3; the diffusers ``UNet2DCondition``
  that Favero et al. 2025 use, context dimension 512). Each attention position holds a transformer block
  (self-attention, cross-attention to the context, GEGLU feed-forward, each pre-LayerNorm and residual) instead
  of plain self-attention; the time embedding still enters every ResBlock, the class does not. With a
  single context token the cross-attention weights are all 1, so the block adds a learned function of the
  class token at every pixel of those levels: that is the paper's design, not a shortcut.
- Where attention runs: ``attention_levels`` (level indices counted from the input, 0 = full resolution; a
  down level and the up level that mirrors it) and/or ``attention_resolutions`` (feature-map sizes, which
  depend on the input size: at 224 px through a Haar transform the maps are 112, 56, 28, 14, 7, so 16 never
  matches). Both may be given; the union is used. The middle block always has one.
- ``cond_dim`` > 0: a per-sample conditioning vector ``forward(..., cond=c)`` of width ``cond_dim`` (e.g. a
  class prototype after ProtoDiffusion's class MLP; the null condition is c = 0) goes through its own MLP,
  cemb = Linear(cond_dim -> emb_dim) -> SiLU -> Linear(emb_dim -> emb_dim), and enters every ResBlock through
  its own projection beside the time embedding: h += Lin_t(SiLU(temb)) + Lin_c(SiLU(cemb)) (ProtoDiffusion;
  the same as projecting the concatenation [temb, cemb]).
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


class CrossAttention(nn.Module):
    """Multi-head attention of ``tokens`` (B, L, dim) to ``context`` (B, M, context_dim) (Vaswani et al. 2017,
    Eq. 1); with ``context=None`` it is self-attention (the context is the tokens)."""

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 8):
        super().__init__()
        self.heads = heads if dim % heads == 0 else 1
        context_dim = context_dim or dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = tokens if context is None else context
        b, n, d = tokens.shape
        q, k, v = (proj(src).reshape(b, src.shape[1], self.heads, d // self.heads).transpose(1, 2)
                   for proj, src in ((self.to_q, tokens), (self.to_k, context), (self.to_v, context)))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, d / heads)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """The cross-attention block of a conditional UNet (Rombach et al. 2022, Sec. 3.3; diffusers'
    ``Transformer2DModel`` with one ``BasicTransformerBlock``): GroupNorm, 1x1 conv to tokens, then
    x += SelfAttn(LN(x)), x += CrossAttn(LN(x), context), x += GEGLU-FF(LN(x)) (Shazeer 2020), a zero-initialised
    1x1 conv back, and the residual connection around the whole block."""

    def __init__(self, channels: int, context_dim: int, heads: int = 8):
        super().__init__()
        self.norm = _norm(channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1, self.attn1 = nn.LayerNorm(channels), CrossAttention(channels, None, heads)
        self.norm2, self.attn2 = nn.LayerNorm(channels), CrossAttention(channels, context_dim, heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff_in, self.ff_out = nn.Linear(channels, 8 * channels), nn.Linear(4 * channels, channels)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (b, hw, c)
        t = t + self.attn1(self.norm1(t))
        t = t + self.attn2(self.norm2(t), context)
        value, gate = self.ff_in(self.norm3(t)).chunk(2, dim=-1)
        t = t + self.ff_out(value * F.gelu(gate))
        return x + self.proj_out(t.transpose(1, 2).reshape(b, c, h, w))


def _attention_block(channels: int, context_dim: int | None, heads: int) -> nn.Module:
    """Self-attention (additive conditioning) or a cross-attention transformer block (``context_dim`` set)."""
    return TransformerBlock(channels, context_dim, heads) if context_dim else Attention(channels, heads)


def _attend(block: nn.Module, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    return block(x, context) if isinstance(block, TransformerBlock) else block(x)


class Level(nn.Module):
    """``num_res_blocks`` ResBlocks, each optionally followed by attention (self- or cross-attention)."""

    def __init__(self, in_ch: int, out_ch: int, n: int, emb_dim: int, dropout: float, attention: bool,
                 context_dim: int | None = None, heads: int = 4, cond: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, emb_dim, dropout, cond)
                                    for i in range(n))
        self.attns = nn.ModuleList(_attention_block(out_ch, context_dim, heads) if attention else nn.Identity()
                                   for _ in range(n))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None,
                cemb: torch.Tensor | None = None) -> torch.Tensor:
        for block, attn in zip(self.blocks, self.attns):
            x = _attend(attn, block(x, emb, cemb), context)
        return x


class UNet(nn.Module):
    """Class-conditional UNet; see the module docstring for the inputs."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, *, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: tuple[int, ...] = (), dropout: float = 0.0, emb_dim: int = 128,
                 num_classes: int = 0, class_table: torch.Tensor | None = None, image_size: int = 32,
                 attention_levels: tuple[int, ...] = (), conditioning: str = "add", context_dim: int = 512,
                 heads: int = 4, cond_dim: int = 0, norm_group_channels: int = 0):
        super().__init__()
        if conditioning not in ("add", "cross"):
            raise ValueError(f"conditioning must be 'add' or 'cross'; found {conditioning!r}")
        if conditioning == "cross" and class_table is not None:
            raise ValueError("class_table (external class embeddings) needs conditioning='add'")
        if any(not 0 <= level < len(channel_mult) for level in attention_levels):
            raise ValueError(f"attention_levels must be level indices in 0..{len(channel_mult) - 1}; "
                             f"found {tuple(attention_levels)}")
        out_channels = out_channels or in_channels
        self.num_classes, self.emb_dim, self.channels, self.cond_dim = num_classes, emb_dim, channels, cond_dim
        self.conditioning = conditioning
        context = context_dim if conditioning == "cross" else None
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        cond = cond_dim > 0
        self.cond_mlp = (nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                         if cond else None)
        if conditioning == "cross":
            self.class_table = None
            self.class_emb = nn.Embedding(num_classes + 1, context_dim) if num_classes else None
        elif class_table is not None:
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
        ch = channels
        attend = [size in attention_resolutions or i in attention_levels
                  for i, size in enumerate(_level_sizes(image_size, len(widths)))]
        for i, width in enumerate(widths):
            self.down.append(Level(ch, width, num_res_blocks, emb_dim, dropout, attend[i], context, heads, cond))
            ch = width
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = Level(ch, ch, 2, emb_dim, dropout, False, cond=cond)
        self.mid_attn = _attention_block(ch, context, heads)
        self.up = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            self.up.append(Level(ch + width, width, num_res_blocks, emb_dim, dropout, attend[i], context, heads,
                                 cond))
            ch = width
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        if norm_group_channels > 0:
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.GroupNorm):
                        setattr(module, name, group_norm(child.num_channels, norm_group_channels))

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """Embedding (B, emb_dim) of class indices (the context token (B, context_dim) under cross-attention
        conditioning); index ``num_classes`` is the null class."""
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
        context = None
        if self.conditioning == "cross":
            if class_emb is None and y is not None and self.num_classes:
                class_emb = self.class_embedding(y)
            if class_emb is None:  # no label at all: the null token
                class_emb = self.class_embedding(torch.full((x.shape[0],), self.num_classes, device=x.device))
            context = class_emb[:, None, :]  # one token (B, 1, context_dim)
        elif class_emb is not None:
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
            h = level(h, emb, context, cemb)
            skips.append(h)
            h = down(h)
        h = _attend(self.mid_attn, self.mid(h, emb, cemb=cemb), context)
        for level in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = level(torch.cat([h, skip], dim=1), emb, context, cemb)
        return self.out(h)

    def attention_blocks(self) -> dict[str, int]:
        """How many attention blocks sit where: ``{"down": n, "mid": n, "up": n, "cross": n}`` (``cross``: those
        that read the class token)."""
        def count(modules) -> int:
            return sum(isinstance(m, (Attention, TransformerBlock)) for m in modules)

        blocks = [m for m in self.modules() if isinstance(m, (Attention, TransformerBlock))]
        return {"down": count(m for level in self.down for m in level.attns),
                "mid": count([self.mid_attn]),
                "up": count(m for level in self.up for m in level.attns),
                "cross": sum(isinstance(m, TransformerBlock) for m in blocks)}


def _level_sizes(image_size: int, levels: int) -> list[int]:
    """Feature-map side at each level: the input size, halved (rounding up) after every level but the last."""
    sizes = [image_size]
    for _ in range(levels - 1):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes
