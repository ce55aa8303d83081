"""``synthetic``: procedurally generated dermoscopy-like images, the default dataset of ``harness run``.

Each image is a skin-toned background with low-frequency texture and pores, and one lesion whose
shape (size, elongation, border irregularity, border sharpness), colour, colour variegation and
internal texture depend on its class. Every class parameter is drawn per image around the class's
prototype with a spread wide enough that classes overlap: a good model lands clearly below 100%, a
weak one clearly above chance. ``separation`` scales the distance between prototypes (``3`` gives an
easily separable variant for tests). Seven classes, imbalanced like HAM10000 (largest : smallest = 30 : 1).
Deterministic for ``seed``; any resolution; thousands of images per second. Image ids are content
hashes (the first 16 hex digits of the SHA-1 of each image's pixels); ``train_per_class`` /
``test_per_class`` draw a fixed number per class as for every built-in dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import DatasetSpec, hookimpl
from harness.toolkit.data import PerClassOptions

CLASSES = ("naevus", "melanoma", "keratosis", "basal-cell", "actinic", "vascular", "dermatofibroma")
# Relative class frequencies (HAM10000-like order of magnitude; 30 : 1 largest to smallest).
FREQUENCIES = np.array([30.0, 5.0, 5.0, 2.5, 1.6, 1.2, 1.0])

# Per-class prototype: colour 1, colour 2 (RGB in [0, 1]), radius, elongation, irregularity,
# variegation, texture amplitude, texture frequency (cycles per image), border blur.
PROTOTYPES = {
    "c1": np.array([[.45, .30, .20], [.24, .14, .12], [.55, .42, .30], [.78, .52, .52], [.74, .46, .40],
                    [.62, .16, .26], [.60, .45, .35]]),
    "c2": np.array([[.55, .38, .26], [.42, .36, .48], [.38, .28, .20], [.58, .34, .40], [.66, .52, .46],
                    [.42, .10, .30], [.80, .70, .60]]),
    "radius": np.array([.24, .30, .28, .22, .26, .18, .20]),
    "elongation": np.array([.08, .22, .18, .14, .28, .08, .10]),
    "irregularity": np.array([.04, .22, .12, .10, .16, .05, .07]),
    "variegation": np.array([.15, .70, .35, .40, .30, .30, .25]),
    "texture": np.array([.02, .12, .20, .10, .14, .04, .08]),
    "frequency": np.array([3.0, 5.0, 9.0, 7.0, 11.0, 4.0, 6.0]),
    "blur": np.array([.05, .02, .03, .04, .05, .03, .06]),
}
SPREAD = {"c1": .06, "c2": .07, "radius": .04, "elongation": .07, "irregularity": .05, "variegation": .15,
          "texture": .05, "frequency": 2.0, "blur": .015}


@dataclass(frozen=True)
class SyntheticOptions(PerClassOptions):
    size: int = 28
    n_train: int = 500
    n_val: int = 150
    n_test: int = 300
    seed: int = 0  # generation seed (fixed across trial seeds, so every method sees the same images)
    separation: float = 1.0  # distance between class prototypes relative to the default


def class_counts(n: int) -> np.ndarray:
    """Images per class for a split of n images: proportional to FREQUENCIES, at least one each."""
    raw = FREQUENCIES / FREQUENCIES.sum() * n
    counts = np.maximum(np.floor(raw).astype(int), 1)
    while counts.sum() < n:
        counts[np.argmax(raw - counts)] += 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    return counts


def _noise_field(rng, n, grid_x, grid_y, waves=4, low=1.0, high=4.0):
    """A smooth random field per image: a sum of sinusoids, roughly in [-1, 1]. Shape (n, H, W)."""
    angle = rng.uniform(0, np.pi, (n, waves, 1, 1))
    freq = rng.uniform(low, high, (n, waves, 1, 1)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, (n, waves, 1, 1))
    proj = grid_x * np.cos(angle) + grid_y * np.sin(angle)
    return np.sin(freq * proj + phase).sum(1) / np.sqrt(waves / 2)


def _noise_field_scaled(rng, n, grid_x, grid_y, freq, waves=6):
    """Like _noise_field, with a per-image frequency (cycles per image) of shape (n, 1, 1, 1)."""
    angle = rng.uniform(0, np.pi, (n, waves, 1, 1))
    scale = freq * rng.uniform(0.8, 1.25, (n, waves, 1, 1)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, (n, waves, 1, 1))
    proj = grid_x * np.cos(angle) + grid_y * np.sin(angle)
    return np.sin(scale * proj + phase).sum(1) / np.sqrt(waves / 2)


def generate(labels: np.ndarray, size: int, rng: np.random.Generator, separation: float = 1.0) -> np.ndarray:
    """uint8 (N, size, size, 3) images for the given labels."""
    n = len(labels)
    coords = (np.arange(size) + 0.5) / size
    grid_y, grid_x = np.meshgrid(coords, coords, indexing="ij")
    params = {}
    for key, table in PROTOTYPES.items():
        centre = table.mean(0)
        proto = centre + separation * (table - centre)
        noise = rng.normal(0, SPREAD[key], proto[labels].shape)
        if noise.ndim == 2:  # colours: mostly a shared brightness change, a little hue
            noise = 0.8 * noise.mean(1, keepdims=True) + 0.35 * noise
        params[key] = proto[labels] + noise

    # Background: skin tone with smooth shading and fine pores.
    skin = np.array([.86, .66, .56]) + rng.normal(0, .05, (n, 3))
    shade = _noise_field(rng, n, grid_x, grid_y, low=.5, high=2.0)[..., None] * .04
    pores = rng.normal(0, .025, (n, size, size, 1))
    background = skin[:, None, None, :] * (1 + shade) + pores

    # Lesion shape: an irregular, elongated blob.
    cx = .5 + rng.normal(0, .06, (n, 1, 1))
    cy = .5 + rng.normal(0, .06, (n, 1, 1))
    tilt = rng.uniform(0, np.pi, (n, 1, 1))
    dx, dy = grid_x - cx, grid_y - cy
    u = dx * np.cos(tilt) + dy * np.sin(tilt)
    v = -dx * np.sin(tilt) + dy * np.cos(tilt)
    elong = np.clip(params["elongation"], 0, .6)[:, None, None]
    rho = np.sqrt((u * (1 - elong)) ** 2 + (v * (1 + elong)) ** 2)
    theta = np.arctan2(v, u)
    harmonics = np.arange(2, 8)
    amp = rng.normal(0, 1, (n, len(harmonics))) / harmonics
    phase = rng.uniform(0, 2 * np.pi, (n, len(harmonics)))
    wobble = np.einsum("nk,nkhw->nhw", amp,
                       np.cos(harmonics[None, :, None, None] * theta[:, None] + phase[..., None, None]))
    irregular = np.clip(params["irregularity"], 0, .5)[:, None, None]
    radius = np.clip(params["radius"], .08, .42)[:, None, None] * (1 + irregular * wobble)
    blur = np.clip(params["blur"], .005, .1)[:, None, None]
    mask = 1 / (1 + np.exp(-(radius - rho) / blur))

    # Lesion colour: two colours mixed through a smooth field (variegation), plus a directional texture.
    mix_field = _noise_field(rng, n, grid_x, grid_y, low=2.0, high=6.0)
    variegation = np.clip(params["variegation"], 0, 1.2)[:, None, None]
    mix = 1 / (1 + np.exp(-3 * variegation * mix_field))[..., None]
    c1 = np.clip(params["c1"], 0, 1)[:, None, None, :]
    c2 = np.clip(params["c2"], 0, 1)[:, None, None, :]
    lesion = c1 * (1 - mix) + c2 * mix
    freq = np.clip(params["frequency"], 1, 16)[:, None, None, None]
    pattern = _noise_field_scaled(rng, n, grid_x, grid_y, freq)
    texture = np.clip(params["texture"], 0, .4)[:, None, None] * pattern
    lesion = lesion * (1 + texture[..., None])  # a brightness pattern: network, globules, fissures

    image = background * (1 - mask[..., None]) + lesion * mask[..., None]
    image += rng.normal(0, .02, image.shape)
    return (np.clip(image, 0, 1) * 255 + .5).astype(np.uint8)


def make_split(n: int, size: int, rng: np.random.Generator, separation: float):
    from harness import Split

    labels = np.repeat(np.arange(len(CLASSES)), class_counts(n))
    labels = rng.permutation(labels)
    chunks = [generate(labels[i : i + 256], size, rng, separation) for i in range(0, n, 256)]
    return Split(np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8), labels.astype(np.int64))


def load(request):
    from dataclasses import replace

    from harness import DataSplits, HarnessError
    from harness.toolkit.data import announce, finish, take_per_class

    opt = request.options
    if opt.size < 8 or opt.size > 512:
        raise HarnessError(f"synthetic: size must be between 8 and 512 px; found {opt.size}")
    if min(opt.n_train, opt.n_val, opt.n_test) < len(CLASSES):
        raise HarnessError(f"synthetic: n_train, n_val and n_test must each be at least {len(CLASSES)} "
                           f"(one image per class); found {opt.n_train}, {opt.n_val}, {opt.n_test}")
    rng = np.random.default_rng([opt.seed, 20_231_001])
    splits = {name: make_split(n, opt.size, rng, opt.separation)
              for name, n in (("train", opt.n_train), ("val", opt.n_val), ("test", opt.n_test))}
    data, messages = take_per_class(DataSplits(**splits, classes=CLASSES, name="synthetic", protocol="official"), opt)
    # generated, not cached: ids (content hashes) and the fingerprint are computed from the arrays each load
    return announce(finish(replace(data, warnings=tuple(messages))))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="synthetic",
        description="Procedural dermoscopy-like lesions, 7 imbalanced classes (30:1), any size",
        load=load,
        classes=CLASSES,
        modality="synthetic dermoscopy",
        channels=3,
        source="generated by harness (plugins/datasets/synthetic.py)",
        license="public domain (generated)",
        obtain="Nothing to download: generated on the fly.",
        protocols=("official",),
        options=SyntheticOptions,
        # cpu: the default `harness run` trains all 21 methods on it within its 10-minute budget on two cores:
        # 16 px (a third of 28 px's convolutions; benchmarks/README.md, "The default run")
        profiles={"smoke": {"size": 16, "n_train": 140, "n_val": 70, "n_test": 140},
                  "cpu": {"size": 16, "n_train": 320, "n_val": 120}},
        needs_data_dir=False,
    ))
