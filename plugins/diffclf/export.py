"""The UNet of ``diffclf`` in ONNX Runtime (issue 17). Imports torch and onnxruntime.

The classifier calls one network, ``net(z, logsnr, y)``, C x N times per image; everything around it (the
trials' noise, the error matrix, the vote, pruning, the counterfactual sampler) is a few tensor operations.
So the network is what is exported, and the loops stay in Python over an ONNX Runtime session::

    path = export_unet(clf.net, tmp / "unet.onnx", example_rows=clf.transform(x[:1]))
    onnx_clf = clf.with_net(OnnxUNet(path, threads=1))     # same settings, seed and noise
    onnx_clf(x)["probs"]

With the same noise, ONNX Runtime's errors match torch's to within 1e-6 relative (6e-7 on the ``cpu`` UNet),
and the predicted labels are identical: that is the stated agreement. Vote shares (the probabilities) can
differ by one vote (1/N) where two classes' errors of a trial are within that tolerance (one image of 64 in
``benchmarks/bench_diffclf.py onnx``); ``tests/test_diffclf.py`` checks both at the smoke size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from harness.toolkit.nn.onnx import OnnxNet, export_net


def export_unet(net: nn.Module, path: Path | str, example_rows: torch.Tensor) -> Path:
    """Export ``net(z, logsnr, y)`` to ONNX at ``path`` with a dynamic number of rows. ``example_rows`` is
    one or more inputs in the model's space (after the resize and the Haar transform): its shape fixes C, H, W."""
    z = example_rows[:2].detach().float().cpu()
    if len(z) < 2:  # a batch of two, so the exporter cannot fold the row count into a constant
        z = torch.cat([z, z])
    inputs = {"z": z, "logsnr": torch.linspace(-2.0, 2.0, len(z)), "y": torch.zeros(len(z), dtype=torch.int64)}
    return export_net(net, path, inputs, output="prediction")


class OnnxUNet(OnnxNet):
    """An ONNX Runtime session standing in for the UNet: ``forward(z, logsnr, y)`` -> torch tensor, a scalar
    ``logsnr`` or ``y`` expanded to the rows (CPU provider, or CUDA when available and asked for)."""


def onnx_classifier(clf, path: Path | str, example: torch.Tensor, *, threads: int | None = None):
    """``clf`` (a ``DiffusionClassifier``) with its network exported to ``path`` and run by ONNX Runtime;
    ``example`` is a normalised image batch (B, C, H, W) as the classifier receives it."""
    export_unet(clf.net, path, clf.transform(example[:2]))
    return clf.with_net(OnnxUNet(path, threads=threads)).eval()


def onnx_runtime(clf, directory: Path | str, example: torch.Tensor, *, threads: int | None = None):
    """The predictor's ONNX Runtime form (``Predictor.onnx_runtime``): ``clf`` with its UNet exported to
    ``directory/unet.onnx``; the latency step and ``harness bench`` time it beside torch."""
    return onnx_classifier(clf, Path(directory) / "unet.onnx", example, threads=threads)

