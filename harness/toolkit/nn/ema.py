"""Exponential moving average of model weights (Polyak averaging; used by DDPM, Ho et al. 2020, Appendix B).

    theta_ema <- decay * theta_ema + (1 - decay) * theta      every ``update_every`` steps after ``start_step``

Before ``start_step`` the average simply copies the weights (Favero et al.: decay 0.999, every 5 steps,
after step 50). Buffers (e.g. batch-norm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """Keeps ``self.module``, an averaged copy of a model, in eval mode and without gradients."""

    def __init__(self, model: nn.Module, decay: float = 0.999, update_every: int = 1, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1); found {decay}")
        self.decay, self.update_every, self.start_step = decay, max(1, update_every), start_step
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step ``step`` (counted from 0)."""
        if step < self.start_step:
            self.module.load_state_dict(model.state_dict())
            return
        if step % self.update_every:
            return
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
