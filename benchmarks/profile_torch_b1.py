"""Why torch eager is slower than ONNX Runtime at batch 1 for the same classifier (issue 17): a profile.

For a kept trial (its ``model/``), on one thread, per call at batch 1: torch eager's CPU time (NCHW and
channels_last), ONNX Runtime's on the exported graph, and torch's convolution time split by the kernel PyTorch
chose for each layer (``aten::mkldnn_convolution``, oneDNN, or ``aten::_slow_conv2d_forward``, the im2col + GEMM
fallback), with each layer's input shape. CPU time (``time.process_time``), so a machine shared with other work
changes the figures less than wall time would (it still shares caches and memory bandwidth).

    python benchmarks/profile_torch_b1.py runs/retinamnist/resnet-retinamnist-uniform-s0-*/ [--size 28] [--calls 40]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.run import models


def cpu_ms(fn, calls: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times) * 1000)


def conv_split(module, x, calls: int = 10) -> list[tuple[str, str, float]]:
    """(kernel, input shape, CPU ms per model call) of every convolution kernel torch ran, largest first."""
    with torch.inference_mode(), torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(calls):
            module(x)
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward"):
            shape = "x".join(map(str, event.input_shapes[0][1:])) if event.input_shapes else "?"
            weight = "x".join(map(str, event.input_shapes[1][:2])) if len(event.input_shapes) > 1 else "?"
            rows.append((event.key.split("::")[1], f"{shape} (weight {weight})", event.self_cpu_time_total / 1000 / calls))
    return sorted(rows, key=lambda r: -r[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trial", type=Path, help="a trial folder with a kept model")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = models.load_predictor(args.trial).module.eval()
    channels = next(p for p in module.parameters() if p.dim() == 4).shape[1]
    x = torch.randn(1, channels, args.size, args.size)
    last = copy.deepcopy(module).to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = cpu_ms(lambda: module(x), args.calls)
        eager_last = cpu_ms(lambda: last(x_last), args.calls)
    from harness.toolkit.nn.onnx import ort_session

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["probs"], dynamo=False)
        session = ort_session(path, threads=1)
        feed = {"x": x.numpy()}
        onnx = cpu_ms(lambda: session.run(None, feed), args.calls)
    print(f"{args.trial.name}: batch 1, {args.size} px, 1 thread, CPU ms per call (median of {args.calls}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| runtime | CPU ms per call | vs ONNX Runtime |\n| --- | --- | --- |")
    for name, ms in (("torch eager, NCHW", eager), ("torch eager, channels_last", eager_last), ("ONNX Runtime", onnx)):
        print(f"| {name} | {ms:.2f} | {ms / onnx:.2f}x |")
    split = conv_split(module, x)
    total = sum(r[2] for r in split)
    print(f"\ntorch eager (NCHW) convolutions: {total:.2f} ms of {eager:.2f} per call")
    print("| kernel | input (C x H x W) | CPU ms per call |\n| --- | --- | --- |")
    for kernel, shape, ms in split:
        print(f"| {kernel} | {shape} | {ms:.2f} |")
    slow = sum(r[2] for r in split if r[0] == "_slow_conv2d_forward")
    print(f"\n_slow_conv2d_forward (im2col + GEMM): {slow:.2f} ms per call, {slow / eager:.0%} of torch's time")


if __name__ == "__main__":
    main()
