"""Single-level 2-D Haar wavelet transform as an input transform (Favero et al. 2025, brief Sec. 3.1).

``haar_dwt`` maps (B, C, H, W) with even H, W to (B, 4C, H/2, W/2): per channel the LL, LH, HL, HH
sub-bands of the orthonormal Haar transform, divided by 2 as in the paper (so LL is the 2x2 mean).
``haar_idwt`` is its exact inverse.
"""

from __future__ import annotations

import torch


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): [LL, LH, HL, HH] per channel, each (a +- b +- c +- d) / 4."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt needs even height and width; found {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    bands = [(a + b + c + d), (a - b + c - d), (a + b - c - d), (a - b - c + d)]
    return torch.cat([band / 4 for band in bands], dim=1)


def haar_idwt(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``haar_dwt``: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    ll, lh, hl, hh = y.chunk(4, dim=1)
    out = y.new_empty(ll.shape[0], ll.shape[1], ll.shape[2] * 2, ll.shape[3] * 2)
    out[..., 0::2, 0::2] = ll + lh + hl + hh
    out[..., 0::2, 1::2] = ll - lh + hl - hh
    out[..., 1::2, 0::2] = ll + lh - hl - hh
    out[..., 1::2, 1::2] = ll - lh - hl + hh
    return out
