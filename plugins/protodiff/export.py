"""The prototype-guided (and CFG baseline) generator on ONNX Runtime (issue 17). Imports torch and onnxruntime.

Sampling calls the UNet eps_theta(z_t, t, c) once per DDIM step on a batch of 2B rows (the conditional and the
null pass together); the class -> condition vector c (the frozen prototype or learned table through its MLP) is
computed once per batch. So the UNet is exported (``denoiser.onnx``, dynamic batch) and everything else, the
condition, the guidance and the DDIM loop (``model.sample``), stays in torch around an ONNX Runtime session:

    fast = onnx_denoiser(net, "out/denoiser.onnx", shape=(3, 28, 28))
    model.sample(fast, labels, shape=(3, 28, 28), guidance_scale=1.8, steps=25, seed=0)   # as with ``net``

With the same seed the images match the torch sampler's to the uint8 rounding of float32 round-off
(``tests/test_protodiff.py``; ``benchmarks/bench_generators_onnx.py`` times both runtimes).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from harness.toolkit.nn.onnx import OnnxNet, export_net
from plugins.protodiff.model import ConditionalDenoiser


def export_denoiser(net: ConditionalDenoiser, path: Path | str, shape: tuple[int, int, int]) -> Path:
    """Write ``net``'s UNet to ``path``: inputs ``z`` (N, *shape), ``t`` (N,) int64, ``c`` (N, class_dim);
    output ``eps``."""
    dim = net.condition.table.shape[1]
    inputs = {"z": torch.zeros(2, *shape), "t": torch.tensor([999, 0]), "c": torch.zeros(2, dim)}
    return export_net(net, path, inputs, output="eps")


class OnnxDenoiser(nn.Module):
    """``net`` with its UNet on ONNX Runtime: the condition module, the prototype draw and the schedule are the
    torch model's; ``forward(z, t, c)`` runs the graph. A drop-in for ``model.sample``."""

    def __init__(self, net: ConditionalDenoiser, path: Path | str, *, threads: int | None = None,
                 providers: list[str] | None = None):
        super().__init__()
        self.condition = net.condition
        self.num_classes, self.per_class = net.num_classes, net.per_class
        self.register_buffer("mode_weights", net.mode_weights.detach().clone())
        self.register_buffer("alphas_cumprod", net.alphas_cumprod.detach().clone())
        self.unet = OnnxNet(path, threads=threads, providers=providers)

    condition_index = ConditionalDenoiser.condition_index

    def forward(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unet(z, t, c)


def onnx_denoiser(net: ConditionalDenoiser, path: Path | str, shape: tuple[int, int, int], *,
                  threads: int | None = None, providers: list[str] | None = None) -> OnnxDenoiser:
    export_denoiser(net, path, shape)
    return OnnxDenoiser(net, path, threads=threads, providers=providers)
