"""Which installed distribution ships this engine, read from the installed metadata (the engine
names no project): its console scripts (``prog`` in messages) and ``pip install`` hints."""
from __future__ import annotations

import functools

#: The console-script target of the engine's command line.
ENGINE_MAIN = "benchmark.cli:main"
#: What messages say when the engine is not installed as a distribution.
FALLBACK_PROG = "python -m benchmark"


@functools.cache
def _engine_scripts() -> tuple:
    from importlib.metadata import entry_points

    return tuple(ep for ep in entry_points(group="console_scripts") if ep.value == ENGINE_MAIN)


def script_names() -> tuple[str, ...]:
    """Names of the installed console scripts that run the engine's CLI (``()`` if none)."""
    return tuple(ep.name for ep in _engine_scripts())


def distribution_name() -> str | None:
    """The distribution whose console script runs the engine, None when it is not installed."""
    for ep in _engine_scripts():
        dist = getattr(ep, "dist", None)
        if dist is not None:
            return dist.metadata["Name"]
    return None


def install_hint(extra: str) -> str:
    """``pip install '<distribution>[<extra>]'`` (``<distribution>`` when it is not installed)."""
    return f"pip install '{distribution_name() or '<distribution>'}[{extra}]'"
