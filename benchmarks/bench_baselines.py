"""Per-image training cost of the baseline backbones (issue 5) at a given image size.

One training step (forward, cross-entropy, backward, AdamW step) on a random batch, timed after a warm-up
step; the CPU time per image and the ratio to ResNet-18 are printed as a Markdown table. The ratios are
what the ``cpu`` profiles' epochs are set from (see benchmarks/README.md, "Baselines (issue 5)").

    python benchmarks/bench_baselines.py --size 28 --threads 1 --batch 64 --steps 2
"""

from __future__ import annotations

import argparse
import time

BACKBONES = ("resnet18", "resnet50", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "pvt_v2_b0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--classes", type=int, default=7)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from plugins.baselines.model import build_backbone

    torch.set_num_threads(args.threads)
    print(f"| backbone | CPU ms / image | wall ms / image | relative to resnet18 (CPU) |  "
          f"size {args.size}, batch {args.batch}, {args.threads} thread(s)")
    print("| --- | --- | --- | --- |")
    reference = None
    for name in BACKBONES:
        model = build_backbone(name, num_classes=args.classes, in_chans=3, image_size=args.size).model.train()
        x = torch.randn(args.batch, 3, args.size, args.size)
        y = torch.randint(0, args.classes, (args.batch,))
        opt = torch.optim.AdamW(model.parameters())
        cpu = wall = 0.0
        for step in range(args.steps + 1):
            c0, w0 = time.process_time(), time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:  # the first step is the warm-up
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
        cpu_ms = cpu / args.steps / args.batch * 1000
        wall_ms = wall / args.steps / args.batch * 1000
        reference = reference or cpu_ms
        print(f"| {name} | {cpu_ms:.1f} | {wall_ms:.1f} | {cpu_ms / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()
