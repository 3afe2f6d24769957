"""Plugins: how a lab's protocol (task kinds, guards, flags, fingerprints, report lines) reaches
the engine without the engine naming any of it.

A plugin is a Python module that registers what it contributes when it is imported, through the
registries of the engine (nothing else is required of it)::

    from benchmark.plugins import register_flag, register_report_lines
    from benchmark.tasks import TaskKind, MetricRule, register_task
    from benchmark.guards import ProtocolGuard, register_guard, register_fingerprint, ...

The engine finds plugins, once per process, in three places (first seen first):

1. the ``benchmark.plugins`` entry-point group of every installed distribution, the way any
   installed lab's plugin is found (``[project.entry-points."benchmark.plugins"]`` in its
   ``pyproject.toml``: ``mylab = "mylab.bench_plugin"``);
2. ``$BENCH_PLUGINS``: module names separated by commas (a plugin that is not installed);
3. a suite's ``plugins: [module, ...]`` key (loaded when the suite is read).

Loading is lazy (the first task lookup, guard pass or report), idempotent (a module is imported
once; loading again is a no-op) and strict: a plugin that fails to import raises
:class:`PluginError`, one line naming the plugin, where it was named and the cause.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Iterable, Optional

from .errors import SuiteError

#: The entry-point group the engine reads plugins from.
ENTRY_POINT_GROUP = "benchmark.plugins"
#: Environment variable naming plugin modules that are not installed (comma-separated).
ENV_VAR = "BENCH_PLUGINS"


class PluginError(SuiteError):
    """A plugin could not be loaded (CLI exit code 2: the setup is wrong, not a result)."""


@dataclass(frozen=True)
class PluginSpec:
    """One plugin to load: the module (``pkg.mod`` or ``pkg.mod:attr``) and where it was named."""

    target: str
    origin: str


_loaded: dict[str, str] = {}   # target -> origin, in load order
_discovered = False
_lock = threading.RLock()   # one loader at a time; a plugin's own lookups re-enter


def entry_point_specs() -> list[PluginSpec]:
    """The installed plugins (entry-point group :data:`ENTRY_POINT_GROUP`), sorted by name."""
    from importlib.metadata import entry_points

    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    return [PluginSpec(ep.value, f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}") for ep in eps]


def env_specs(value: Optional[str] = None) -> list[PluginSpec]:
    """Plugins named in ``$BENCH_PLUGINS`` (or ``value``): comma-separated module names."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    return [PluginSpec(name.strip(), f"${ENV_VAR}") for name in value.split(",") if name.strip()]


def load_plugin(spec: PluginSpec) -> None:
    """Import one plugin (and call ``attr()`` for a ``module:attr`` target); a no-op if loaded."""
    if spec.target in _loaded:
        return
    module_name, _, attr = spec.target.partition(":")
    try:
        module = import_module(module_name)
        if attr:
            getattr(module, attr)()
    except Exception as exc:  # noqa: BLE001 - any failure is the plugin's, reported in one line
        cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise PluginError(f"plugin {spec.target!r} ({spec.origin}) failed to load: {cause}") from None
    _loaded[spec.target] = spec.origin


def load_plugins(modules: Iterable[str] = (), *, origin: str = "suite key plugins") -> list[str]:
    """Load the installed plugins and ``$BENCH_PLUGINS`` (first call only), then ``modules``.

    Returns the loaded targets in load order."""
    global _discovered
    with _lock:
        if not _discovered:
            _discovered = True
            for spec in (*entry_point_specs(), *env_specs()):
                load_plugin(spec)
        for name in modules:
            load_plugin(PluginSpec(name, origin))
        return list(_loaded)


def ensure_loaded() -> None:
    """Discover the installed and ``$BENCH_PLUGINS`` plugins if that has not happened yet."""
    if not _discovered:
        load_plugins()


def loaded_plugins() -> list[str]:
    return list(_loaded)


# --- report lines ---------------------------------------------------------------------------

#: ``fn(collected) -> [(label, text), ...]``: rows a plugin adds to a report's protocol table.
ReportLines = Callable[[Any], list[tuple[str, str]]]
_REPORT_LINES: list[ReportLines] = []


def register_report_lines(fn: ReportLines) -> ReportLines:
    """Add a hook that returns protocol-table rows ``(label, text)`` for a suite's collected
    results (:class:`benchmark.collect.Collected`). Registering the same function twice is a
    no-op."""
    if fn not in _REPORT_LINES:
        _REPORT_LINES.append(fn)
    return fn


def report_lines(collected: Any) -> list[tuple[str, str]]:
    """Every plugin's protocol-table rows for ``collected``, in registration order."""
    ensure_loaded()
    return [row for fn in _REPORT_LINES for row in fn(collected)]
