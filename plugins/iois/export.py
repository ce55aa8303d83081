"""IOIS's generator on ONNX Runtime (issue 17). Imports torch and onnxruntime.

OIS calls the generator eps_theta(x_t, t[, y]) at every step of every synthetic batch; that network is
exported (``generator.onnx``, dynamic batch) and the sampler's loop, the DDIM or Eq. 3 steps and the classifier
guidance stay in Python. The guidance gradient grad_x log p_psi(y | x_t) needs the classifier being trained and
its backward pass, so it stays in torch: ONNX Runtime runs the generator, torch the classifier.

    fast = onnx_sampler(sampler, "out/generator.onnx")   # a GuidedSampler whose net is an ONNX Runtime session
    fast.sample(labels, classifier, generator)           # same noise, same images (to the uint8 rounding)

With the same noise the images match the torch sampler's: the generator's outputs agree to float32 round-off
(about 1e-6), so an 8-bit pixel differs by at most one level where x_0 sits on a rounding boundary
(``tests/test_iois.py``; ``benchmarks/bench_generators_onnx.py`` times both runtimes).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from harness.toolkit.nn.onnx import OnnxNet, export_net
from plugins.iois.model import GuidedSampler


def export_generator(sampler: GuidedSampler, path: Path | str) -> Path:
    """Write the sampler's generator to ``path``: inputs ``x`` (N, C, S, S), ``t`` (N,) float and, for the
    class-conditional generator, ``y`` (N,) int64; output ``prediction`` (eps or v, as the generator predicts)."""
    inputs = {"x": torch.zeros(2, sampler.channels, sampler.size, sampler.size), "t": torch.tensor([999.0, 0.0])}
    if sampler.conditional:
        inputs["y"] = torch.zeros(2, dtype=torch.int64)
    return export_net(sampler.net, path, inputs, output="prediction")


def onnx_sampler(sampler: GuidedSampler, path: Path | str, *, threads: int | None = None,
                 providers: list[str] | None = None) -> GuidedSampler:
    """A copy of ``sampler`` (same schedule, steps, guidance and batch) whose generator runs on ONNX Runtime."""
    export_generator(sampler, path)
    fast = copy.copy(sampler)
    fast.net = OnnxNet(path, threads=threads, providers=providers)
    return fast
