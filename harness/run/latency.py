"""Latency, measured by the harness (never by the method).

After a warm-up, the predictor's module is timed on real test images at batch 1 and at a throughput
batch (64, or the whole test set if smaller): median and p95 milliseconds per image, with the torch
thread count. Repetitions stop at a count or a time budget, whichever comes first, so an expensive
method (a diffusion classifier) costs seconds here, not minutes. Where the predictor is exportable,
ONNX Runtime (CPU provider, or CUDA where present) is timed the same way, with as many threads.

How torch is timed (``benchmarks/README.md``, "Honest torch timing", has the profile behind each point):

- in ``torch.inference_mode``, the module in eval mode, the input prepared before the clock starts;
- in ``channels_last`` memory format when the module has convolutions and gives the same output in it (with
  the same seed): at batch 1 PyTorch sends the small late-stage 3x3 convolutions of a ResNet (256 x 7 x 7,
  512 x 4 x 4 at 28 px) to its im2col fallback in NCHW, at a third of oneDNN's speed, while ONNX Runtime's
  kernels do not have that split; ``torch_memory_format`` says which format was timed;
- the OpenMP wait policy (``OMP_WAIT_POLICY``) and the thread counts are recorded: with two spinning OpenMP
  threads on two cores shared with other work (other trials, other users) a batch-1 torch call waits for the
  core its partner spins on and takes 10x longer; ``harness bench`` re-times stored trials with nothing else
  of the harness running.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MATCH_ATOL = 1e-5  # channels_last must reproduce the NCHW output within this to be the format timed


@dataclass(frozen=True)
class LatencySettings:
    batch: int = 64
    warmup: int = 1
    max_repeats_b1: int = 20
    max_repeats_batch: int = 5
    budget_s: float = 0.25  # per batch size and engine (at least 2 timed repeats)
    onnx: bool = True
    channels_last: bool = True  # time convolutional modules in channels_last when their output is unchanged


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


def _call(module, x):
    """``module(x)`` as a timed call: in inference mode, waiting for the GPU when ``x`` is on one."""
    import torch

    def call():
        with torch.inference_mode():
            module(x)
            if x.is_cuda:
                torch.cuda.synchronize()
    return call


def _timings(prefix: str, call_on, x1, xb, batch: int, settings: LatencySettings, alias_b64: bool = True) -> dict:
    """Batch 1 and the throughput batch of ``call_on(x)()``: median and p95 ms per image and repeats, under
    ``prefix``; with ``alias_b64`` the documented ``*_b64`` keys are present when the batch is smaller (a small
    test set), so tables line up."""
    out = _summary(prefix, "b1", _timed(call_on(x1), settings.warmup, settings.max_repeats_b1, settings.budget_s), 1)
    out.update(_summary(prefix, f"b{batch}", _timed(call_on(xb), 1, settings.max_repeats_batch, settings.budget_s),
                        batch))
    if alias_b64 and batch != 64:
        out[f"{prefix}ms_per_image_b64"] = out[f"{prefix}ms_per_image_b{batch}"]
        out[f"{prefix}p95_ms_b64"] = out[f"{prefix}p95_ms_b{batch}"]
    return out


def _probs(output):
    return output["probs"] if isinstance(output, dict) else output


def inference_module(module, x):
    """``(module, memory_format)`` to time: a ``channels_last`` copy of ``module`` when it has 4-d weights and
    gives the output of ``module`` on ``x`` within :data:`MATCH_ATOL` (both called with seed 0, so a sampler
    draws the same noise); otherwise ``module`` itself, ``"contiguous"``, and why not."""
    import torch

    if not any(p.dim() == 4 for p in module.parameters()):
        return module, "contiguous", None
    try:
        converted = copy.deepcopy(module).to(memory_format=torch.channels_last)
        state = torch.random.get_rng_state()
        with torch.inference_mode():
            torch.manual_seed(0)
            reference = _probs(module(x))
            torch.manual_seed(0)
            candidate = _probs(converted(x.contiguous(memory_format=torch.channels_last)))
        torch.random.set_rng_state(state)
        if reference.shape == candidate.shape and torch.allclose(reference, candidate, atol=MATCH_ATOL, rtol=0):
            return converted, "channels_last", None
        return module, "contiguous", "channels_last output differs from contiguous"
    except Exception as exc:  # a module that cannot be copied or converted is timed as it is
        return module, "contiguous", f"channels_last failed: {type(exc).__name__}: {str(exc)[:200]}"


def environment() -> dict:
    """What torch's CPU speed depends on besides the model: thread counts, the OpenMP wait policy and the
    process's niceness."""
    import torch

    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"), "niceness": _niceness()}


def _niceness() -> int | None:
    """This process's scheduling niceness (Ray's workers run at 15: normal-priority work on the machine comes
    first), None where the OS has none."""
    try:
        return os.nice(0)
    except (AttributeError, OSError):
        return None


