"""A complete third-party harness plugin: ``nearest-centroid``, a nearest-class-mean classifier.

Install it next to harness (``pip install -e examples/harness-example-plugin``) and it shows in
``harness list methods`` and runs like a built-in: ``harness run --methods nearest-centroid``.
"""

from dataclasses import dataclass

from harness import MethodSpec, hookimpl

__version__ = "0.1.0"


@dataclass(frozen=True)
class Config:
    temperature: float = 10.0  # softmax temperature over negative squared distances


def fit(data, config, ctx):
    import torch

    from harness import Predictor

    x = torch.from_numpy(data.train.images).float().div(255).flatten(1)
    y = torch.from_numpy(data.train.labels)
    x = (x - 0.5) / 0.5  # the same normalisation the predictor applies (mean 0.5, std 0.5)
    centroids = torch.stack([x[y == c].mean(0) if (y == c).any() else torch.zeros(x.shape[1])
                             for c in range(data.num_classes)])

    class NearestCentroid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("centroids", centroids)

        def forward(self, images):
            d = torch.cdist(images.flatten(1), self.centroids) ** 2 / images[0].numel()
            return torch.softmax(-config.temperature * d, dim=1)

    return Predictor(NearestCentroid(), mean=(0.5,), std=(0.5,), device="cpu")


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="nearest-centroid",
        description="Nearest class mean in pixel space (example plugin)",
        paper="textbook",
        config=Config,
        fit=fit,
        profiles={"smoke": {}, "cpu": {}, "paper": {}},
        search_space={"temperature": ("loguniform", 1.0, 100.0)},
        uses_sampler=False,
    ))
