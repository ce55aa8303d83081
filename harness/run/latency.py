"""Latency, measured by the harness (never by the method).

After a warm-up, the predictor's module is timed on real test images at batch 1 and at a throughput
batch (64, or the whole test set if smaller): median and p95 milliseconds per image, with the torch
thread count. Repetitions stop at a count or a time budget, whichever comes first, so an expensive
method (a diffusion classifier) costs seconds here, not minutes. Where the predictor is exportable,
ONNX Runtime (CPU provider, or CUDA where present) is timed the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LatencySettings:
    batch: int = 64
    warmup: int = 1
    max_repeats_b1: int = 20
    max_repeats_batch: int = 5
    budget_s: float = 0.25  # per batch size and engine (at least 2 timed repeats)
    onnx: bool = True


def _timed(fn, warmup: int, max_repeats: int, budget_s: float) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 2:
            break
    return times


def _summary(prefix: str, suffix: str, times: list[float], batch: int) -> dict[str, float]:
    per_image_ms = np.asarray(times) * 1000.0 / batch
    return {
        f"{prefix}ms_per_image_{suffix}": float(np.median(per_image_ms)),
        f"{prefix}p95_ms_{suffix}": float(np.percentile(per_image_ms, 95)),
        f"{prefix}repeats_{suffix}": len(times),
    }


def measure(predictor, images: np.ndarray, settings: LatencySettings, workdir: Path | None = None,
            keep_onnx: Path | None = None) -> dict:
    """Latency of ``predictor`` on ``images`` (uint8 NHWC): a dict for ``result.json``. The ONNX graph is
    exported to ``workdir/model.onnx`` and deleted after timing, or kept at ``keep_onnx`` when given (the
    trial's saved model)."""
    import torch

    batch = int(min(settings.batch, len(images)))
    module = predictor.latency_module if predictor.latency_module is not None else predictor.module
    module.eval()
    x1 = predictor.to_tensor(images[:1])
    xb = predictor.to_tensor(images[:batch])

    def run(x, module=module):
        def call():
            with torch.inference_mode():
                module(x)
                if x.is_cuda:
                    torch.cuda.synchronize()
        return call

    out: dict = {"threads": torch.get_num_threads(), "device": str(x1.device), "batch": batch}
    out.update(_summary("", "b1", _timed(run(x1), settings.warmup, settings.max_repeats_b1, settings.budget_s), 1))
    out.update(_summary("", f"b{batch}", _timed(run(xb), 1, settings.max_repeats_batch, settings.budget_s), batch))
    if batch != 64:  # keep the documented key present so tables line up
        out["ms_per_image_b64"] = out[f"ms_per_image_b{batch}"]
        out["p95_ms_b64"] = out[f"p95_ms_b{batch}"]
    if predictor.latency_module is not None:  # the full module (e.g. with its uncertainty chains) as well
        full = predictor.module.eval()
        out.update(_summary("full_", "b1", _timed(run(x1, full), settings.warmup, settings.max_repeats_b1,
                                                  settings.budget_s), 1))
        out.update(_summary("full_", f"b{batch}", _timed(run(xb, full), 1, settings.max_repeats_batch,
                                                         settings.budget_s), batch))
    if settings.onnx and predictor.exportable and (workdir is not None or keep_onnx is not None):
        path = keep_onnx if keep_onnx is not None else Path(workdir) / "model.onnx"
        out.update(_onnx_latency(module, x1, xb, batch, settings, path, keep=keep_onnx is not None))
    return out


def _onnx_latency(module, x1, xb, batch: int, settings: LatencySettings, path: Path, keep: bool = False) -> dict:
    """Export to ONNX at ``path`` and time it with ONNX Runtime; any failure is recorded, never raised. The
    file is deleted afterwards unless ``keep`` (and the export and timing succeeded)."""
    import torch

    ok = False
    try:
        import onnxruntime as ort

        with torch.no_grad():
            torch.onnx.export(
                module.cpu() if not x1.is_cuda else module, (x1,), str(path),
                input_names=["x"], output_names=["probs"],
                dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}}, dynamo=False,
            )
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        if x1.device.type != "cuda":
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=providers)
        a1, ab = x1.cpu().numpy(), xb.cpu().numpy()
        out = {"onnx_provider": session.get_providers()[0]}
        out.update(_summary("onnx_", "b1", _timed(lambda: session.run(None, {"x": a1}), settings.warmup,
                                                   settings.max_repeats_b1, settings.budget_s), 1))
        out.update(_summary("onnx_", f"b{batch}", _timed(lambda: session.run(None, {"x": ab}), 1,
                                                          settings.max_repeats_batch, settings.budget_s), batch))
        ok = True
        return out
    except Exception as exc:  # export support varies by architecture; timing torch is enough
        return {"onnx_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        if not (keep and ok):
            path.unlink(missing_ok=True)
