"""A test plugin of methods that break the contract, each in one way (the runner must fail their trials):

- ``peeks-at-test`` reads ``data.test.labels`` inside fit; ``peeks-quietly`` does too and swallows the error;
- ``nan-probs``, ``negative-probs``, ``unnormalised`` return bad probabilities;
- ``no-predictor`` returns something that is not a Predictor;
- ``honest`` is a valid method (class frequencies of the training labels), to show the others are the exception.
"""

from dataclasses import dataclass

from harness import MethodSpec, Predictor, hookimpl


@dataclass(frozen=True)
class Config:
    pass


def _module(probs_of_batch):
    import torch

    class Fixed(torch.nn.Module):  # defined inside fit: saved by value (cloudpickle)
        def forward(self, x):
            return probs_of_batch(x)

    return Fixed()


def _prior(data):
    import torch

    counts = torch.bincount(torch.from_numpy(data.train.labels), minlength=data.num_classes).double() + 1
    return (counts / counts.sum()).float()


def honest(data, config, ctx):
    prior = _prior(data)
    return Predictor(_module(lambda x: prior.expand(x.shape[0], -1).clone()))


def peeks_at_test(data, config, ctx):
    _ = data.test.labels  # selecting on the test split: forbidden
    return honest(data, config, ctx)


def peeks_quietly(data, config, ctx):
    try:
        len(data.test)
    except Exception:
        pass  # caught, and carried on: the trial must fail all the same
    return honest(data, config, ctx)


def _bad(kind):
    def fit(data, config, ctx):
        prior = _prior(data)

        def probs(x):
            p = prior.expand(x.shape[0], -1).clone()
            if kind == "nan":
                p[1] = float("nan")
            elif kind == "negative":
                p[0, 0], p[0, 1] = -0.25, p[0, 1] + 0.25
            else:
                p = p * 0.5
            return p

        return Predictor(_module(probs))

    return fit


def no_predictor(data, config, ctx):
    return "not a predictor"


@hookimpl
def register_methods(register):
    for name, fit in (("honest", honest), ("peeks-at-test", peeks_at_test), ("peeks-quietly", peeks_quietly),
                      ("nan-probs", _bad("nan")), ("negative-probs", _bad("negative")),
                      ("unnormalised", _bad("half")), ("no-predictor", no_predictor)):
        register(MethodSpec(name=name, description=f"contract test: {name}", config=Config, fit=fit,
                            uses_sampler=False))
