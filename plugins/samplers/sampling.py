"""The samplers' implementations: which training indices (and how often) one epoch draws.

- ``uniform``: every training image once per epoch, shuffled (instance-balanced).
- ``balanced``: class-balanced; each draw picks a class uniformly, then an image of it (with
  replacement), so every class is seen equally often; the epoch has as many draws as images.
- ``sqrt`` (square-root sampling, Mahajan et al., ECCV 2018; "Sqrt-RS" in IOIS): class c is drawn with
  probability ∝ sqrt(n_c), then an image of it uniformly, with replacement.
- ``progressive`` (progressively-balanced sampling, Kang et al., ICLR 2020; "PG-RS" in IOIS): at epoch t
  of T, class c is drawn with probability p_c(t) = (1 - t/T) p_c^IB + (t/T) p_c^CB, where p_c^IB = n_c / N
  (instance-balanced) and p_c^CB = 1 / C (class-balanced); epoch 0 is instance-balanced.

Each re-balancing epoch has as many draws as there are training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError


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


def progressive_weight(epoch: int, num_epochs: int) -> float:
    """t / T, the class-balanced share at ``epoch`` (0-based) of ``num_epochs``."""
    if num_epochs <= 0 or not 0 <= epoch < num_epochs:
        raise HarnessError(f"progressive sampler: epoch must be in [0, num_epochs); found {epoch} of {num_epochs}")
    return epoch / num_epochs


@dataclass
class ProgressiveSampler:
    """Per-image probabilities that move from instance-balanced to class-balanced over the epochs."""

    labels: np.ndarray

    def __post_init__(self):
        self.p_instance = class_probabilities(self.labels, 1.0)
        self.p_class = class_probabilities(self.labels, 0.0)

    def probabilities(self, epoch: int, num_epochs: int) -> np.ndarray:
        # The per-image probability is p_c / n_c, linear in p_c: mixing per-image vectors mixes the classes.
        share = progressive_weight(epoch, num_epochs)
        return (1.0 - share) * self.p_instance + share * self.p_class

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray:
        p = self.probabilities(epoch, num_epochs)
        return rng.choice(len(self.labels), size=len(self.labels), replace=True, p=p)


def sqrt(labels: np.ndarray) -> PowerSampler:
    return PowerSampler(np.asarray(labels), power=0.5)


def progressive(labels: np.ndarray) -> ProgressiveSampler:
    return ProgressiveSampler(np.asarray(labels))
