"""IOIS cost figures (issue 18).

    python benchmarks/bench_iois.py throughput --threads 1               # cpu profile, 28 px, 5 classes
    python benchmarks/bench_iois.py throughput --threads 1 --profile smoke --size 16 --batch 64
    python benchmarks/bench_iois.py epochs runs/iois-table               # time per epoch of finished trials

``throughput``: for the profile's generator (the shared UNet) and classifier (``backbone``; untrained weights: the cost does
not depend on them), at the data size and batch ``--batch``:

- ``unet fwd+bwd``: one plain training forward + backward of the UNet on the batch (the reference);
- ``guided step``: one OIS step on the batch (UNet forward without autograd + batched classifier forward and
  gradient with respect to x_t + the DDIM update), as ``GuidedSampler`` runs it;
- the ratio of the two (the issue's goal: within 2x), and guided images per second for a full
  ``sample_steps`` chain, at the batch given and at the official code's batch of 32;
- for reference, the guided step with the classifier's weights requiring gradients (what the ``frozen_eval``
  context saves) and the unguided step.

Median of ``--repeats`` timings after one warm-up (the chains: one timing each).

``epochs``: for every finished IOIS trial under RUNS_DIR (``result.json`` + ``curve.json``), the classifier's
seconds per epoch split into generation (OIS), the per-class accuracy pass (AAS's signal) and the rest
(training steps + validation), with the generator's training time and the guided images per second; mean over
the seeds of each (dataset, method).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness.run.config import config_from_dict, resolve_method_config
from harness.toolkit import backbones
from plugins.iois import IOISConfig
from plugins.iois.model import GuidanceView, GuidedSampler, build_generator, frozen_eval, make_schedule


def _timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def epochs(runs_dir: Path) -> None:
    rows: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(runs_dir.rglob("result.json")):
        result = json.loads(path.read_text())
        curve_path = path.parent / "curve.json"
        if result.get("status") != "ok" or not str(result.get("method", "")).startswith("iois") \
                or not curve_path.exists():
            continue
        records = [r for r in json.loads(curve_path.read_text()) if "stage" not in r]  # the classifier's epochs
        if not records:
            continue
        seconds = np.array([r.get("seconds", 0.0) for r in records])
        gen = np.array([r.get("gen_seconds", 0.0) for r in records])
        acc = np.array([r.get("acc_seconds", 0.0) for r in records])
        notes = result.get("notes", {})
        rows.setdefault((result["dataset"], result["method"]), []).append({
            "epochs": len(records), "epoch": seconds.mean(), "gen": gen.mean(), "acc": acc.mean(),
            "train": (seconds - gen - acc).mean(), "generator": notes.get("generator_train_seconds", float("nan")),
            "ips": notes.get("guided_images_per_second") or float("nan"), "fit": result.get("fit_seconds", 0.0)})
    if not rows:
        raise SystemExit(f"no finished IOIS trial with a curve.json under {runs_dir}")
    print("| dataset | method | seeds | epochs | s / epoch | generation | accuracy pass | training + validation "
          "| generator training (s, once) | guided images / s | fit (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (dataset, method), items in sorted(rows.items()):
        mean = {k: float(np.nanmean([i[k] for i in items])) for k in items[0]}
        print(f"| {dataset} | {method} | {len(items)} | {mean['epochs']:.0f} | {mean['epoch']:.1f} | "
              f"{mean['gen']:.1f} ({mean['gen'] / mean['epoch']:.0%}) | {mean['acc']:.1f} | {mean['train']:.1f} | "
              f"{mean['generator']:.0f} | {mean['ips']:.1f} | {mean['fit']:.0f} |")


def main() -> None:
    top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("epochs", help="time per epoch of finished IOIS trials")
    runs.add_argument("runs_dir", type=Path)
    parser = commands.add_parser("throughput", help="guided generation against the UNet's training step")
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--size", type=int, default=28, help="data size (px)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--batch", type=int, default=0, help="images per batch (0: the profile's sample_batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="iois config override")
    args = top.parse_args()
    if args.command == "epochs":
        epochs(args.runs_dir)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from harness.registry import load_plugins
    from harness.run.config import parse_value

    spec = load_plugins().build_registry().get("methods", "iois")
    overrides = {k: parse_value(v) for k, _, v in (item.partition("=") for item in args.set)}
    config = config_from_dict(IOISConfig, resolve_method_config(spec, args.profile, overrides))
    batch = args.batch or config.sample_batch
    net = build_generator(config, args.channels, args.classes, args.size)
    size = config.gen_size or args.size
    clf = backbones.create(config.backbone, num_classes=args.classes, in_chans=args.channels, image_size=args.size).model
    guide = GuidanceView(clf)
    schedule = make_schedule(config)
    x = torch.randn(batch, args.channels, size, size)
    y = torch.randint(0, args.classes, (batch,))
    t = torch.randint(0, config.timesteps, (batch,)).float()

    def unet_fwd_bwd():
        net.zero_grad(set_to_none=True)
        net.train()
        (net(x, t, y if config.conditional else None) - x).pow(2).mean().backward()

    unet_ms = _timed(unet_fwd_bwd, args.repeats) * 1e3
    sampler = GuidedSampler(build_generator(config, args.channels, args.classes, args.size).eval(), schedule,
                            size=size, channels=args.channels, out_size=args.size, steps=config.sample_steps,
                            guidance=config.guidance, scale=config.guidance_scale, conditional=config.conditional,
                            batch_size=batch)
    gen = torch.Generator().manual_seed(0)
    mid = len(sampler.timesteps) // 2
    t_mid = int(sampler.timesteps[mid])

    def guided_step(classifier=guide):
        return sampler.step(x, mid, sampler.guided_eps(x, t_mid, y, classifier), gen)

    with frozen_eval(guide):
        step_ms = _timed(guided_step, args.repeats) * 1e3
    clf.eval()
    step_weights_ms = _timed(guided_step, args.repeats) * 1e3  # weights still require gradients
    plain_ms = _timed(lambda: guided_step(None), args.repeats) * 1e3

    def chain(n):
        return lambda: sampler.sample(y[:n], guide, torch.Generator().manual_seed(1))

    small = min(32, batch)
    chain_s, chain_small_s = _once(chain(batch)), _once(chain(small))  # warm already
    print(f"profile {args.profile}: generator {config.gen_channels} ch x {list(config.gen_channel_mult)} at {size} px, "
          f"classifier {config.backbone} (trained at {args.size} px, guided at {size} px), {args.classes} classes, {args.channels} channels, "
          f"batch {batch}, {config.sample_steps} {config.guidance} steps, {args.threads} thread(s)")
    print("| figure | value |\n|---|---|")
    print(f"| UNet plain forward + backward, batch {batch} | {unet_ms:.0f} ms |")
    print(f"| guided step (UNet forward + classifier input gradient + update), batch {batch} | {step_ms:.0f} ms |")
    print(f"| **ratio guided step / UNet forward + backward** | **{step_ms / unet_ms:.2f}x** |")
    print(f"| guided step with the classifier's weights requiring gradients | {step_weights_ms:.0f} ms |")
    print(f"| unguided step (UNet forward + update) | {plain_ms:.0f} ms |")
    print(f"| guided generation, {config.sample_steps} steps, batch {batch} | {batch / chain_s:.1f} images/s |")
    print(f"| guided generation, {config.sample_steps} steps, batch {small} (the code's) | "
          f"{small / chain_small_s:.1f} images/s |")


if __name__ == "__main__":
    main()
