"""``diffclf``: the decision rules, batching, pruning, a denoiser with known errors, and training on smoke data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import HarnessError
from harness.toolkit.nn.schedules import alpha_sigma_from_logsnr
from plugins.diffclf import PROFILES, DiffClfConfig
from plugins.diffclf.explain import referral_curve
from plugins.diffclf.model import DiffusionClassifier, mean_rule_scores, stage_plan, vote_shares


class ClassMeanDenoiser(torch.nn.Module):
    """An eps-predictor that assumes x0 = means[y]: eps-hat = (z - alpha means[y]) / sigma.

    Its error for class c is ||alpha (x - means[c])||^2 / sigma^2 per trial, smallest for the nearest mean.
    Counts the rows (network evaluations) and calls it receives.
    """

    def __init__(self, means: torch.Tensor):
        super().__init__()
        self.means, self.rows, self.calls = means, 0, 0

    def forward(self, z, logsnr, y):
        self.rows += len(z)
        self.calls += 1
        alpha, sigma = alpha_sigma_from_logsnr(logsnr)
        return (z - alpha.view(-1, 1, 1, 1) * self.means[y]) / sigma.view(-1, 1, 1, 1)


def test_vote_and_mean_rule_disagree_on_a_constructed_error_matrix():
    # class 0 wins 3 of 5 trials narrowly; class 1 wins 2 trials by a wide margin -> lower mean error
    errors = torch.tensor([[[1.0, 1.1], [1.0, 1.1], [1.0, 1.1], [5.0, 1.0], [5.0, 1.0]]])
    assert torch.allclose(vote_shares(errors), torch.tensor([[0.6, 0.4]]))
    assert mean_rule_scores(errors).argmin(1).item() == 1
    for rule, expected in (("vote", 0), ("mean", 1)):
        clf = DiffusionClassifier(torch.nn.Identity(), 2, votes=5, rule=rule)
        clf.errors = lambda x: (errors, torch.tensor([[0, 1]]))
        out = clf(torch.zeros(1, 1, 2, 2))
        assert out["probs"].argmax(1).item() == expected
        assert torch.allclose(out["probs"].sum(1), torch.ones(1))
        assert out["uncertainty"].item() == pytest.approx(0.4)
        assert out["vote_entropy"].item() == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)), rel=1e-5)
    vote_probs = DiffusionClassifier(torch.nn.Identity(), 2, votes=5, rule="vote")
    vote_probs.errors = lambda x: (errors, torch.tensor([[0, 1]]))
    assert torch.allclose(vote_probs(torch.zeros(1, 1, 2, 2))["probs"], torch.tensor([[0.6, 0.4]]), atol=1e-4)


def _means(k: int, size: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(k, 1, size, size, generator=g) * 1.6 - 0.8


@pytest.mark.parametrize("rule", ["vote", "mean"])
def test_known_denoiser_gives_the_right_class(rule):
    means = _means(5)
    labels = torch.tensor([3, 0, 4, 1, 2, 3])
    x = means[labels] + 0.05 * torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    for stages, keep in (((), ()), ((4,), (2,))):
        clf = DiffusionClassifier(ClassMeanDenoiser(means), 5, votes=15, rule=rule, prediction="eps",
                                  prune_stages=stages, prune_keep=keep)
        out = clf(x)
        assert torch.equal(out["probs"].argmax(1), labels)
        assert torch.allclose(out["probs"].sum(1), torch.ones(6), atol=1e-6)


def test_network_evaluations_equal_classes_times_trials_and_fewer_with_pruning():
    means, b, k, n = _means(4), 3, 4, 9
    x = torch.randn(b, 1, 4, 4)
    net = ClassMeanDenoiser(means)
    DiffusionClassifier(net, k, votes=n, prediction="eps", max_rows=1000)(x)
    assert net.rows == b * k * n and net.calls == 1  # one batched call for all images, classes and trials
    net = ClassMeanDenoiser(means)
    DiffusionClassifier(net, k, votes=n, prediction="eps", max_rows=24)(x)
    assert net.rows == b * k * n and net.calls == int(np.ceil(n / 2))  # 2 trials (24 rows) per call
    net = ClassMeanDenoiser(means)
    DiffusionClassifier(net, k, votes=n, prediction="eps", max_rows=10)(x)
    assert net.rows == b * k * n and net.calls == n * 2  # one trial is 12 rows: split in two calls
    net = ClassMeanDenoiser(means)
    DiffusionClassifier(net, k, votes=n, prediction="eps", prune_stages=(2, 5), prune_keep=(3, 1))(x)
    assert net.rows == b * (k * 2 + 3 * 3 + 1 * 4)
    assert stage_plan(9, 4, (2, 5), (3, 1)) == [(2, 4), (3, 3), (4, 1)]
    with pytest.raises(HarnessError):
        stage_plan(9, 4, (5, 2), (3, 1))
    with pytest.raises(HarnessError):
        stage_plan(9, 4, (2,), (3, 1))


def test_trials_share_the_noise_across_classes():
    means = torch.zeros(3, 1, 4, 4)  # identical class means: identical errors iff the noise is shared
    clf = DiffusionClassifier(ClassMeanDenoiser(means), 3, votes=6, prediction="eps")
    errors, active = clf.errors(torch.randn(2, 1, 4, 4))
    assert errors.shape == (2, 6, 3) and torch.equal(active, torch.tensor([[0, 1, 2]] * 2))
    assert torch.allclose(errors, errors[:, :, :1].expand_as(errors))
    assert not torch.allclose(errors[:, 0], errors[:, 1])  # but trials differ


def test_referral_curve_keeps_the_most_certain():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])  # the third is wrong and most uncertain
    rows = referral_curve(labels, probs, np.array([0.1, 0.2, 0.4, 0.3]), np.zeros(4), fractions=(0.0, 0.25))
    assert rows[0]["accuracy"] == pytest.approx(0.75) and rows[1] == {"fraction_referred": 0.25, "n_kept": 3,
                                                                      "accuracy": 1.0}


@pytest.fixture
def one_thread():
    """One torch thread, as the trial context says (two threads on a loaded 2-core machine are far slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_loss_falls_on_synthetic_smoke_and_predictor_contract(tmp_path, one_thread):
    from harness.contract.specs import DatasetRequest, TrialContext
    from harness.run.runner import cached_plugins, scorer
    from plugins.diffclf.train import fit

    _, registry = cached_plugins((), ())
    spec = registry.get("datasets", "synthetic")
    options = dataclasses.replace(spec.options(**spec.profiles.get("smoke", {})), size=16)
    data = spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=tmp_path))
    config = dataclasses.replace(DiffClfConfig(**PROFILES["smoke"]), epochs=4, eval_every=4, cf_steps=2)
    history: list[dict] = []
    ctx = TrialContext(seed=0, device="cpu", threads=1, trial_dir=tmp_path, reporter=lambda **m: history.append(m),
                       sampler_factory=registry.get("samplers", "uniform").build_fn(), profile="smoke",
                       scorer=scorer(registry))
    predictor = fit(data, config, ctx)
    losses = [h["loss"] for h in history]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    assert "val_macro_f1" in history[-1] and not predictor.exportable
    images, labels = data.test.images[:14], data.test.labels[:14]
    out = predictor.predict(images)
    assert out["probs"].shape == (14, data.num_classes)
    assert np.allclose(out["probs"].sum(1), 1.0, atol=1e-5)
    assert np.all((out["uncertainty"] >= 0) & (out["uncertainty"] <= 1 - 1 / config.votes + 1e-6))
    paths = [Path(p) for p in predictor.explain(images, labels, tmp_path / "artefacts")]
    names = {p.name for p in paths}
    assert {"referral.csv", "referral.png"} <= names and any(n.startswith("cf_") for n in names)
    assert all(p.exists() for p in paths)
