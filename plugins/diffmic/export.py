"""DiffMIC on ONNX Runtime: the networks called per image and per step exported to ONNX, the reverse chain
driven from Python over ONNX Runtime sessions.

A DiffMIC prediction is not one graph: the reverse chain is a Python loop of ``test_timesteps`` denoiser calls
with per-image noise. What runs at every step is exported, each as its own graph with a dynamic batch:

- ``prior.onnx``: images (N, C, H, W) -> the DCG's fused prior y_hat (N, K) (global branch, ROI selection and
  crops, local branch, gated attention);
- ``feature.onnx``: images -> the denoiser's image feature e (N, D), computed once per image;
- ``denoiser.onnx``: (e, y_t, y_hat, t) -> eps (N, K), called once per step, ``t`` an int64 tensor of shape (1,).

``OnnxDiffMIC`` is a drop-in for the torch predictor module: the same chain (``LabelDiffusion.sample``), the same
per-image noise (``chain_noise``) and the same readout, with the three networks on ONNX Runtime. With the same
noise its probabilities match the torch module's to float32 round-off (tested: within 1e-4, identical labels).

    paths = export_onnx(classifier, "out/", image_shape=(3, 28, 28))
    module = OnnxDiffMIC(paths, classifier)          # module(x)["probs"], as classifier(x)["probs"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from harness import HarnessError
from harness.toolkit.nn.onnx import export_net, ort_session
from plugins.diffmic.model import DiffMICClassifier, Prior, chain_noise, readout

GRAPHS = ("prior", "feature", "denoiser")


class _Feature(nn.Module):
    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x):
        return self.denoiser.image_feature(x)


def export_onnx(classifier: DiffMICClassifier, directory, image_shape: tuple[int, int, int],
                opset: int = 17) -> dict[str, Path]:
    """Write ``prior.onnx``, ``feature.onnx`` and ``denoiser.onnx`` (float32, dynamic batch) to ``directory``."""
    directory = Path(directory)
    dcg, denoiser = classifier.dcg, classifier.denoiser  # export_net exports float32 copies
    x = torch.zeros(2, *image_shape)
    e, y = torch.zeros(2, denoiser.lin2.in_features), torch.zeros(2, classifier.num_classes)
    paths = {name: directory / f"{name}.onnx" for name in GRAPHS}
    export_net(Prior(dcg), paths["prior"], {"x": x}, output="prior", opset=opset)
    export_net(_Feature(denoiser), paths["feature"], {"x": x}, output="e", opset=opset)
    export_net(denoiser, paths["denoiser"], {"e": e, "y_t": y, "prior": y, "t": torch.zeros(1, dtype=torch.long)},
               output="eps", static=("t",), opset=opset)
    return paths


class OnnxDiffMIC(nn.Module):
    """The predictor module of ``classifier`` with its networks on ONNX Runtime (CPU provider, or CUDA where
    present and asked for) and the chain in Python: images (N, C, H, W) -> {"probs", "uncertainty"}."""

    def __init__(self, paths: dict[str, Path], classifier: DiffMICClassifier, *, threads: int | None = None,
                 providers: list[str] | None = None):
        super().__init__()
        missing = [name for name in GRAPHS if not Path(paths.get(name, "")).is_file()]
        if missing:
            raise HarnessError(f"OnnxDiffMIC needs {', '.join(f'{m}.onnx' for m in GRAPHS)}; missing "
                               f"{', '.join(missing)} (write them with export_onnx)")
        self.sessions = {name: ort_session(paths[name], threads=threads, providers=providers) for name in GRAPHS}
        self.diffusion, self.steps = classifier.diffusion, classifier.steps
        self.ddim, self.eta, self.seed = classifier.ddim, classifier.eta, classifier.seed
        self.readout, self.votes = classifier.readout, classifier.votes
        self.temperature, self.uncertainty_chains = classifier.temperature, classifier.uncertainty_chains
        self.chains, self.num_classes = classifier.chains, classifier.num_classes

    @property
    def onnx_provider(self) -> str:
        return self.sessions["denoiser"].get_providers()[0]

    def _run(self, name: str, **inputs: np.ndarray) -> np.ndarray:
        return self.sessions[name].run(None, inputs)[0]

    def label_samples(self, x: torch.Tensor) -> torch.Tensor:
        n, s = x.shape[0], self.chains
        noise = chain_noise(x, self.seed, s, len(self.steps), self.num_classes)
        images = x.detach().float().cpu().contiguous().numpy()
        prior_np = np.repeat(self._run("prior", x=images), s, axis=0)
        e = np.repeat(self._run("feature", x=images), s, axis=0)

        def eps_fn(y: torch.Tensor, t: int) -> torch.Tensor:
            eps = self._run("denoiser", e=e, y_t=y.numpy().astype(np.float32), prior=prior_np,
                            t=np.array([t], dtype=np.int64))
            return torch.from_numpy(eps)

        prior = torch.from_numpy(prior_np)
        y0 = self.diffusion.sample(eps_fn, prior, self.steps, noise, ddim=self.ddim, eta=self.eta)
        return y0.view(n, s, -1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return readout(self.label_samples(x), self.readout, self.votes, self.temperature, self.uncertainty_chains)


def onnx_runtime(classifier: DiffMICClassifier, directory: Path | str, example: torch.Tensor, *,
                 threads: int | None = None) -> OnnxDiffMIC:
    """The predictor's ONNX Runtime form (``Predictor.onnx_runtime``): the three networks of ``classifier``
    exported to ``directory``, the chain over sessions; the latency step and ``harness bench`` time it."""
    return OnnxDiffMIC(export_onnx(classifier, directory, tuple(example.shape[1:])), classifier, threads=threads).eval()

