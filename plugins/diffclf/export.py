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

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

OPSET = 17


class _Rows(nn.Module):
    """(z, logsnr, y) -> prediction, with fixed argument names for the ONNX graph."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(z, logsnr, y)


def export_unet(net: nn.Module, path: Path | str, example_rows: torch.Tensor) -> Path:
    """Export ``net(z, logsnr, y)`` to ONNX at ``path`` with a dynamic number of rows. ``example_rows`` is
    one or more inputs in the model's space (after the resize and the Haar transform): its shape fixes C, H, W."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    z = example_rows[:2].detach().float().cpu()
    if len(z) < 2:  # a batch of two, so the exporter cannot fold the row count into a constant
        z = torch.cat([z, z])
    logsnr = torch.linspace(-2.0, 2.0, len(z))
    y = torch.zeros(len(z), dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks: the spatial size is fixed by design
        torch.onnx.export(_Rows(net).cpu(), (z, logsnr, y), str(path), input_names=["z", "logsnr", "y"],
                          output_names=["prediction"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"z": {0: "rows"}, "logsnr": {0: "rows"}, "y": {0: "rows"},
                                        "prediction": {0: "rows"}})
    net.train(was_training)
    return path


class OnnxUNet(nn.Module):
    """An ONNX Runtime session standing in for the UNet: ``forward(z, logsnr, y)`` -> torch tensor (CPU
    provider, or CUDA when available and asked for). No parameters: the weights live in the graph."""

    def __init__(self, path: Path | str, *, threads: int | None = None, providers: list[str] | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        available = ort.get_available_providers()
        providers = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=providers)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feeds = {"z": z.detach().float().cpu().numpy(),
                 "logsnr": torch.as_tensor(logsnr, dtype=torch.float32).expand(len(z)).cpu().numpy(),
                 "y": torch.as_tensor(y).long().expand(len(z)).cpu().numpy().astype(np.int64)}
        (out,) = self.session.run(["prediction"], feeds)
        return torch.from_numpy(out).to(z.device)


def onnx_classifier(clf, path: Path | str, example: torch.Tensor, *, threads: int | None = None):
    """``clf`` (a ``DiffusionClassifier``) with its network exported to ``path`` and run by ONNX Runtime;
    ``example`` is a normalised image batch (B, C, H, W) as the classifier receives it."""
    export_unet(clf.net, path, clf.transform(example[:2]))
    return clf.with_net(OnnxUNet(path, threads=threads)).eval()
