"""harness: a plugin-architecture benchmark harness for medical image classification.

The public surface for plugin authors is re-exported here; importing it does not import torch.
"""

from harness.contract.hookspecs import hookimpl
from harness.contract.result import TrialResult
from harness.contract.specs import (
    DatasetOptions,
    DatasetRequest,
    DatasetSpec,
    DataSplits,
    MethodSpec,
    MetricSpec,
    Predictor,
    Sampler,
    SamplerSpec,
    Split,
    TrialContext,
)
from harness.errors import HarnessError

__version__ = "0.1.0"

__all__ = [
    "DataSplits",
    "DatasetOptions",
    "DatasetRequest",
    "DatasetSpec",
    "HarnessError",
    "MethodSpec",
    "MetricSpec",
    "Predictor",
    "Sampler",
    "SamplerSpec",
    "Split",
    "TrialContext",
    "TrialResult",
    "__version__",
    "hookimpl",
]
