"""The image generators of IOIS and prototype-guided diffusion on torch and on ONNX Runtime (issue 17).

Each method's generator is a UNet called once per sampling step; ``plugins/iois/export.py`` and
``plugins/protodiff/export.py`` export it and drive the same loop over an ONNX Runtime session. This times a
full sampling chain of ``--images`` images with each runtime, the profile's networks (untrained weights: the
cost does not depend on them) at the data size, and checks that both give the same images:

- ``iois``: ``GuidedSampler`` at the profile's generator size, DDIM-``sample_steps``, guided by a ResNet-10-T
  classifier (its input gradient stays in torch on both rows), batch ``sample_batch``;
- ``protodiff``: ``model.sample`` with classifier-free guidance (the conditional and null passes as one batch),
  DDIM-``sample_steps``, batch 128.

    python benchmarks/bench_generators_onnx.py --threads 2              # cpu profiles, 28 px, 5 classes
    python benchmarks/bench_generators_onnx.py --profile smoke --images 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.registry import load_plugins
from harness.run.config import config_from_dict, resolve_method_config
from harness.toolkit import backbones


def _config(registry, name: str, cls, profile: str):
    return config_from_dict(cls, resolve_method_config(registry.get("methods", name), profile, {}))


def _timed(fn) -> tuple[float, np.ndarray]:
    fn()  # warm-up (also builds the sessions' kernels)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, np.asarray(out)


def iois(registry, args, tmp: Path) -> tuple[str, float, float, np.ndarray, np.ndarray]:
    from plugins.iois import IOISConfig
    from plugins.iois.export import onnx_sampler
    from plugins.iois.model import GuidanceView, GuidedSampler, build_generator, make_schedule

    config = _config(registry, "iois", IOISConfig, args.profile)
    net = build_generator(config, 3, args.classes, args.size).eval()
    size = config.gen_size or args.size
    sampler = GuidedSampler(net, make_schedule(config), size=size, channels=3, out_size=args.size,
                            steps=config.sample_steps, guidance=config.guidance, scale=config.guidance_scale,
                            conditional=config.conditional, prediction=config.gen_prediction,
                            batch_size=config.sample_batch)
    fast = onnx_sampler(sampler, tmp / "generator.onnx", threads=torch.get_num_threads())
    guide = GuidanceView(backbones.create(config.backbone, num_classes=args.classes, in_chans=3,
                                          image_size=args.size).model)
    labels = torch.arange(args.images) % args.classes
    t_torch, a = _timed(lambda: sampler.sample(labels, guide, torch.Generator().manual_seed(0)))
    t_onnx, b = _timed(lambda: fast.sample(labels, guide, torch.Generator().manual_seed(0)))
    what = (f"iois ({args.profile}): UNet {config.gen_channels} ch x {list(config.gen_channel_mult)} at {size} px, "
            f"DDIM-{config.sample_steps}, guided by {config.backbone}")
    return what, t_torch, t_onnx, a, b


def protodiff(registry, args, tmp: Path) -> tuple[str, float, float, np.ndarray, np.ndarray]:
    from plugins.protodiff.config import ProtoDiffConfig
    from plugins.protodiff.export import onnx_denoiser
    from plugins.protodiff.model import build_denoiser, sample

    config = _config(registry, "protodiff", ProtoDiffConfig, args.profile)
    table = torch.randn(args.classes, config.class_dim)
    net = build_denoiser(channels=3, size=args.size, num_classes=args.classes, config=config, table=table).eval()
    shape = (3, args.size, args.size)
    fast = onnx_denoiser(net, tmp / "denoiser.onnx", shape, threads=torch.get_num_threads())
    labels = np.arange(args.images) % args.classes
    kw = dict(shape=shape, guidance_scale=config.guidance_scale, steps=config.sample_steps, eta=config.eta, seed=0)
    t_torch, a = _timed(lambda: sample(net, labels, **kw))
    t_onnx, b = _timed(lambda: sample(fast, labels, **kw))
    what = (f"protodiff ({args.profile}): UNet {config.channels} ch x {list(config.channel_mult)} at {args.size} px, "
            f"CFG w = {config.guidance_scale}, DDIM-{config.sample_steps} (eta {config.eta})")
    return what, t_torch, t_onnx, a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu"))
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    registry = load_plugins().build_registry()
    print(f"{args.images} images, {args.classes} classes, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| generator | torch (images/s) | ONNX Runtime (images/s) | ORT / torch | uint8 pixels equal | max diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for bench in (iois, protodiff):
            what, t_torch, t_onnx, a, b = bench(registry, args, Path(tmp))
            diff = np.abs(a.astype(int) - b.astype(int))
            print(f"| {what} | {args.images / t_torch:.1f} | {args.images / t_onnx:.1f} | {t_torch / t_onnx:.2f}x | "
                  f"{(diff == 0).mean():.4f} | {diff.max()} |")


if __name__ == "__main__":
    main()
