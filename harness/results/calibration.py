"""Is the primary test calibrated? Simulated comparisons of two methods with a known truth.

Each simulated comparison draws a fresh test set and trains (simulates) two methods with S seeds each:

- N test images, labels from an imbalanced prior over K classes; each image has a difficulty ``z_n ~
  N(0, 1)`` shared by every model (so the two methods' errors are correlated, as real models' are);
- each method has its own affinity for each image, ``a_mn ~ N(0, sigma_a^2)``, the same for all its
  seeds (what a method happens to be good at: it makes the *test set* a source of variation, since a
  test set can favour one method by chance);
- each seed moves its model's quality by ``u_ms ~ N(0, sigma_u^2)`` (the *training seed* as a source of
  variation), and each prediction has its own noise ``e ~ N(0, 1)``;
- a prediction is right when ``beta_m - z_n + a_mn + u_ms + e > 0`` and otherwise a uniformly drawn
  wrong class.

Under the null hypothesis both methods have the same ``beta`` (their distributions over test sets and
seeds are identical, so the expected difference is zero); a known gap raises ``beta`` for method a.
``calibrate`` counts how often each test rejects at ``alpha``: the primary test (``two_level_bootstrap``,
seed level ``t``), the textbook two-level bootstrap (seed level ``resample``), the bootstrap over test
images alone (the pre-issue-15 primary test) and the paired t-test over seeds. The fast version runs in
``tests/test_stats.py``, the full one in ``benchmarks/calibrate_stats.py`` (figures in docs/reports.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.results.stats import (
    ALPHA,
    PairedSet,
    image_replicates,
    paired_seed_ttest,
    per_seed_differences,
    seed_level_tail,
    two_level_bootstrap,
)

TESTS = ("two_level", "two_level_resample", "images_only", "seed_ttest")


@dataclass(frozen=True)
class Scenario:
    """A simulated world: where the variation comes from."""

    name: str
    sigma_seed: float  # sigma_u: how much a training seed moves a model's quality (logit units)
    sigma_image: float  # sigma_a: how much a method's affinity for an image varies (the test-set effect)
    images: int = 300
    classes: int = 3
    seeds: int = 3
    beta: float = 0.8  # the shared quality (logit units): about 0.6 accuracy


SCENARIOS = (
    Scenario("seeds dominate", sigma_seed=0.3, sigma_image=0.3),
    Scenario("balanced", sigma_seed=0.12, sigma_image=0.6),
    Scenario("test images dominate", sigma_seed=0.0, sigma_image=0.8),
)


def simulate(scenario: Scenario, rng: np.random.Generator, gap: float = 0.0) -> list[PairedSet]:
    """One comparison: S paired seeds of method a (quality ``beta + gap``) against method b (``beta``)."""
    k, n = scenario.classes, scenario.images
    prior = np.linspace(2.0, 1.0, k)
    labels = rng.choice(k, n, p=prior / prior.sum())
    difficulty = rng.normal(size=n)
    preds = []
    for beta in (scenario.beta + gap, scenario.beta):
        affinity = rng.normal(0.0, scenario.sigma_image, n)
        seeds = []
        for _ in range(scenario.seeds):
            margin = beta - difficulty + affinity + rng.normal(0.0, scenario.sigma_seed) + rng.normal(size=n)
            wrong = (labels + rng.integers(1, k, n)) % k
            seeds.append(np.where(margin > 0, labels, wrong))
        preds.append(seeds)
    return [PairedSet(labels, a, b) for a, b in zip(*preds)]


def p_values(sets: list[PairedSet], num_classes: int, *, replicates: int, seed: int) -> dict[str, float]:
    """Each test's two-sided p-value of the Macro-F1 difference on one simulated comparison."""
    primary = two_level_bootstrap(sets, num_classes, replicates=replicates, seed=seed)["macro_f1"]
    textbook = two_level_bootstrap(sets, num_classes, replicates=replicates, seed=seed,
                                   seed_level="resample")["macro_f1"]
    reps = image_replicates(sets, num_classes, ("macro_f1",), replicates=replicates,
                            rng=np.random.default_rng(seed))["macro_f1"]
    d = float(per_seed_differences(sets, num_classes, "macro_f1").mean())
    images_only = (1 + replicates * seed_level_tail(reps.mean(axis=1) - d, d, 0.0, 0)) / (replicates + 1)
    seed_t = paired_seed_ttest(sets, num_classes)["p_value"]
    return {"two_level": primary["p_value"], "two_level_resample": textbook["p_value"],
            "images_only": float(images_only), "seed_ttest": 1.0 if seed_t is None else seed_t}


def calibrate(scenario: Scenario, *, comparisons: int, gap: float = 0.0, replicates: int = 500, seed: int = 0,
              alpha: float = ALPHA) -> dict[str, object]:
    """Share of ``comparisons`` simulated comparisons each test rejects at ``alpha``, with its Monte-Carlo
    standard error, and the mean observed Macro-F1 difference. With ``gap=0`` the shares are false-positive
    rates; with a gap, power."""
    rng = np.random.default_rng(seed)
    rejected = {name: 0 for name in TESTS}
    diffs = []
    for i in range(comparisons):
        sets = simulate(scenario, rng, gap)
        diffs.append(float(per_seed_differences(sets, scenario.classes, "macro_f1").mean()))
        for name, p in p_values(sets, scenario.classes, replicates=replicates, seed=seed * 100_003 + i).items():
            rejected[name] += p < alpha
    rates = {name: count / comparisons for name, count in rejected.items()}
    return {"scenario": scenario.name, "gap": gap, "comparisons": comparisons, "replicates": replicates,
            "rates": rates,
            "mc_se": {name: math.sqrt(max(r, alpha) * (1 - max(r, alpha)) / comparisons) for name, r in rates.items()},
            "mean_diff": float(np.mean(diffs)), "sd_diff": float(np.std(diffs, ddof=1))}