def measure(predictor, images: np.ndarray, settings: LatencySettings, workdir: Path | None = None,
            keep_onnx: Path | None = None, onnx_file: Path | None = None) -> dict:
    """Latency of ``predictor`` on ``images`` (uint8 NHWC): a dict for ``result.json``. The ONNX graph is
    exported to ``workdir/model.onnx`` and deleted after timing, or kept at ``keep_onnx`` when given (the
    trial's saved model); an existing graph at ``onnx_file`` (a stored trial's) is timed as it is."""
    import torch

    batch = int(min(settings.batch, len(images)))
    module = predictor.latency_module if predictor.latency_module is not None else predictor.module
    module.eval()
    x1 = predictor.to_tensor(images[:1])
    xb = predictor.to_tensor(images[:batch])

    out: dict = {**environment(), "device": str(x1.device), "batch": batch}
    timed, memory_format = module, "contiguous"
    if settings.channels_last:
        timed, memory_format, why = inference_module(module, x1)
        if why:
            out["torch_memory_format_note"] = why
    out["torch_memory_format"] = memory_format
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    t1, tb = x1.contiguous(memory_format=fmt), xb.contiguous(memory_format=fmt)

    out.update(_timings("", lambda x: _call(timed, x), t1, tb, batch, settings))
    if predictor.latency_module is not None:  # the full module (e.g. with its uncertainty chains) as well,
        full = predictor.module.eval()        # in the default memory format
        out.update(_timings("full_", lambda x: _call(full, x), x1, xb, batch, settings, alias_b64=False))
    if settings.onnx and not predictor.exportable and predictor.onnx_runtime:
        out.update(_onnx_runtime_latency(predictor.onnx_runtime, module, x1, xb, batch, settings))
    elif settings.onnx and onnx_file is not None and Path(onnx_file).exists():
        out.update(_onnx_latency(None, x1, xb, batch, settings, Path(onnx_file), keep=True))
    elif settings.onnx and predictor.exportable and (workdir is not None or keep_onnx is not None):
        path = keep_onnx if keep_onnx is not None else Path(workdir) / "model.onnx"
        out.update(_onnx_latency(module, x1, xb, batch, settings, path, keep=keep_onnx is not None))
    return out


def _onnx_runtime_latency(target: str, module, x1, xb, batch: int, settings: LatencySettings) -> dict:
    """Time the ONNX Runtime form of ``module`` that the predictor's ``onnx_runtime`` (``"module:function"``)
    builds: a method whose prediction is a loop around networks (a diffusion chain) exports the networks called
    per step and drives the same loop over ONNX Runtime sessions. The graphs go to a temporary folder (``harness
    bench`` exports them again from the kept model). Any failure is recorded, never raised."""
    import tempfile

    import torch

    from harness.contract.specs import resolve_callable

    try:
        build = resolve_callable(target, "Predictor.onnx_runtime")
        with tempfile.TemporaryDirectory(prefix="harness-onnx-") as tmp:
            runner = build(copy.deepcopy(module).cpu(), Path(tmp), x1.cpu(), threads=torch.get_num_threads())
            graphs = sorted(p.name for p in Path(tmp).glob("*.onnx"))
            with torch.inference_mode():  # what is timed must predict what torch predicts: the gap is recorded
                gap = (_probs(runner(x1.cpu())).float() - _probs(module(x1)).float().cpu()).abs().max()

            out = {"onnx_provider": getattr(runner, "onnx_provider", None) or "CPUExecutionProvider",
                   "onnx_threads": torch.get_num_threads(), "onnx_graphs": graphs,
                   "onnx_max_abs_diff_b1": float(gap)}
            out.update(_timings("onnx_", lambda x: _call(runner, x), x1.cpu(), xb.cpu(), batch, settings))
        return out
    except Exception as exc:  # export support varies by architecture; timing torch is enough
        return {"onnx_error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def onnx_session(path: Path, device_type: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session on ``path``: the CUDA provider when timing a CUDA trial and it is available,
    the CPU provider otherwise, with ``threads`` intra-op threads (default: torch's count)."""
    import onnxruntime as ort
    import torch

    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device_type == "cuda" and "CUDAExecutionProvider" in available:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=providers)


def _onnx_latency(module, x1, xb, batch: int, settings: LatencySettings, path: Path, keep: bool = False) -> dict:
    """Export ``module`` to ONNX at ``path`` (``module=None``: time the graph already there) and time it with
    ONNX Runtime; any failure is recorded, never raised. An exported file is deleted afterwards unless
    ``keep`` (and the export and timing succeeded)."""
    import torch

    ok = False
    try:
        if module is not None:
            with torch.no_grad():
                torch.onnx.export(
                    module.cpu() if not x1.is_cuda else module, (x1,), str(path),
                    input_names=["x"], output_names=["probs"],
                    dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}}, dynamo=False,
                )
        session = onnx_session(path, x1.device.type)
        name = session.get_inputs()[0].name
        out = {"onnx_provider": session.get_providers()[0],
               "onnx_threads": int(session.get_session_options().intra_op_num_threads)}
        feeds = {id(x): {name: x.cpu().numpy()} for x in (x1, xb)}  # made before the clock starts
        out.update(_timings("onnx_", lambda x: lambda: session.run(None, feeds[id(x)]), x1, xb, batch, settings))
        ok = True
        return out
    except Exception as exc:  # export support varies by architecture; timing torch is enough
        return {"onnx_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        if module is not None and not (keep and ok):
            path.unlink(missing_ok=True)
