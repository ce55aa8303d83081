"""One network of a sampling loop on ONNX Runtime (issue 17). Imports torch; onnxruntime when a session opens.

A diffusion method's prediction or generation is a Python loop around one network called at every step (a
UNet, a denoiser). That network is what is exported, with a dynamic batch, and the loop stays in Python over
an ONNX Runtime session::

    path = export_net(unet, "out/unet.onnx", {"x": x, "t": t, "y": y})   # example inputs fix names and shapes
    net = OnnxNet(path, threads=1)                                        # net(x, t, y) -> torch tensor

:class:`OnnxNet` is a parameter-free ``nn.Module`` that takes the same positional arguments as the network
(in the order of the example inputs) and returns a torch tensor, so it drops into the loop in the network's
place. ``None`` arguments are not inputs of the graph (a label-free generator exported without ``y``).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn as nn

OPSET = 17


class _Named(nn.Module):
    """``net`` called with the graph's inputs as positional arguments (the order of the example dict)."""

    def __init__(self, net: nn.Module, call=None):
        super().__init__()
        self.net, self.call = net, call

    def forward(self, *args):
        return self.call(self.net, *args) if self.call is not None else self.net(*args)


def export_net(net: nn.Module, path: Path | str, inputs: dict[str, torch.Tensor], *, output: str = "out",
               call=None, static: tuple[str, ...] = (), opset: int = OPSET) -> Path:
    """Export ``net(*inputs.values())`` (or ``call(net, *inputs.values())``) to ONNX at ``path``, float32 on the
    CPU, the first axis of every input (except those named in ``static``, whose shape is fixed) and of the
    output dynamic. The example inputs need a batch of at least 2, so the exporter cannot fold the row count
    into a constant. A copy of ``net`` is exported: ``net`` keeps its mode, dtype and device."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = [k for k, v in inputs.items() if v.dim() > 0 and k not in static]
    rows = {len(inputs[k]) for k in dynamic}
    if min(rows, default=2) < 2:
        raise ValueError(f"export_net needs example inputs with a batch of at least 2; found {sorted(rows)}")
    module = _Named(copy.deepcopy(net).eval().float().cpu().to(memory_format=torch.contiguous_format), call)
    example = tuple(v.detach().cpu() for v in inputs.values())
    batch = {0: "n"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks: spatial sizes are fixed by design
        torch.onnx.export(module, example, str(path), input_names=list(inputs), output_names=[output],
                          opset_version=opset, dynamo=False, dynamic_axes={**{k: batch for k in dynamic}, output: batch})
    import onnx  # an input the trace found unused is dropped from the graph: the arguments would no longer line up

    found = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    if found != list(inputs):
        raise ValueError(f"{path.name}: the exported graph takes {found}; expected {list(inputs)} (an input the "
                         f"network does not use was traced away)")
    return path


def ort_session(path: Path | str, *, threads: int | None = None, providers: list[str] | None = None):
    """An ONNX Runtime session on ``path`` with ``threads`` intra-op threads (default: torch's count); the
    providers asked for that this onnxruntime has, else the CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=chosen)


class OnnxNet(nn.Module):
    """An ONNX Runtime session standing in for a network: ``forward(*args)`` -> torch tensor on the device (and,
    if floating, in the dtype) of the first argument that has a batch axis. Arguments are matched to the graph's
    inputs in order; ``None`` arguments are skipped; a 0-d argument, or a 1-element one when the batch is
    larger, is expanded to the batch (a timestep given as a scalar). Floating values for an int64 input must be
    whole numbers (a timestep index), else ValueError."""

    def __init__(self, path: Path | str, *, threads: int | None = None, providers: list[str] | None = None):
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(path, threads=threads, providers=providers)
        self.inputs = [(i.name, i.type) for i in self.session.get_inputs()]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def forward(self, *args) -> torch.Tensor:
        given = [a for a in args if a is not None]
        if len(given) != len(self.inputs):
            names = ", ".join(name for name, _ in self.inputs)
            raise ValueError(f"{self.path.name} takes {len(self.inputs)} input(s) ({names}); found {len(given)}")
        first = next(a for a in given if torch.is_tensor(a) and a.dim() > 0)
        feeds = {}
        for (name, kind), value in zip(self.inputs, given, strict=True):
            value = torch.as_tensor(value).detach().cpu()
            if value.dim() == 0 or (value.numel() == 1 and len(first) != 1):
                value = value.reshape(1).expand(len(first))
            if "int64" in kind:
                if value.is_floating_point() and not torch.equal(value, value.round()):
                    raise ValueError(f"{self.path.name}: input {name!r} takes int64; found non-integral values")
                value = value.long()
            else:
                value = value.float()
            feeds[name] = value.numpy()
        (out,) = self.session.run(None, feeds)
        result = torch.from_numpy(out).to(first.device)
        return result.to(first.dtype) if first.is_floating_point() else result
