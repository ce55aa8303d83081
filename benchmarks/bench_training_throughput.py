"""Training throughput of the harness's loop against a hand-written PyTorch loop (issue 17).

Both train the same model on the same data with the same work per epoch, and the script prints the
images per second of each and their ratio:

- model: ResNet-18 (timm) with the small-image stem (3x3 stride-1 first conv, no max-pool);
- data: RetinaMNIST's 1,080 training images at 28 px (120 validation images), batch 128;
- augmentation: random horizontal flips only; AdamW, cosine learning rate per step;
- every epoch: a validation pass and a copy of the best weights (what a training loop that selects a
  checkpoint does).

The harness leg is ``harness.toolkit.training.train_classifier`` with a trial's context (the uniform sampler,
the registered metrics scoring validation). The hand-written leg is the loop a PyTorch user writes: a
``randperm`` per epoch, ``x.float() / 255`` normalised, ``torch.where`` flips, forward, cross-entropy,
backward, step, ``CosineAnnealingLR.step()``, then ``model.eval()`` accuracy on validation. Legs alternate
(hand, harness, harness, hand, ...) so that a change in the machine's load hits both alike; each round's
ratio is printed and the median is the figure.

    python benchmarks/bench_training_throughput.py --data-dir ../shared/data --threads 2 --epochs 2 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

CLOCK = time.perf_counter  # --clock cpu: time.process_time (for a loaded machine, with --threads 1)


def load_retinamnist(data_dir: Path):
    from harness import DatasetRequest
    from harness.registry import load_plugins
    from harness.run.config import config_from_dict

    registry = load_plugins().build_registry()
    spec = registry.get("datasets", "retinamnist")
    options = config_from_dict(spec.options, {"size": 28})
    request = DatasetRequest(options=options, seed=0, data_dir=data_dir, cache_dir=Path(tempfile.mkdtemp()))
    return spec.load_fn()(request), registry


def make_model(data, seed: int):
    import torch

    from harness.toolkit import backbones

    torch.manual_seed(seed)
    return backbones.create("resnet18", num_classes=data.num_classes, in_chans=data.channels,
                            image_size=data.size).model


def hand_written(data, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int) -> float:
    """Seconds for ``epochs`` epochs of the plain loop."""
    import torch
    import torch.nn.functional as F

    model = make_model(data, seed)
    x_all = torch.from_numpy(data.train.images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, C, H, W)
    y_all = torch.from_numpy(data.train.labels).long()
    val_x = torch.from_numpy(data.val.images).permute(0, 3, 1, 2).contiguous()
    val_y = torch.from_numpy(data.val.labels).long()
    n = len(y_all)
    steps = epochs * -(-n // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    started = CLOCK()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            x = (x_all[idx].float() / 255 - 0.5) / 0.5
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model((val_x.float() / 255 - 0.5) / 0.5).argmax(1) == val_y).float().mean().item()
        if accuracy > best:
            best, best_state = accuracy, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return CLOCK() - started


def harness_loop(data, registry, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
                 threads: int) -> float:
    """Seconds for ``epochs`` epochs of ``train_classifier`` with a trial's context."""
    from harness import TrialContext
    from harness.run.runner import scorer
    from harness.toolkit.training import normalisation, train_classifier
    from harness.toolkit.training_config import TrainConfig

    model = make_model(data, seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=weight_decay,
                      schedule="cosine", hflip=True, vflip=False, rotation=0.0)
    ctx = TrialContext(seed=seed, device="cpu", threads=threads, trial_dir=Path(tempfile.mkdtemp()),
                       reporter=lambda **_: None, sampler_factory=registry.get("samplers", "uniform").build_fn(),
                       scorer=scorer(registry))
    mean, std = normalisation(data.channels, False)
    started = CLOCK()
    train_classifier(model, data, cfg, ctx, mean=mean, std=std)
    return CLOCK() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per leg")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (hand, harness, harness, hand)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (the figure), or the process's CPU time (robust to other jobs with 1 thread)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import torch

    torch.set_num_threads(args.threads)
    data, registry = load_retinamnist(args.data_dir)
    common = {"epochs": args.epochs, "batch_size": args.batch, "lr": 2e-3, "weight_decay": 5e-4, "seed": args.seed}
    images = args.epochs * len(data.train)
    # one warm-up epoch each (allocator, oneDNN kernels), not timed
    hand_written(data, **{**common, "epochs": 1})
    harness_loop(data, registry, **{**common, "epochs": 1}, threads=args.threads)
    print(f"RetinaMNIST {len(data.train)} train / {len(data.val)} val, 28 px, ResNet-18 (small-image stem), batch "
          f"{args.batch}, flips, {args.threads} thread(s), {args.epochs} epochs per leg, {args.clock} clock")
    print("| round | hand-written (img/s) | harness loop (img/s) | ratio |")
    print("| --- | --- | --- | --- |")
    ratios, hands, loops = [], [], []
    for r in range(args.rounds):
        times = {"hand": [], "loop": []}
        for leg in ("hand", "loop", "loop", "hand"):
            if leg == "hand":
                times[leg].append(hand_written(data, **common))
            else:
                times[leg].append(harness_loop(data, registry, **common, threads=args.threads))
        hand = images / statistics.mean(times["hand"])
        loop = images / statistics.mean(times["loop"])
        hands.append(hand)
        loops.append(loop)
        ratios.append(loop / hand)
        print(f"| {r + 1} | {hand:.1f} | {loop:.1f} | {loop / hand:.3f} |", flush=True)
    print(f"| median | {statistics.median(hands):.1f} | {statistics.median(loops):.1f} | "
          f"**{statistics.median(ratios):.3f}** |")


if __name__ == "__main__":
    main()
