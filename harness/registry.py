"""Plugin discovery and the registry of datasets, methods, samplers and metrics.

Plugins come from three places, in this order:

1. the ``harness`` entry-point group (built-in plugins are registered there too, exactly as a
   third-party package's would be);
2. ``HARNESS_PLUGINS``: comma-separated module paths, for a plugin under development;
3. ``--plugin some.module`` on the command line.

``HARNESS_BLOCK_PLUGINS`` (comma-separated names) or ``--block-plugin NAME`` stops a plugin from
loading. A plugin that fails to import (or whose hook raises, or registers a spec of the wrong type or a name
that cannot be a folder name) is reported by name with its error and the rest still load. Two plugins
registering the same name is a *conflict*: both stay listed (``harness plugins``, ``harness list``) so the user
can see them and block one, and using the name (a metric's: running at all, since every metric is computed) is
an error naming both plugins (:meth:`Registry.get`, :meth:`Registry.check_conflicts`).
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from harness.contract import hookspecs
from harness.contract.specs import DatasetSpec, MethodSpec, MetricSpec, SamplerSpec, check_name
from harness.errors import HarnessError

ENTRY_POINT_GROUP = "harness"
ENV_PLUGINS = "HARNESS_PLUGINS"
ENV_BLOCK = "HARNESS_BLOCK_PLUGINS"

KINDS = {
    "datasets": ("register_datasets", DatasetSpec),
    "methods": ("register_methods", MethodSpec),
    "samplers": ("register_samplers", SamplerSpec),
    "metrics": ("register_metrics", MetricSpec),
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    module: str
    hooks: tuple[str, ...]
    source: str  # "entry point", "HARNESS_PLUGINS", "--plugin" or "object"


@dataclass(frozen=True)
class PluginFailure:
    name: str
    error: str
    detail: str = ""


@dataclass
class Registry:
    """What the loaded plugins registered, and which plugin registered each name."""

    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    samplers: dict[str, SamplerSpec] = field(default_factory=dict)
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    provider: dict[tuple[str, str], str] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    # (kind, name) registered by more than one plugin -> [(plugin, spec), ...] in registration order; the
    # table keeps the first, and neither is used until the user blocks one
    conflicts: dict[tuple[str, str], list[tuple[str, Any]]] = field(default_factory=dict)

    def table(self, kind: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise HarnessError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return getattr(self, kind)

    def entries(self, kind: str) -> list[tuple[str, Any, str, bool]]:
        """``(name, spec, plugin, conflicting)`` for every registration of ``kind``, conflicting ones included
        (each of the plugins that registered the name), sorted by name."""
        out = []
        for name, spec in self.table(kind).items():
            claims = self.conflicts.get((kind, name))
            if claims:
                out.extend((name, other, plugin, True) for plugin, other in claims)
            else:
                out.append((name, spec, self.provider[(kind, name)], False))
        return sorted(out, key=lambda entry: entry[0])

    def conflict_error(self, kind: str, name: str) -> HarnessError:
        plugins = sorted(plugin for plugin, _ in self.conflicts[(kind, name)])
        return HarnessError(
            f"{kind[:-1]} name {name!r} is registered by {len(plugins)} plugins: "
            f"{' and '.join(repr(p) for p in plugins)}. Block all but one of them "
            f"(--block-plugin NAME or {ENV_BLOCK}=NAME); `harness plugins` lists them."
        )

    def check_conflicts(self, kind: str, names=None) -> None:
        """Raise the error of the first conflict (two plugins registering one name) among ``names`` of ``kind``
        (None: every name of that kind, as for metrics, which are all computed)."""
        for conflict_kind, name in sorted(self.conflicts):
            if conflict_kind == kind and (names is None or name in names):
                raise self.conflict_error(kind, name)

    def get(self, kind: str, name: str):
        table = self.table(kind)
        if (kind, name) in self.conflicts:
            raise self.conflict_error(kind, name)
        if name not in table:
            available = ", ".join(sorted(table)) or "(none registered)"
            singular = kind[:-1]
            raise HarnessError(
                f"unknown {singular} {name!r}. Available {kind}: {available}. "
                f"Run `harness list {kind}` to see them, or install the plugin that provides it."
            )
        return table[name]


def _split_names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _version_of(module: Any, dist_version: str | None) -> str:
    if dist_version:
        return dist_version
    return str(getattr(module, "__version__", "unknown"))


class PluginManager:
    """Loads plugins and builds the :class:`Registry`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []

    # -- loading -------------------------------------------------------------------------------

    def register_object(self, plugin: Any, name: str, *, version: str | None = None, source: str = "object"):
        """Register an already-imported plugin module or object under ``name``."""
        if self.pm.has_plugin(name) or self.pm.is_blocked(name):
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a malformed hookimpl, for example
            self.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos.append(PluginInfo(name, _version_of(plugin, version), module, hooks, source))

    def load_module(self, module_path: str, *, name: str | None = None, source: str = "--plugin"):
        name = name or module_path
        if self.pm.is_blocked(name):
            return
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            self.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return
        self.register_object(module, name, source=source)

    def load_entry_points(self) -> None:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self.failures.append(
                    PluginFailure(ep.name, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
                continue
            version = ep.dist.version if getattr(ep, "dist", None) else None
            self.register_object(plugin, ep.name, version=version, source="entry point")

    def block(self, names: Iterable[str]) -> None:
        for name in names:
            self.pm.set_blocked(name)

    # -- the registry --------------------------------------------------------------------------

    def build_registry(self) -> Registry:
        registry = Registry(plugins=list(self.infos), failures=list(self.failures))
        for kind, (hook_name, spec_type) in KINDS.items():
            table = registry.table(kind)
            hook = getattr(self.pm.hook, hook_name)
            for impl in reversed(hook.get_hookimpls()):  # registration order
                plugin_name = impl.plugin_name

                def register(spec, _plugin=plugin_name, _kind=kind, _type=spec_type, _table=table, _hook=hook_name):
                    if not isinstance(spec, _type):
                        registry.failures.append(PluginFailure(
                            _plugin, f"registered {type(spec).__name__} in {_hook}; expected a {_type.__name__} "
                                     f"(not registered)"))
                        return
                    try:  # names become folder names in the runs folder (trial keys)
                        check_name(spec.name, f"{_kind[:-1]} name")
                    except HarnessError as exc:
                        registry.failures.append(PluginFailure(_plugin, f"{exc} (not registered)"))
                        return
                    key = (_kind, spec.name)
                    if spec.name in _table:
                        claims = registry.conflicts.setdefault(key, [(registry.provider[key], _table[spec.name])])
                        claims.append((_plugin, spec))
                        return
                    _table[spec.name] = spec
                    registry.provider[key] = _plugin

                kwargs = {"register": register}
                try:
                    impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                except Exception as exc:
                    registry.failures.append(
                        PluginFailure(plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}",
                                      traceback.format_exc())
                    )
        return registry

    def notify_trial_finished(self, trial: Any, result: Any, trial_dir: Any = None) -> list[str]:
        """Call ``trial_finished`` on every plugin; return the errors (which never fail the trial)."""
        return [error for _, error in self._notify("trial_finished", trial=trial, result=result,
                                                   trial_dir=trial_dir)]

    def notify_trial_reported(self, trial: Any, record: dict, trial_dir: Any = None,
                              metric_names: tuple[str, ...] = (), skip=()) -> list[tuple[str, str]]:
        """Call ``trial_reported`` on every plugin not in ``skip``; return ``(plugin, error)`` for those that
        raised (which never fail the trial)."""
        return self._notify("trial_reported", skip, trial=trial, record=record, trial_dir=trial_dir,
                            metric_names=metric_names)

    def _notify(self, hook: str, skip=(), **kwargs: Any) -> list[tuple[str, str]]:
        errors = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin_name in skip:
                continue
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:
                errors.append((impl.plugin_name, f"plugin {impl.plugin_name!r} {hook}: {type(exc).__name__}: {exc}"))
        return errors


def load_plugins(
    extra_modules: Iterable[str] = (),
    blocked: Iterable[str] = (),
    *,
    entry_points_enabled: bool = True,
    objects: Iterable[tuple[str, Any]] = (),
    honour_env_block: bool = True,
) -> PluginManager:
    """A plugin manager with every plugin loaded (entry points, HARNESS_PLUGINS, ``extra_modules``) except the
    ``blocked`` ones and, unless ``honour_env_block`` is False, those named in HARNESS_BLOCK_PLUGINS."""
    manager = PluginManager()
    manager.block([*(_split_names(os.environ.get(ENV_BLOCK)) if honour_env_block else []), *blocked])
    if entry_points_enabled:
        manager.load_entry_points()
    for module_path in _split_names(os.environ.get(ENV_PLUGINS)):
        manager.load_module(module_path, source=ENV_PLUGINS)
    for module_path in extra_modules:
        manager.load_module(module_path, source="--plugin")
    for name, obj in objects:
        manager.register_object(obj, name)
    return manager


def build_registry(extra_modules: Iterable[str] = (), blocked: Iterable[str] = ()) -> tuple[PluginManager, Registry]:
    manager = load_plugins(extra_modules, blocked)
    return manager, manager.build_registry()
