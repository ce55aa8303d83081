"""Inference latency of DiffMIC (issue 6) next to ResNet-18, with random weights (latency does not depend
on them).

Two parts:

- ``grid``: ms per image at batch 1 and 64, T = 60 and 250, at the ``cpu`` width (512) and the ``paper``
  width (6144), with the ``cpu`` backbones (tiny CNNs) at 28 px, next to a ResNet-18 (small-image stem) at
  28 px; torch, and ONNX Runtime for the per-step networks with the chain in Python (``plugins/diffmic/export.py``).
- ``paper``: the paper's settings: 224 px, ResNet-50 DCG branches (global + 6 crops of 32 px), ResNet-18
  image encoder, width 6144, batch 32, T = 60 and 250, with the time split into DCG, image feature and
  the reverse chain, next to a ResNet-18 at 224 px. Target on a 2-core CPU: T = 60 <= 170 ms/image,
  T = 250 <= 400 ms/image.

One reverse chain per image (the paper's readout, no uncertainty chains), the truncated sampler, all
images of a batch denoised together, the image feature computed once per image.

    python benchmarks/bench_diffmic_latency.py                 # both parts, 2 threads
    python benchmarks/bench_diffmic_latency.py --part paper    # only the 224 px target
    python benchmarks/bench_diffmic_latency.py --part paper --threads 1 --clock process   # single-core CPU ms
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from functools import partial

import torch

from harness.toolkit import backbones
from plugins.diffmic import model as dm
from plugins.diffmic.export import OnnxDiffMIC, export_onnx

NUM_CLASSES = 7


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


DTYPE = torch.float32  # --dtype bfloat16: the predictor's weights in bfloat16 (the chain state stays float32)


def build(*, size: int, dcg: str, local: str, encoder: str, width: int, timesteps: int, crop_fraction: float):
    torch.manual_seed(0)
    model_dcg = dm.DCG(num_classes=NUM_CLASSES, in_chans=3, image_size=size, global_backbone=dcg,
                       local_backbone=local, pretrained=False, num_crops=6,
                       crop_size=max(1, round(crop_fraction * size)), crop_channels="first", attention_dim=128)
    enc = dm.Encoder(encoder, in_chans=3, image_size=size, pretrained=False)
    denoiser = dm.Denoiser(num_classes=NUM_CLASSES, feature_dim=width, timesteps=1000, encoder=enc)
    diffusion = dm.LabelDiffusion(1000, 1e-4, 0.02)
    return dm.DiffMICClassifier(model_dcg, denoiser, diffusion, test_timesteps=timesteps, uncertainty_chains=0,
                                channels_last=True, dtype=DTYPE).eval()


def resnet18(size: int):
    net = backbones.create("resnet18", num_classes=NUM_CLASSES, in_chans=3, image_size=size).model
    return net.eval().to(memory_format=torch.channels_last)


CLOCK = time.perf_counter  # --clock process: CPU time of this process (all its threads) instead of wall time


def ms_per_image(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        fn(x[:2] if len(x) > 2 else x)  # warm-up (kernel selection)
        times = []
        for _ in range(repeats):
            t0 = CLOCK()
            fn(x)
            times.append(CLOCK() - t0)
    return statistics.median(times) * 1000.0 / len(x)


def gemm_floor(batch: int, width: int, timesteps: int, repeats: int) -> float:
    """ms per image of the chain's two width x width GEMMs alone (T steps), measured now on this machine:
    what the chain would cost with zero overhead around its big matrix products."""
    a, w2, w3 = (torch.randn(batch, width, dtype=DTYPE), torch.randn(width, width, dtype=DTYPE),
                 torch.randn(width, width, dtype=DTYPE))
    a @ w2
    times = []
    for _ in range(max(repeats, 1)):
        t0 = CLOCK()
        for _ in range(timesteps):
            a @ w2
            a @ w3
        times.append(CLOCK() - t0)
    return statistics.median(times) * 1000.0 / batch


def grid(args) -> None:
    size = 28
    print(f"\n## grid: 28 px, cpu backbones (tinycnn), truncated chain, {torch.get_num_threads()} threads")
    print("| model | T | width | ms/image b1 | ms/image b64 | ONNX Runtime b1 | ONNX Runtime b64 |\n"
          "|---|---|---|---|---|---|---|")
    x64 = torch.randn(64, 3, size, size).contiguous(memory_format=torch.channels_last)
    net = resnet18(size)
    print(f"| ResNet-18 (28 px stem) | - | - | {ms_per_image(net, x64[:1], args.repeats * 3):.2f} | "
          f"{ms_per_image(net, x64, args.repeats):.2f} | | |", flush=True)
    for width in (512, 6144):
        for timesteps in args.timesteps:
            model = build(size=size, dcg="tinycnn", local="tinycnn", encoder="tinycnn", width=width,
                          timesteps=timesteps, crop_fraction=2 / 7)
            b1 = ms_per_image(model, x64[:1], args.repeats)
            b64 = ms_per_image(model, x64, args.repeats)
            with tempfile.TemporaryDirectory() as tmp:  # the per-step networks on ONNX Runtime, the chain in Python
                ort = OnnxDiffMIC(export_onnx(model, tmp, image_shape=(3, size, size)), model)
                ort_b1, ort_b64 = ms_per_image(ort, x64[:1], args.repeats), ms_per_image(ort, x64, args.repeats)
            print(f"| DiffMIC | {timesteps} | {width} | {b1:.2f} | {b64:.2f} | {ort_b1:.2f} | {ort_b64:.2f} |",
                  flush=True)


def step(denoiser, e, prior, y, t):
    return denoiser(e, y.to(DTYPE), prior, torch.full((1,), t))


def paper(args) -> None:
    size, batch = 224, args.batch
    print(f"\n## paper settings: 224 px, ResNet-50 DCG (global + 6 x 32 px crops), ResNet-18 encoder, width 6144, "
          f"batch {batch}, {torch.get_num_threads()} threads")
    print("| model | T | ms/image | DCG | image feature | chain | chain GEMM floor | target |\n"
          "|---|---|---|---|---|---|---|---|")
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    net = resnet18(size)
    print(f"| ResNet-18 (224 px) | - | {ms_per_image(net, x, args.repeats):.1f} | | | | | |", flush=True)
    targets = {60: 170.0, 250: 400.0}
    for timesteps in args.timesteps:
        model = build(size=size, dcg="resnet50", local="resnet50", encoder="resnet18", width=6144,
                      timesteps=timesteps, crop_fraction=32 / 224)
        total = ms_per_image(model, x, args.repeats)
        xd = x.to(DTYPE)
        dcg = ms_per_image(model.dcg, xd, 1)
        feature = ms_per_image(model.denoiser.image_feature, xd, 1)
        with torch.inference_mode():
            e = model.denoiser.image_feature(xd)
            prior = torch.softmax(model.dcg.fused_logits(model.dcg(xd)).float(), 1)
            noise = dm.chain_noise(x, 0, 1, len(model.steps), NUM_CLASSES)
            t0 = CLOCK()
            eps_fn = partial(step, model.denoiser, e, prior.to(DTYPE))
            model.diffusion.sample(eps_fn, prior, model.steps, noise)
            chain = (CLOCK() - t0) * 1000.0 / batch
        floor = gemm_floor(batch, 6144, timesteps, args.repeats)
        target = targets.get(timesteps)
        verdict = "" if target is None else f"<= {target:.0f}: {'met' if total <= target else 'NOT met'}"
        print(f"| DiffMIC | {timesteps} | {total:.1f} | {dcg:.1f} | {feature:.1f} | {chain:.1f} | {floor:.1f} | "
              f"{verdict} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["grid", "paper", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="batch of the paper-settings measurement")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[60, 250])
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="process: CPU time summed over threads (less sensitive to other users' load; "
                             "with --threads 1 it is the single-core cost)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parser_dtype = getattr(torch, args.dtype)
    global CLOCK, DTYPE
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    DTYPE = parser_dtype
    print(f"load before: {uptime()}; clock: {args.clock}; threads: {args.threads}; dtype: {args.dtype}")
    if args.part in ("grid", "all"):
        grid(args)
    if args.part in ("paper", "all"):
        paper(args)
    print(f"\nload after: {uptime()}")


if __name__ == "__main__":
    main()
