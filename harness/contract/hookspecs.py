"""The harness plugin contract: every hook a plugin may implement, in one module.

A plugin is a Python module (or object) with functions decorated by ``harness.hookimpl`` whose names
match the hooks below. Plugins are found through the ``harness`` entry-point group (built-in and
third-party plugins alike), through ``--plugin some.module`` on the command line, or through the
``HARNESS_PLUGINS`` environment variable (comma-separated module paths). ``HARNESS_BLOCK_PLUGINS``
(or ``--block-plugin NAME``) stops a plugin from loading.

Hooks are called with keyword arguments, so an implementation may accept any subset of a hook's
parameters, and new parameters can be added later without breaking existing plugins.

Registration must be cheap: a ``register_*`` hook builds small frozen spec objects and must not import
torch or load data. Heavy work starts inside the factories the specs point to (``MethodSpec.fit``,
``DatasetSpec.load``), which run only when a trial needs them.

Minimal example::

    from harness import hookimpl, MethodSpec

    @hookimpl
    def register_methods(register):
        register(MethodSpec(name="my-method", description="...", paper="...",
                            config=MyConfig, fit="my_package.train:fit"))
"""

from __future__ import annotations

import pluggy

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets(register):
    """Register the datasets this plugin provides.

    Called once, when the plugin manager builds its registry (on the first ``harness list`` or
    ``harness run`` of a process), before any data is loaded.

    :param Callable[[DatasetSpec], None] register: call ``register(spec)`` with a
        :class:`harness.contract.specs.DatasetSpec` for each dataset. Two specs with the same name (from this or another plugin) are an error that names
        both plugins.
    :return: nothing; the return value is ignored.
    """


@hookspec
def register_methods(register):
    """Register the classification methods this plugin provides.

    Called once, when the registry is built. ``spec.fit`` (a callable or a ``"module:function"``
    string) is only resolved when a trial of the method runs, so the module implementing the
    hook should not import torch at import time.

    :param Callable[[MethodSpec], None] register: call ``register(spec)`` with a
        :class:`harness.contract.specs.MethodSpec` for each method.
    :return: nothing.
    """


@hookspec
def register_samplers(register):
    """Register the training-batch samplers this plugin provides.

    Called once, when the registry is built. A sampler is an axis of the experiment matrix
    (``--samplers``): a method that trains on batches asks ``ctx.make_sampler(labels)`` for the
    order of each epoch.

    :param Callable[[SamplerSpec], None] register: call ``register(spec)`` with a
        :class:`harness.contract.specs.SamplerSpec` (whose ``build`` returns a
        :class:`harness.contract.specs.Sampler`).
    :return: nothing.
    """


@hookspec
def register_metrics(register):
    """Register the evaluation metrics this plugin provides.

    Called once, when the registry is built. Every registered metric is computed once per trial on
    the full test predictions (never averaged over batches) and stored under its name in
    ``result.json``.

    :param Callable[[MetricSpec], None] register: call ``register(spec)`` with a
        :class:`harness.contract.specs.MetricSpec`.
    :return: nothing.
    """


@hookspec
def trial_finished(trial, result, trial_dir):
    """Observe a finished trial (an ``ok`` or a ``failed`` one).

    Called by the runner in the process that ran the trial, right after ``result.json`` has been
    written. Exceptions raised here are printed and recorded in the result's ``observer_errors``
    (``result.json`` is written again with them); they do not change the trial's status.

    :param Trial trial: the :class:`harness.run.trial.Trial` that ran.
    :param TrialResult result: the :class:`harness.contract.result.TrialResult` written to ``result.json``
        (``result.status``, ``result.metrics``, ...; item access ``result["metrics"]`` also works, for
        observers written when the record was a dict). Read it; do not change it.
    :param Path trial_dir: the trial's folder (``trial.json``, ``result.json``, ``predictions.parquet``, the
        learning curve ``curve.json``, ``artefacts/``, ``model/``: whichever the trial wrote). Read it; do not
        change it.
    :return: nothing.
    """


@hookspec
def trial_reported(trial, record, trial_dir, metric_names):
    """Observe one learning-curve record while its trial runs (each ``ctx.report`` of the method: one per epoch
    for the methods that train in epochs), so a tracker can show the curve live.

    Called by the runner in the process that runs the trial, after the method's own reporter. Exceptions
    raised here are printed once per plugin and recorded in the result's ``observer_errors``; they never stop
    or fail the trial.

    :param Trial trial: the :class:`harness.run.trial.Trial` running.
    :param dict record: the values reported (``epoch``, ``loss``, ``val_macro_f1``, ``lr`` ...). Read it; do not
        change it.
    :param Path trial_dir: the trial's folder (``trial.json`` is there; the rest comes as the trial ends).
    :param tuple metric_names: the test metrics the trial's result will have (the registered metrics), so an
        observer can keep a curve key that has a test metric's name apart from it.
    :return: nothing.
    """

