"""One sampler step of each diffusion method's shared block (issue 17, item 3), built from the toolkit
(``harness.toolkit.nn``) only, with one torch thread and fixed sizes (stated per benchmark):

- a DDIM step of the toolkit's class-conditional UNet (the network of cfg-diff / protodiff / IOIS / the
  diffusion classifier; ``ddim_step``, eta = 0) on 8 images of 3 x 28 x 28, linear schedule of 1000 steps;
- DiffMIC's ``prior_ancestral_step`` (CARD's reverse step around the prior) on 64 label vectors of 5 classes,
  with the y0 estimate (``prior_eps_to_y0``); DiffMIC's denoiser is the plugin's own network, not a toolkit
  block, so it is not in this figure;
- the diffusion classifier's per-class error on one image: the UNet on the noised image once per class
  (5 classes, one timestep), v-prediction turned into eps and the squared error per class, i.e.
  ``DiffusionClassifier.class_errors`` (plugins/diffclf) over the toolkit UNet and its shifted-cosine schedule.
"""

from __future__ import annotations

import pytest

K = 5  # classes, as RetinaMNIST


@pytest.fixture(scope="module")
def unet():
    import torch

    from harness.toolkit.nn.unet import UNet

    torch.manual_seed(0)
    return UNet(3, channels=32, channel_mult=(1, 2, 2), num_classes=K, image_size=28).eval()


def test_ddim_step_unet(benchmark, unet):
    import torch

    from harness.toolkit.nn.diffusion import ddim_step
    from harness.toolkit.nn.schedules import DiscreteSchedule

    benchmark.group = "diffusion: one sampler step"
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, 28, 28, generator=g)
    y = torch.arange(8) % K
    schedule = DiscreteSchedule.make("linear", 1000)
    t, s = torch.tensor(500), torch.tensor(480)
    (a_t, s_t), (a_s, s_s) = schedule.alpha_sigma(t), schedule.alpha_sigma(s)

    def step():
        with torch.inference_mode():
            eps = unet(z, t.float().expand(8), y)
            return ddim_step(z, eps, a_t, s_t, a_s, s_s)

    out = benchmark.pedantic(step, rounds=20, warmup_rounds=2, iterations=1)
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_diffmic_prior_ancestral_step(benchmark):
    import torch

    from harness.toolkit.nn.diffusion import prior_ancestral_step, prior_eps_to_y0
    from harness.toolkit.nn.schedules import DiscreteSchedule

    benchmark.group = "diffusion: one sampler step"
    g = torch.Generator().manual_seed(0)
    y_t, eps, noise = (torch.randn(64, K, generator=g) for _ in range(3))
    prior = torch.softmax(torch.randn(64, K, generator=g), dim=1)
    schedule = DiscreteSchedule.make("linear", 1000)
    (a_t, s_t), (a_s, s_s) = schedule.alpha_sigma(torch.tensor(500)), schedule.alpha_sigma(torch.tensor(499))

    def step():
        y0 = prior_eps_to_y0(y_t, eps, prior, a_t, s_t)
        return prior_ancestral_step(y_t, y0, prior, a_t, s_t, a_s, s_s, noise=noise)

    out = benchmark(step)
    assert out.shape == y_t.shape and torch.isfinite(out).all()


def test_diffclf_per_class_error_one_image(benchmark, unet):
    import torch

    from plugins.diffclf.model import DiffusionClassifier

    benchmark.group = "diffusion: one sampler step"
    clf = DiffusionClassifier(unet, K, votes=1).eval()  # the toolkit UNet, ShiftedCosineLogSNR, v-prediction
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 3, 28, 28, generator=g)
    t = torch.rand(1, 1, generator=g)
    noise = torch.randn(1, 1, 3, 28, 28, generator=g)
    classes = torch.arange(K)[None]

    def errors():
        with torch.inference_mode():
            return clf.class_errors(x0, t, noise, classes)

    out = benchmark.pedantic(errors, rounds=20, warmup_rounds=2, iterations=1)
    assert out.shape == (1, 1, K) and torch.isfinite(out).all()
