"""Neural building blocks shared by the image-diffusion methods (imports torch; plugins import it lazily).

- ``harness.toolkit.nn.schedules``: linear / cosine discrete beta schedules, the shifted-cosine log-SNR schedule.
- ``harness.toolkit.nn.diffusion``: forward noising, eps / x0 / v conversions, DDPM, DDIM, respacing,
  classifier-free and classifier guidance, min-SNR loss weights.
- ``harness.toolkit.nn.ema``: exponential moving average of weights.
- ``harness.toolkit.nn.unet``: a compact class-conditional UNet (null class; additive class embedding, an external
  class table, or one class token through cross-attention; attention levels by depth or by resolution).
- ``harness.toolkit.nn.wavelet``: the Haar wavelet input transform.
"""
