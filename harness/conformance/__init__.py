"""The conformance suite: every registered method, dataset, sampler and metric through its contract, at the
smallest size, with real assertions and a time limit per case (as timm tests every registered model).

A plugin author runs it against their own plugin with one command::

    harness --plugin my_plugin conformance          # a module under development: only what it registers
    harness conformance --only example              # an installed plugin, by its entry-point name
    harness conformance                             # every registered plugin (the built-ins take minutes)

or with pytest directly (the same tests; extra pytest arguments as usual)::

    pytest --pyargs harness.conformance --plugin-module my_plugin

What it asserts, per registered name (``test_contract.py``):

- no plugin failed to load, and registering imports no torch;
- a dataset has at least two classes, its metadata, a clear error for an empty data folder, and (where it
  can be loaded: generated, or its files under ``HARNESS_TEST_DATA`` / ``HARNESS_DATA_DIR``) aligned labels
  in range, the requested size and channels, a non-empty validation split and splits that share no image;
- a method has its profiles and a valid search space, and one ``smoke`` trial on tiny synthetic data is ``ok``:
  it never read the test split, its probabilities are finite, non-negative and sum to 1 per row, every headline
  metric is there, and its kept model loads back and predicts valid probabilities;
- a sampler returns in-range integer indices, the same ones for the same generator, for skewed and tiny label
  sets;
- a metric is finite and deterministic, and ranks perfect predictions at least as well as random ones (the
  best value when it is bounded: 1, or 0 for lower-is-better);
- a ``trial_finished`` observer accepts an ``ok`` and a ``failed`` result;
- and every hook in :mod:`harness.contract.hookspecs` has a test here (a new hook without one fails).

Time limits: ``HARNESS_CONFORMANCE_TIMEOUT`` seconds per method trial (default 300), a tenth of it for the
other cases.
"""

from __future__ import annotations

import os
import sys

ENV_ONLY = "HARNESS_CONFORMANCE_ONLY"  # comma-separated plugin names: test only what these register
ENV_TIMEOUT = "HARNESS_CONFORMANCE_TIMEOUT"


def run(plugins: tuple[str, ...] = (), only: tuple[str, ...] = (), pytest_args: tuple[str, ...] = (),
        blocked: tuple[str, ...] = ()) -> int:
    """Run the suite with pytest (``harness conformance``); returns pytest's exit status. ``plugins``: modules
    to load as plugins (and, unless ``only`` is given, the ones tested); ``only``: plugin names to test;
    ``blocked``: plugin names not to load."""
    import pytest

    for var, names in (("HARNESS_PLUGINS", plugins), ("HARNESS_BLOCK_PLUGINS", blocked)):
        current = [p for p in os.environ.get(var, "").split(",") if p.strip()]
        if names:
            os.environ[var] = ",".join(dict.fromkeys([*current, *names]))
    selected = only or plugins
    if selected:
        os.environ[ENV_ONLY] = ",".join(selected)
    if os.getcwd() not in sys.path:  # a plugin module in the working directory, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    return int(pytest.main(["--pyargs", "harness.conformance", "-p", "no:cacheprovider", *pytest_args]))
