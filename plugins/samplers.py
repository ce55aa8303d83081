"""Built-in training-batch samplers: the order (and multiplicity) of training indices in one epoch.

- ``uniform``: every training image once per epoch, shuffled (instance-balanced).
- ``balanced``: class-balanced; each draw picks a class uniformly, then an image of it (with
  replacement), so every class is seen equally often; the epoch has as many draws as images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import SamplerSpec, hookimpl


def class_probabilities(labels: np.ndarray, power: float) -> np.ndarray:
    """Per-image sampling probability such that class c is drawn with probability ∝ n_c ** power.

    power = 1: instance-balanced; power = 0: class-balanced; power = 0.5: square-root.
    """
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_weight = counts.astype(np.float64) ** power
    class_weight /= class_weight.sum()
    per_image = class_weight[inverse] / counts[inverse]
    return per_image / per_image.sum()


@dataclass
class UniformSampler:
    labels: np.ndarray

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(self.labels))


@dataclass
class PowerSampler:
    """Draws with replacement with class probabilities ∝ n_c ** power (see ``class_probabilities``)."""

    labels: np.ndarray
    power: float

    def __post_init__(self):
        self.p = class_probabilities(self.labels, self.power)

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.labels), size=len(self.labels), replace=True, p=self.p)


def uniform(labels: np.ndarray) -> UniformSampler:
    return UniformSampler(np.asarray(labels))


def balanced(labels: np.ndarray) -> PowerSampler:
    return PowerSampler(np.asarray(labels), power=0.0)


@hookimpl
def register_samplers(register):
    register(SamplerSpec("uniform", "Every image once per epoch, shuffled (instance-balanced)", uniform,
                         "standard"))
    register(SamplerSpec("balanced", "Class-balanced: every class drawn equally often", balanced,
                         "Kang et al. 2020, class-balanced sampling"))
