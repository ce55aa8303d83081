"""Generation metrics that need no human expert: how close a synthetic image set is to a real one.

All three are computed in one fixed feature space, so that every generator of a dataset is measured with the
same ruler (:class:`FeatureEncoder`):

- **Frechet distance** (Heusel et al. 2017, Eq. 6, "FID" with Inception features): with the feature means
  mu_r, mu_g and covariances S_r, S_g of the real and generated sets,
  ``FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. 0 for identical sets.
- **Precision and recall with k-NN manifolds** (Kynkaanniemi et al. 2019, Sec. 3): the real manifold is the
  union of balls around each real feature with radius its distance to its k-th nearest real neighbour
  (k = 3 in the paper); precision is the fraction of generated features inside it, recall the fraction of
  real features inside the generated manifold built the same way. Both are 1 for identical sets.

The feature space: Inception-v3's ImageNet features cannot be downloaded here and describe natural images.
The default :class:`FeatureEncoder` is a randomly initialised ResNet-18 with a fixed seed (Naeem et al. 2020,
"Reliable Fidelity and Diversity Metrics for Generative Models", Sec. 5, show that randomly initialised
embeddings rank generators sensibly on non-ImageNet domains): no training, identical for every generator,
dataset and run, and described by :meth:`FeatureEncoder.describe` so results record what measured them.
Small real sets (a class with a few validation images) make the covariance rank-deficient: the distance is
still defined but biased upwards; compare generators on the same real set and sample count only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import HarnessError

__all__ = ["FeatureEncoder", "frechet_distance", "generation_report", "knn_precision_recall"]


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D) (Heusel et al. 2017).

    The trace of the matrix square root is computed exactly without ``scipy.linalg.sqrtm``: with the centred
    features A (N, D) and B (M, D), S_r = A^T A / (N - 1) and S_g = B^T B / (M - 1), the non-zero eigenvalues
    of S_r S_g are the squared singular values of A B^T / sqrt((N - 1)(M - 1)), so
    Tr (S_r S_g)^(1/2) is that matrix's nuclear norm (an N x M problem, and defined when the covariances
    are singular, as they are when a set has fewer features than dimensions). When both sets are larger than
    D it is Tr (S_r^(1/2) S_g S_r^(1/2))^(1/2) from two symmetric eigendecompositions (D x D).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise HarnessError(f"frechet_distance needs two (N, D) feature arrays of the same D; found {real.shape} "
                           f"and {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise HarnessError(f"frechet_distance needs at least 2 features per set; found {len(real)} and {len(fake)}")
    mu_r, mu_g = real.mean(0), fake.mean(0)
    a, b = real - mu_r, fake - mu_g
    n, m, d = len(a), len(b), a.shape[1]
    trace_r, trace_g = (a**2).sum() / (n - 1), (b**2).sum() / (m - 1)
    if min(n, m) <= d:
        trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    else:
        s_r, s_g = a.T @ a / (n - 1), b.T @ b / (m - 1)
        w, v = np.linalg.eigh(s_r)
        root_r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root_r @ s_g @ root_r), 0, None)).sum()
    value = float(((mu_r - mu_g) ** 2).sum() + trace_r + trace_g - 2.0 * trace_sqrt)
    return max(value, 0.0)  # rounding can leave a tiny negative for identical sets


def _kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each feature to its k-th nearest neighbour in the same set (itself excluded)."""
    d = _distances(features, features)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b)  # computed from differences: exactly 0 between identical features


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` with k-NN manifolds (Kynkaanniemi et al. 2019, Eqs. 1-2).

    A sample is inside a manifold when its distance to some member is at most that member's k-th-neighbour
    radius. Each set needs more than ``k`` features.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise HarnessError(f"k-NN precision/recall with k={k} needs more than {k} features per set; found "
                           f"{len(real)} real and {len(fake)} generated")
    radii_r, radii_g = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    d = _distances(fake, real)  # (M, N)
    precision = float((d <= radii_r[None, :]).any(axis=1).mean())
    recall = float((d.T <= radii_g[None, :]).any(axis=1).mean())
    return precision, recall


class FeatureEncoder:
    """A fixed feature extractor: uint8 (N, H, W, C) images -> (N, D) float features.

    ``FeatureEncoder(channels)`` is a ResNet-18 (timm, the small-image stem at 64 px or less) initialised with
    ``seed`` and used in eval mode on images scaled to [-1, 1]: global-average-pooled 512-d features. The
    same seed gives bit-identical weights on every machine with the same torch version.
    """

    def __init__(self, channels: int, image_size: int, *, backbone: str = "resnet18", seed: int = 0,
                 device: str = "cpu", batch_size: int = 128):
        import torch

        from harness.toolkit import backbones

        self.channels, self.image_size, self.backbone, self.seed = channels, image_size, backbone, seed
        self.device, self.batch_size = device, batch_size
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            net = backbones.create(backbone, num_classes=0, in_chans=channels, image_size=image_size)
        finally:
            torch.random.set_rng_state(state)
        self.model = net.model.to(device).eval()

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "init": "random", "seed": self.seed, "features": self.dim,
                "input": "images scaled to [-1, 1], eval mode, global average pooling"}

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        import torch

        from harness.contract.specs import normalise

        images = np.asarray(images_u8)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != self.channels:
            raise HarnessError(f"FeatureEncoder expects uint8 (N, H, W, {self.channels}) images; found "
                               f"{images.dtype} {images.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(np.array(images[start : start + self.batch_size]))  # a writable copy
                x = normalise(batch.permute(0, 3, 1, 2).to(self.device), (0.5,), (0.5,))
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _set_metrics(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, Any]:
    row: dict[str, Any] = {"n_real": int(len(real)), "n_fake": int(len(fake)), "fd": None, "precision": None,
                           "recall": None}
    if min(len(real), len(fake)) >= 2:
        row["fd"] = frechet_distance(real, fake)
    if min(len(real), len(fake)) > k:
        row["precision"], row["recall"] = knn_precision_recall(real, fake, k)
    return row


def generation_report(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                      classes: tuple[str, ...] | list[str], k: int = 3) -> dict[str, Any]:
    """Frechet distance and k-NN precision / recall of generated features against real ones: ``overall``
    (the pooled sets), ``per_class`` ({class name: ...}, each class's real against its generated images) and
    ``class_mean`` (the mean over the classes where a value could be computed). A set too small for a
    metric (fewer than 2 features for the distance, k or fewer for precision / recall) gets ``None``."""
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    per_class = {name: _set_metrics(real[real_labels == c], fake[fake_labels == c], k)
                 for c, name in enumerate(classes)}
    mean = {}
    for key in ("fd", "precision", "recall"):
        values = [row[key] for row in per_class.values() if row[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
    return {"k": k, "overall": _set_metrics(real, fake, k), "class_mean": mean, "per_class": per_class}
