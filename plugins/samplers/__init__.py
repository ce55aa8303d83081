"""Built-in training-batch samplers (an axis of the experiment matrix): ``uniform``, ``balanced``, ``sqrt``
and ``progressive``. The implementations are in :mod:`plugins.samplers.sampling`."""

from __future__ import annotations

from harness import SamplerSpec, hookimpl
from plugins.samplers.sampling import balanced, progressive, sqrt, uniform


@hookimpl
def register_samplers(register):
    register(SamplerSpec("uniform", "Every image once per epoch, shuffled (instance-balanced)", uniform,
                         "standard"))
    register(SamplerSpec("balanced", "Class-balanced: every class drawn equally often", balanced,
                         "Kang et al. 2020, class-balanced sampling"))
    register(SamplerSpec("sqrt", "Square-root sampling: class c drawn with probability ∝ sqrt(n_c)", sqrt,
                         "Mahajan et al., ECCV 2018 (Sqrt-RS in IOIS)"))
    register(SamplerSpec("progressive", "Progressively balanced: instance- to class-balanced over the epochs",
                         progressive, "Kang et al., ICLR 2020 (PG-RS in IOIS)"))
