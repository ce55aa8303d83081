"""A pytest plugin (entry point ``pytest11``, loaded by pytest wherever harness is installed) that adds the
conformance suite's options: ``pytest --pyargs harness.conformance --plugin-module my_plugin`` loads a plugin
module and tests only what it registers; ``--plugin-name NAME`` does the same for an installed plugin. Without
these options it does nothing."""

from __future__ import annotations

import os
import sys

from harness.conformance import ENV_ONLY


def pytest_addoption(parser):
    group = parser.getgroup("harness conformance")
    group.addoption("--plugin-module", action="append", default=[], metavar="MODULE",
                    help="Load this module as a harness plugin and test what it registers (repeatable).")
    group.addoption("--plugin-name", action="append", default=[], metavar="NAME",
                    help="Test only what this installed plugin (entry-point name) registers (repeatable).")


def pytest_configure(config):
    modules = config.getoption("--plugin-module", default=[]) or []
    names = config.getoption("--plugin-name", default=[]) or []
    if modules:
        current = [p for p in os.environ.get("HARNESS_PLUGINS", "").split(",") if p.strip()]
        os.environ["HARNESS_PLUGINS"] = ",".join(dict.fromkeys([*current, *modules]))
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    if modules or names:
        os.environ[ENV_ONLY] = ",".join([*modules, *names])
