"""A test plugin: ``always-fails`` raises inside fit; ``constant`` predicts the first class."""

from dataclasses import dataclass

from harness import MethodSpec, hookimpl


@dataclass(frozen=True)
class Config:
    message: str = "deliberate failure"


def fail(data, config, ctx):
    raise RuntimeError(config.message)


def constant(data, config, ctx):
    import torch

    from harness import Predictor

    class First(torch.nn.Module):
        def forward(self, x):
            p = torch.zeros(x.shape[0], data.num_classes)
            p[:, 0] = 1.0
            return p

    return Predictor(First())


@hookimpl
def register_methods(register):
    register(MethodSpec(name="always-fails", description="raises in fit", config=Config, fit=fail,
                        uses_sampler=False))
    register(MethodSpec(name="constant", description="always the first class", config=Config, fit=constant,
                        uses_sampler=False))
